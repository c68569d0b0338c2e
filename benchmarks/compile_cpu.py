"""Does ``--compile`` (torch.compile) help on this machine? Eager against compiled
training steps of the study's MLPs (width 64, batch norm, batch 128, Adam, additive skips),
with the loop engine (one seed) and the batched engine (``--seeds`` seeds as one vmapped
computation), on MNIST-1D cut to a multiple of the batch (so that every step has one shape
and nothing recompiles for a smaller last batch).

Per row: the compile time the engine reports (``RunResult.compile_seconds``: the first
step's wall time minus the median of the next steps'), and seed-steps per second of the
steady state: the run's training time (the engine's own clock, evaluations excluded) less
that compile time. Compiled and eager alternate per repeat; medians. The inductor cache
goes to a fresh folder per process (``TORCHINDUCTOR_CACHE_DIR``), so the first compile of a
model is cold; the loop engine's later seeds, and repeats, reuse what was compiled.

    OMP_NUM_THREADS=1 python benchmarks/compile_cpu.py [--depths 8,50] [--seeds 8] [--epochs 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="skiplab-inductor-"))

import torch  # noqa: E402

from skiplab.datasets import load_mnist1d  # noqa: E402
from skiplab.run.batched import train_seeds  # noqa: E402
from skiplab.run.config import RunSpec, TrainConfig  # noqa: E402
from skiplab.study import StudyPlan  # noqa: E402

BATCH = 128


def measure(runs: list[RunSpec], data) -> tuple[float, float | None, str]:
    """(steady seed-steps/s, compile seconds of the first run or None, trained_by)."""
    results = [r for _, r in train_seeds(runs, data)]
    assert all(r.status == "complete" for r in results), [r.message for r in results]
    r0 = results[0]
    seconds = [BATCH * r.steps / r.tokens_per_second for r in results]  # each seed's training time
    if r0.trained_by.startswith("batched"):
        train, compiled = seconds[0] * len(results), r0.compile_seconds or 0.0  # the group's time, charged once
        return len(results) * r0.steps / (train - compiled), r0.compile_seconds, r0.trained_by
    train = sum(seconds) - sum(r.compile_seconds or 0.0 for r in results)
    return sum(r.steps for r in results) / train, r0.compile_seconds, r0.trained_by


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default="8,50")
    p.add_argument("--seeds", type=int, default=8, help="seeds of the batched rows (default: %(default)s)")
    p.add_argument("--epochs", type=float, default=1.0, help="training per measurement (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist1d()
    n = len(data.y_train) // BATCH * BATCH
    data = dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
    mlp = StudyPlan().model.replace(input_shape=data.input_shape, classes=data.classes)
    print(f"torch {torch.__version__}, {args.threads} threads, {n} training samples ({n // BATCH} steps per epoch); "
          f"load average before {os.getloadavg()[0]:.2f}")
    print(f"{'model':<14} {'engine':<12} {'eager s-steps/s':>15} {'compiled':>9} {'ratio':>6} {'compile s':>10}  trained_by")
    for depth in map(int, args.depths.split(",")):
        spec = mlp.replace(depth=depth)
        for engine, seeds in (("loop", 1), ("batched", args.seeds)):
            rows: dict[bool, list] = {False: [], True: []}
            for _ in range(args.repeats):
                for compiled in (False, True):
                    cfg = TrainConfig(epochs=args.epochs, evals=1, batch_size=BATCH, engine=engine, compile=compiled)
                    rows[compiled].append(measure([RunSpec(spec, cfg, seed=s) for s in range(seeds)], data))
            eager = statistics.median(r[0] for r in rows[False])
            comp = statistics.median(r[0] for r in rows[True])
            first_compile = rows[True][0][1]  # the cold one
            print(f"{'mlp depth ' + str(depth):<14} {f'{engine} x{seeds}':<12} {eager:>15.0f} {comp:>9.0f} "
                  f"{comp / eager:>6.2f} {first_compile:>10.1f}  {rows[True][0][2]}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
