"""Is bf16 autocast worth offering on a CPU? fp32 against bf16 autocast (the path
``--precision bf16`` runs on CUDA, forced on the CPU with ``skiplab.run.config._BF16_ON_CPU``),
seed-steps per second of training, for the study's MLPs (width 64, batch norm, batch 128,
Adam) at depths 8 and 50: the loop engine with one seed, and the batched engine with 8
seeds. One epoch of MNIST-1D per measurement, fp32 and bf16 alternately, median of
``--repeats``.

    OMP_NUM_THREADS=1 python benchmarks/bf16_cpu.py [--depths 8,50] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

import skiplab.run.config
from skiplab.datasets import load_mnist1d
from skiplab.run.batched import train_seeds
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.study import StudyPlan


def rate(runs: list[RunSpec], data) -> tuple[float, str]:
    """(seed-steps/s, trained_by), from the engines' own clock (evaluations excluded)."""
    results = [r for _, r in train_seeds(runs, data)]
    assert all(r.status == "complete" for r in results), [r.message for r in results]
    b = runs[0].train.batch_size
    if results[0].trained_by.startswith("batched"):  # a batched seed reports the group's rate
        return results[0].tokens_per_second / b, results[0].trained_by
    return len(runs) / sum(b / r.tokens_per_second for r in results), results[0].trained_by


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default="8,50")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    skiplab.run.config._BF16_ON_CPU = True
    data = load_mnist1d()
    mlp = StudyPlan().model.replace(input_shape=data.input_shape, classes=data.classes)
    print(f"torch {torch.__version__}, 1 thread; load average before {os.getloadavg()[0]:.2f}")
    for depth in map(int, args.depths.split(",")):
        for engine, seeds in (("loop", 1), ("batched", 8)):
            spec = mlp.replace(depth=depth)
            rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for _ in range(args.repeats):
                for precision in rates:
                    cfg = TrainConfig(epochs=1, evals=1, batch_size=128, engine=engine, precision=precision)
                    r, trained_by = rate([RunSpec(spec, cfg, seed=s) for s in range(seeds)], data)
                    rates[precision].append(r)
            fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
            print(f"mlp depth {depth:<3} {engine:<8} x{seeds}: fp32 {fp32:5.0f}, bf16 {bf16:5.0f} "
                  f"seed-steps/s, bf16 / fp32 {bf16 / fp32:.2f} ({trained_by})", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
