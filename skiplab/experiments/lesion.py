"""Lesion study (Veit et al., arXiv 1605.06431): remove one block at test time from trained
networks. For add-like and plain blocks "removed" means the block passes its input on
unchanged (for plain that breaks the only path); for dense the block's new features are
zeroed (the carried state goes on). Residual networks behave like ensembles of shallower
paths and degrade gracefully; plain networks collapse."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from ..spec import ModelSpec
from ..train import RunSpec, TrainConfig, evaluate, train_model
from .context import Context

CLAIM = "removing one block barely hurts a residual network but breaks a plain one (Veit et al., 1605.06431)"


def _lesioned(block, skip: str):
    """A forward hook that makes ``block`` act as if removed."""
    def hook(module, inputs, output):
        s = inputs[0]
        if skip == "dense":
            return torch.cat([s, torch.zeros_like(output[:, s.shape[1]:])], dim=1)
        return s
    return block.register_forward_hook(hook)


def run(ctx: Context) -> dict[str, Any]:
    depth = 6 if ctx.quick else 12
    seeds = 1 if ctx.quick else 2
    train = TrainConfig(epochs=3 if ctx.quick else 15)
    rows = []
    for skip in ("plain", "add", "dense"):
        for seed in range(seeds):
            spec = ModelSpec(model="mlp", depth=depth, width=64, skip=skip, norm="batch",
                             growth=16 if skip == "dense" else None,
                             input_shape=ctx.data.input_shape, classes=ctx.data.classes)
            ctx.say(f"lesion: training {skip}, seed {seed}")
            model, result = train_model(RunSpec(spec, train, ctx.data.name, seed, "exp:lesion"), ctx.data)
            model.eval()
            base = evaluate(model, ctx.data.x_test, ctx.data.y_test)[1]
            per_block = []
            for block in model.blocks:
                handle = _lesioned(block, skip)
                per_block.append(evaluate(model, ctx.data.x_test, ctx.data.y_test)[1])
                handle.remove()
            rows.append({"skip": skip, "seed": seed, "depth": depth, "test_accuracy": base,
                         "lesioned_accuracy": per_block})
    summary = {}
    for skip in ("plain", "add", "dense"):
        mine = [r for r in rows if r["skip"] == skip]
        drops = [r["test_accuracy"] - a for r in mine for a in r["lesioned_accuracy"]]
        summary[skip] = {"base": statistics.fmean(r["test_accuracy"] for r in mine),
                         "mean_drop": statistics.fmean(drops), "max_drop": max(drops)}
    outcome = (f"Removing one of {depth} blocks costs on average " + ", ".join(
        f"{skip} {100 * v['mean_drop']:.1f} points (worst {100 * v['max_drop']:.1f}, from {100 * v['base']:.1f}%)"
        for skip, v in summary.items()) + f" (MLP width 64, {seeds} seed(s), {train.epochs} epochs).")
    return {"claim": CLAIM, "outcome": outcome, "summary": summary, "rows": rows}
