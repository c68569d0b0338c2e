"""What skiplab's training harness costs: steps per second of ``skiplab.run.loop.train_run``
against a plain hand-written PyTorch loop, same model, data, optimiser (fused Adam, which
skiplab steps over its parameters as one flat tensor: ``skiplab.run.optim.FlatParameters``),
schedule and batch order, timed alternately in one process. Target: the harness costs at most 5%
(ratio >= 0.95).

The harness does more than the bare loop, and all of it is timed: a finiteness check of
every loss (divergence detection), running train loss/accuracy, ``evals`` test-set
evaluations for the curves, and the final train/test evaluation.

    python benchmarks/train_loop_overhead.py [--epochs 30] [--repeats 2] [--model cnn1d]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from skiplab import ModelSpec, build_model
from skiplab.datasets import load_mnist1d
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.loop import train_run


def hand_loop(spec: RunSpec, data) -> int:
    """The loop a user would write: no logging, no checks, no evaluation."""
    cfg = spec.train
    model = build_model(spec.model, seed=spec.seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    n = len(data.y_train)
    total = math.ceil(n / cfg.batch_size) * cfg.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    g = torch.Generator().manual_seed(spec.seed)
    steps = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cnn1d", choices=("mlp", "cnn1d"))
    p.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    data = load_mnist1d()
    spec = RunSpec(ModelSpec(model=args.model, skip="add", input_shape=data.input_shape),
                   TrainConfig(epochs=args.epochs), seed=0)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"model: {args.model}, depth {spec.model.depth}, width {spec.model.width}; {args.epochs} epochs of "
          f"MNIST-1D (4,000 samples, batch {spec.train.batch_size}); {args.repeats} alternating repeats")
    hand, harness = [], []
    for r in range(args.repeats):
        start = time.perf_counter()
        steps = hand_loop(spec, data)
        hand.append(steps / (time.perf_counter() - start))
        start = time.perf_counter()
        result = train_run(spec, data)
        harness.append(result.steps / (time.perf_counter() - start))
        print(f"repeat {r + 1}: hand loop {hand[-1]:.1f} steps/s, skiplab {harness[-1]:.1f} steps/s "
              f"(test accuracy {100 * result.test_accuracy:.1f}%)")
    ratio = statistics.median(harness) / statistics.median(hand)
    print(f"steps/s ratio skiplab / hand loop (medians): {ratio:.3f}  -> harness cost {100 * (1 - ratio):+.1f}% "
          f"({'within' if ratio >= 0.95 else 'OVER'} the 5% target)")


if __name__ == "__main__":
    main()
