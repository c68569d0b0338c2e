"""Test-wide settings."""

import torch

# The models under test are tiny: one intra-op thread is faster than two, and keeps the
# suite's speed independent of what else runs on this 2-core machine.
torch.set_num_threads(1)
