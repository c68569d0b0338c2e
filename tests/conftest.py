"""Test-wide settings."""

import pytest
import torch

from skiplab.datasets import Dataset

# The models under test are tiny: one intra-op thread is faster than two, and keeps the
# suite's speed independent of what else runs on this 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    """A separable toy problem: the class is the sign pattern of two features (test_train,
    test_engine; test_gradients has its own)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 8, generator=g)
    y = ((x[:, 0, 0] > 0).long() + 2 * (x[:, 0, 1] > 0).long())
    return Dataset("tiny", x[:200], y[:200], x[200:], y[200:], classes=4)
