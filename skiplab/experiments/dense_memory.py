"""Dense at a fixed memory budget (Pleiss et al., "Memory-efficient implementation of
DenseNets", arXiv 1707.06990, Sec. 1 and 5): keeping each feature once instead of each
layer's concatenated input lets a DenseNet go deeper on the same memory, and the extra
depth buys accuracy (their DenseNet-264 on one GPU).

The budget M is the activation memory (what autograd keeps for one training batch) of the
naive dense MLP at depth ``naive_depth``. The cost model (exact: analytic == measured,
tests/test_dense_memory.py) gives the deepest net of each kind within M: naive dense
(``naive_depth`` by construction), efficient dense, and add (the residual net, which keeps
its width-w block inputs). All three are trained over seeds; the built models' saved
bytes are measured and checked against M.

Regime criterion, checked and reported: **the efficient path fits at least twice the
naive depth in M, and every trained configuration's measured activation memory is <= M**
(otherwise the experiment is not about a memory budget). Prediction: the efficient dense
net at its depth has higher test accuracy than the naive one at its depth (a test over
seeds); add at its depth is reported beside them, not part of the verdict.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

import torch

from ..cost import model_cost
from ..cost.measure import saved_activation_bytes
from ..families import MLP_FAMILY
from ..model import build_model
from ..run.config import TrainConfig
from ..skips import ADD, DENSE
from ..skips.concat import MEMORY
from ..spec import ModelSpec
from .context import Context
from .outcome import closing, decide, pct, predict, regime

CLAIM = ("storing each feature once lets a dense net go deeper within the same activation memory, and the extra "
         "depth buys accuracy (Pleiss et al., arXiv 1707.06990)")
# The study's MLP (width 64, batch norm, growth 16) and training (10 epochs of Adam).
DEFAULT = dict(naive_depth=12, width=64, growth=16, epochs=10, seeds=5, max_depth=200)
QUICK = dict(naive_depth=3, width=32, growth=8, epochs=2, seeds=2, max_depth=40)


def _deepest(spec: ModelSpec, budget: int, batch: int, max_depth: int) -> tuple[int, list[int]]:
    """The deepest depth (<= max_depth) whose activation memory fits ``budget``, and the
    memory at depths 1..max_depth (activation memory only grows with depth)."""
    curve = [model_cost(spec.replace(depth=d), batch)["activation_bytes"] for d in range(1, max_depth + 1)]
    fits = [d for d, b in enumerate(curve, start=1) if b <= budget]
    return (max(fits) if fits else 0), curve


def run(ctx: Context, **form) -> dict[str, Any]:
    f = {**(QUICK if ctx.quick else DEFAULT), **form}
    train = TrainConfig(epochs=f["epochs"], lr=3e-3, evals=2)
    batch = train.batch_size
    base = ModelSpec(model=MLP_FAMILY.name, width=f["width"], norm="batch", input_shape=ctx.data.input_shape,
                     classes=ctx.data.classes)
    kinds = {  # label -> spec without depth
        "dense, naive": base.replace(skip=DENSE.name, options={"growth": f["growth"], MEMORY.name: "naive"}),
        "dense, efficient": base.replace(skip=DENSE.name, options={"growth": f["growth"], MEMORY.name: "efficient"}),
        "add": base.replace(skip=ADD.name),
    }
    budget = model_cost(kinds["dense, naive"].replace(depth=f["naive_depth"]), batch)["activation_bytes"]
    depths, curves = {}, {}
    for label, spec in kinds.items():
        depths[label], curves[label] = _deepest(spec, budget, batch, f["max_depth"])
    ctx.say(f"budget {budget / 2**20:.2f} MiB: " + ", ".join(f"{k} depth {d}" for k, d in depths.items()))

    # Measured on the built models: what autograd keeps for one training batch of each.
    measured = {}
    for label, spec in kinds.items():
        model = build_model(spec.replace(depth=depths[label]), seed=0).train()
        x, _ = spec.family.random_batch(spec, batch, torch.Generator().manual_seed(0))
        measured[label] = saved_activation_bytes(model, x)
        del model

    labels = list(kinds)
    specs = [ctx.run_spec(kinds[label].replace(depth=depths[label]), train, seed)
             for label in labels for seed in range(f["seeds"])]
    rows = ctx.train(specs)
    by_label: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for i, row in enumerate(rows):
        by_label[labels[i // f["seeds"]]].append(row)

    def acc(label: str) -> list[float]:
        return [r["result"]["test_accuracy"] for r in by_label[label] if r["status"] == "complete"]

    table = [{"config": label, "skip": kinds[label].skip, "memory": dict(kinds[label].options).get(MEMORY.name),
              "depth": depths[label], "params": model_cost(kinds[label].replace(depth=depths[label]), batch)
              ["params"]["total"], "activation_bytes": curves[label][depths[label] - 1] if depths[label] else None,
              "measured_bytes": measured[label], "seeds": len(acc(label)),
              "test_accuracy": statistics.fmean(acc(label)) if acc(label) else None,
              "test_accuracy_std": statistics.stdev(acc(label)) if len(acc(label)) > 1 else None}
             for label in labels]
    deeper = predict(acc("dense, naive"), acc("dense, efficient"), higher=True)
    vs_add = predict(acc("add"), acc("dense, efficient"), higher=True)
    fits = all(m <= budget for m in measured.values())
    ratio = depths["dense, efficient"] / max(1, depths["dense, naive"])
    reg = regime("the efficient path fits >= 2x the naive depth in the budget, and every configuration's measured "
                 "activation memory is <= the budget", ratio >= 2 and fits,
                 f"{depths['dense, efficient']} vs {depths['dense, naive']} blocks ({ratio:.1f}x); measured "
                 + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in measured.items()))
    verdict = decide([deeper], reg["met"])
    c, a = deeper.comparison, vs_add.comparison
    outcome = (f"In {budget / 2**20:.2f} MiB of activation memory (batch {batch}), naive dense fits "
               f"{depths['dense, naive']} blocks, efficient dense {depths['dense, efficient']} and add "
               f"{depths['add']} (MLP width {f['width']}, growth {f['growth']}, batch norm). Test accuracy: "
               + "; ".join(f"{label} at depth {depths[label]} {pct(acc(label))}" for label in labels) + ". "
               + ("no runs to compare" if c is None else
                  c.sentence(f"naive dense (depth {depths['dense, naive']})",
                             f"efficient dense (depth {depths['dense, efficient']})", 100))
               + "; " + ("no runs to compare with add" if a is None else
                         a.sentence(f"add (depth {depths['add']})",
                                    f"efficient dense (depth {depths['dense, efficient']})", 100))
               + f" ({f['seeds']} seeds, {train.epochs} epochs)." + ctx.failure_note() + closing(verdict, reg))
    return {"claim": CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "table": table,
            "budget_bytes": budget, "batch": batch,
            "curves": {label: curves[label] for label in labels},
            "comparisons": {"efficient_vs_naive": None if c is None else asdict(c),
                            "efficient_vs_add": None if a is None else asdict(a)},
            "form": f}
