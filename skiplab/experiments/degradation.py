"""The ResNet paper's degradation (He et al., arXiv 1512.03385, Fig. 1): a deeper plain
network has *higher training error* than a shallower one, which overfitting cannot
explain; residual networks do not degrade. Plain vs add over depth, without a norm and
with batch norm."""

from __future__ import annotations

import statistics
from typing import Any

from ..spec import ModelSpec
from ..train import RunSpec, TrainConfig
from .context import Context

CLAIM = "deeper plain networks train worse (higher training error); residual ones do not (ResNet, Fig. 1)"


def run(ctx: Context) -> dict[str, Any]:
    depths = (2, 8, 20) if ctx.quick else (2, 8, 20, 50)
    seeds = 2 if ctx.quick else 3
    train = TrainConfig(epochs=3 if ctx.quick else 10, evals=2)
    specs = [RunSpec(ModelSpec(model="mlp", depth=d, width=32, skip=skip, norm=norm,
                               input_shape=ctx.data.input_shape, classes=ctx.data.classes),
                     train, ctx.data.name, seed, "exp:degradation")
             for norm in ("none", "batch") for skip in ("plain", "add") for d in depths for seed in range(seeds)]
    rows = ctx.train(specs)
    table = []
    for norm in ("none", "batch"):
        for skip in ("plain", "add"):
            for d in depths:
                mine = [r for r in rows if r["spec"]["model"]["norm"] == norm and r["spec"]["model"]["skip"] == skip
                        and r["spec"]["model"]["depth"] == d and r["status"] == "complete"]
                tr = [1 - r["result"]["train_accuracy"] for r in mine]
                te = [1 - r["result"]["test_accuracy"] for r in mine]
                table.append({"norm": norm, "skip": skip, "depth": d, "seeds": len(mine),
                              "train_error": statistics.fmean(tr) if tr else None,
                              "train_error_std": statistics.stdev(tr) if len(tr) > 1 else None,
                              "test_error": statistics.fmean(te) if te else None,
                              "test_error_std": statistics.stdev(te) if len(te) > 1 else None})

    def err(norm, skip, d):
        return next(t for t in table if t["norm"] == norm and t["skip"] == skip and t["depth"] == d)

    parts = []
    lo, hi = depths[0], depths[-1]
    for norm in ("none", "batch"):
        p_lo, p_hi, a_hi = err(norm, "plain", lo), err(norm, "plain", hi), err(norm, "add", hi)
        if None in (p_lo["train_error"], p_hi["train_error"], a_hi["train_error"]):
            parts.append(f"norm {norm}: some runs did not complete")
            continue
        degrades = p_hi["train_error"] > p_lo["train_error"] + 0.02
        parts.append(f"norm {norm}: plain's training error goes from {100 * p_lo['train_error']:.1f}% at depth {lo} "
                     f"to {100 * p_hi['train_error']:.1f}% at depth {hi} ({'degrades' if degrades else 'does not degrade'}), "
                     f"add's is {100 * a_hi['train_error']:.1f}% at depth {hi}")
    outcome = "; ".join(parts) + f" (MLP width 32, {seeds} seeds, {train.epochs} epochs)."
    return {"claim": CLAIM, "outcome": outcome, "table": table}
