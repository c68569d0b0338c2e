"""Test-wide settings."""

import os

import pytest
import torch

from skiplab.datasets import Dataset

# The models under test are tiny: one intra-op thread is faster than two, and keeps the
# suite's speed independent of what else runs on this 2-core machine. SKIPLAB_TEST_THREADS
# sets another count: .ci/run's "another CPU" pass uses 2, since the thread count changes
# the order of float reductions and no test may depend on it.
torch.set_num_threads(int(os.environ.get("SKIPLAB_TEST_THREADS", "1")))


def pytest_report_header(config):
    """The numeric environment, so a failure on another machine can be told apart: the
    kernels torch dispatches to (ATEN_CPU_CAPABILITY lowers them), MKL's code path
    (MKL_CBWR), the thread count."""
    return (f"skiplab numerics: torch {torch.__version__}, CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
            f"MKL_CBWR={os.environ.get('MKL_CBWR', '-')}, {torch.get_num_threads()} torch thread(s)")


@pytest.fixture(scope="module")
def tiny():
    """A separable toy problem: the class is the sign pattern of two features (test_train,
    test_engine; test_gradients has its own)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 8, generator=g)
    y = ((x[:, 0, 0] > 0).long() + 2 * (x[:, 0, 1] > 0).long())
    return Dataset("tiny", x[:200], y[:200], x[200:], y[200:], classes=4)
