"""How long ``skiplab gradients`` takes at the size the issue names.

Setup: MLP, depth 100, width 100, plain + add + dense, PyTorch's default init, the default
measurement (3 seeds x 2 batches of 128 from MNIST-1D's train set), at init only. Dense
dominates: at depth 100 its blocks hold 50.5M weights (block l sees 100 l inputs), so one
forward + backward of a batch costs ~100x plain's.

Run: ``python benchmarks/gradients_timing.py [repeats]``; prints the wall time of each
strategy and the total, for each repeat, plus the median total. The budget is 20 s on a
2-core CPU. Timings on a machine shared with other jobs vary several-fold; take the median.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from skiplab import ModelSpec
from skiplab.datasets import load_mnist1d
from skiplab.gradients import GradientConfig, measure_gradients

SKIPS = ("plain", "add", "dense")


def main(repeats: int = 3) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    totals = []
    for r in range(repeats):
        start = time.perf_counter()
        data = load_mnist1d()  # from the cache after the first run
        parts = [f"data {time.perf_counter() - start:.2f} s"]
        for skip in SKIPS:
            t = time.perf_counter()
            measure_gradients(ModelSpec(model="mlp", depth=100, width=100, skip=skip), data, GradientConfig())
            parts.append(f"{skip} {time.perf_counter() - t:.2f} s")
        totals.append(time.perf_counter() - start)
        print(f"run {r + 1}: " + ", ".join(parts) + f"; total {totals[-1]:.2f} s")
    print(f"median total over {repeats} runs: {statistics.median(totals):.2f} s (budget 20 s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
