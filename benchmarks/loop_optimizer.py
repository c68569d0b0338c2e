"""The loop engine's optimiser: fused (over one flat tensor) against per-tensor Adam.

Issue 26: per-tensor Adam (PyTorch's default on a CPU, a dozen small ops per parameter
tensor) was 40% of the loop's step on the study's depth-50 MLP. The loop now builds its
optimiser with ``skiplab.run.optim.make_optimizer``'s default, fused where torch has it, over
the parameters as views into one flat tensor (``skiplab.run.optim.FlatParameters``). This
trains the study's model (``skiplab.study.StudyPlan``: MLP, additive skips, width 64, batch
norm, batch 128, Adam at lr 3e-3, cosine schedule; depth 50) with ``skiplab.run.loop.train_run``
(the loop engine), identical runs but for the optimiser (``skiplab.run.loop._OPTIMIZER_IMPLEMENTATION``
and ``_FLAT_PARAMETERS``):

* ``fused+flat``: the default: ``fused=True`` over one flat tensor;
* ``fused``: ``fused=True`` over the 206 parameter tensors (one fused kernel per tensor);
* ``foreach``: multi-tensor (``foreach=True``) over them (on a CPU torch runs its
  per-tensor kernels from C++, so the arithmetic is the for-loop's, bit for bit);
* ``per-tensor``: ``foreach=False`` over them: the loop before issue 26.

Repeats are interleaved (the order rotates each repeat, so drift in the machine's load
falls on all of them) and each run's training steps per second are taken from its own
``tokens_per_second`` (evaluations excluded). Prints each repeat, the medians, and the
ratios to per-tensor: of the medians, and the median of each repeat's own ratio (its runs
are adjacent in time, so a shared machine's load changes less within a repeat than across
them; the target is checked on this one); and the CPU. Target: the default >= 1.4x
per-tensor.

    python benchmarks/loop_optimizer.py [--depth 50] [--epochs 1] [--repeats 7] [--threads 1]
    python benchmarks/loop_optimizer.py --quick     # a tiny form: checks that it runs, not its speed
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
from pathlib import Path

import torch

import skiplab.run.loop
from skiplab import build_model
from skiplab.datasets import load_mnist1d
from skiplab.run.config import RunSpec
from skiplab.run.loop import train_run
from skiplab.study import StudyPlan

# name: (make_optimizer's implementation, parameters as one flat tensor)
WAYS = {"fused+flat": ("fused", True), "fused": ("fused", False), "foreach": ("foreach", False),
        "per-tensor": ("per-tensor", False)}
DEFAULT, BASELINE = "fused+flat", "per-tensor"
TARGET = 1.4


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo, as ``lscpu`` shows it), else platform's word."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def steps_per_second(spec: RunSpec, data, way: str) -> tuple[float, float]:
    """One loop-engine run with the optimiser ``way``: (training steps per second, test loss)."""
    saved = skiplab.run.loop._OPTIMIZER_IMPLEMENTATION, skiplab.run.loop._FLAT_PARAMETERS
    skiplab.run.loop._OPTIMIZER_IMPLEMENTATION, skiplab.run.loop._FLAT_PARAMETERS = WAYS[way]
    try:
        r = train_run(spec, data)
    finally:
        skiplab.run.loop._OPTIMIZER_IMPLEMENTATION, skiplab.run.loop._FLAT_PARAMETERS = saved
    if r.status != "complete" or not r.tokens_per_second:
        raise SystemExit(f"{way}: the run did not complete ({r.status}: {r.message})")
    samples = spec.train.epochs * len(data.y_train)  # whole epochs: every sample once per epoch
    return r.tokens_per_second * r.steps / samples, r.test_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--epochs", type=int, default=1, help="per run (MNIST-1D: 32 steps each; default %(default)s)")
    p.add_argument("--repeats", type=int, default=7,
                   help="interleaved repeats, after an untimed warm-up run of each way; medians (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="depth 2, 1 epoch of 256 samples, 1 repeat")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist1d()
    if args.quick:
        args.depth, args.epochs, args.repeats = 2, 1, 1
        data = dataclasses.replace(data, x_train=data.x_train[:256], y_train=data.y_train[:256],
                                   x_test=data.x_test[:128], y_test=data.y_test[:128])
    plan = StudyPlan()
    model = plan.model.replace(skip="add", depth=args.depth, input_shape=data.input_shape, classes=data.classes)
    cfg = dataclasses.replace(plan.train, epochs=args.epochs, engine="loop", evals=1)
    spec = RunSpec(model, cfg, seed=0)
    print(f"cpu: {cpu_name()}; {torch.get_num_threads()} torch thread(s); torch {torch.__version__}")
    print(f"model: the study's MLP (add, width {model.width}, norm {model.norm}), depth {model.depth}, "
          f"{len(list(build_model(model).parameters()))} parameter tensors; batch {cfg.batch_size}, "
          f"{cfg.optimizer}; {args.epochs} epoch(s) of {len(data.y_train)} samples per run; {args.repeats} "
          f"interleaved repeat(s)")
    warm = dataclasses.replace(spec, train=dataclasses.replace(cfg, epochs=0.1))
    for way in WAYS:  # untimed: the process's first run pays one-time set-up (lazy imports, allocator)
        skiplab.run.loop._OPTIMIZER_IMPLEMENTATION, skiplab.run.loop._FLAT_PARAMETERS = WAYS[way]
        train_run(warm, data)
    skiplab.run.loop._OPTIMIZER_IMPLEMENTATION, skiplab.run.loop._FLAT_PARAMETERS = WAYS[DEFAULT]
    rates: dict[str, list[float]] = {w: [] for w in WAYS}
    for r in range(args.repeats):
        names = list(WAYS)
        order = names[r % len(names):] + names[:r % len(names)]
        losses = {}
        for way in order:
            rate, losses[way] = steps_per_second(spec, data, way)
            rates[way].append(rate)
        print(f"repeat {r + 1}: " + ", ".join(f"{w} {rates[w][-1]:.1f} steps/s" for w in WAYS)
              + "; test loss " + ", ".join(f"{w} {losses[w]:.6f}" for w in WAYS))
    med = {w: statistics.median(v) for w, v in rates.items()}
    print("medians: " + ", ".join(f"{w} {med[w]:.1f} steps/s" for w in WAYS))

    def within(way: str) -> float:  # the median of each repeat's own ratio to the baseline
        return statistics.median(a / b for a, b in zip(rates[way], rates[BASELINE]))
    for way in WAYS:
        if way not in (DEFAULT, BASELINE):
            print(f"ratio {way} / {BASELINE}: {med[way] / med[BASELINE]:.2f}x of medians, "
                  f"{within(way):.2f}x per repeat")
    ratio = within(DEFAULT)
    print(f"ratio {DEFAULT} / {BASELINE} (the loop now / before): {med[DEFAULT] / med[BASELINE]:.2f}x of medians, "
          f"{ratio:.2f}x per repeat (target {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
