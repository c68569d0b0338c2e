"""Trainability experiments that share one shape: train a few strategies at a few depths
and compare how far or how fast they get.

* ``rezero`` (Bachlechner et al., arXiv 2003.04887): steps to reach a target training loss
  for plain, add and rezero at depths 30 to 100.
* ``deep-supervision`` (seed answer 2's early-output heads; GoogLeNet's auxiliary
  classifiers, arXiv 1409.4842): does an auxiliary head every few blocks make a deep plain
  network trainable?
* ``parameter-efficiency`` (DenseNet, arXiv 1608.06993, Fig. 4): test accuracy against
  parameters for add, dense and concat-half at several budgets.
"""

from __future__ import annotations

import statistics
from typing import Any

from ..cost import match_budget
from ..spec import ModelSpec
from ..train import RunSpec, TrainConfig
from .context import Context


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _by(rows, **match):
    return [r for r in rows if all(r["spec"]["model"].get(k) == v for k, v in match.items())]


def _mlp(ctx: Context, **fields) -> ModelSpec:
    return ModelSpec(model="mlp", input_shape=ctx.data.input_shape, classes=ctx.data.classes, **fields)


# -- rezero --------------------------------------------------------------------------------
REZERO_CLAIM = "ReZero reaches a given training loss in fewer steps than add, and deep plain nets not at all (2003.04887)"


def rezero(ctx: Context) -> dict[str, Any]:
    depths = (30, 60) if ctx.quick else (30, 60, 100)
    seeds = 1 if ctx.quick else 2
    # Cross-entropy on MNIST-1D's 10 classes: chance is ln 10 = 2.30; the quick form's few
    # epochs only get within reach of 2.0.
    target = 2.0 if ctx.quick else 1.5
    train = TrainConfig(epochs=4 if ctx.quick else 10, evals=20, lr=1e-3)
    specs = [RunSpec(_mlp(ctx, depth=d, width=32, skip=s, norm="none"), train, ctx.data.name, seed, "exp:rezero")
             for s in ("plain", "add", "rezero") for d in depths for seed in range(seeds)]
    rows = ctx.train(specs)
    table = []
    for s in ("plain", "add", "rezero"):
        for d in depths:
            steps = []
            for r in _by(rows, skip=s, depth=d):
                curve = [(step, v) for step, split, name, v in ctx.store.metrics(r["id"]) if split == "train" and name == "loss"]
                steps.append(next((step for step, v in curve if v <= target), None))
            reached = [x for x in steps if x is not None]
            final = [r["result"].get("train_loss") for r in _by(rows, skip=s, depth=d)]
            table.append({"skip": s, "depth": d, "steps_to_target": _mean(reached), "reached": len(reached),
                          "seeds": len(steps), "final_train_loss": _mean(final)})
    deepest = depths[-1]
    cells = {(t["skip"], t["depth"]): t for t in table}

    def say(s: str) -> str:
        t = cells[(s, deepest)]
        if not t["reached"]:
            final = t["final_train_loss"]
            return f"{s} never (final loss {final:.3g})" if final is not None else f"{s} never (diverged)"
        return f"{s} {t['steps_to_target']:.0f} steps ({t['reached']}/{t['seeds']} seeds)"

    outcome = (f"Steps to a training loss of {target} at depth {deepest} (no norm, Adam 1e-3): "
               + ", ".join(say(s) for s in ("plain", "add", "rezero"))
               + f" ({train.epochs} epochs; the training loss is averaged over each of {train.evals} stretches).")
    return {"claim": REZERO_CLAIM, "outcome": outcome, "target_loss": target, "table": table}


# -- deep supervision ---------------------------------------------------------------------
DEEP_CLAIM = "early-output (auxiliary) heads give a deep plain network a gradient signal (seed answer 2)"


def deep_supervision(ctx: Context) -> dict[str, Any]:
    depth = 24 if ctx.quick else 50
    seeds = 2 if ctx.quick else 3
    train = TrainConfig(epochs=3 if ctx.quick else 10, evals=2)
    variants = [("plain", 0), ("plain", 4), ("add", 0)]
    specs = [RunSpec(_mlp(ctx, depth=depth, width=32, skip=s, norm="batch", aux_every=k), train, ctx.data.name, seed,
                     "exp:deep-supervision") for s, k in variants for seed in range(seeds)]
    rows = ctx.train(specs)
    table = []
    for s, k in variants:
        mine = [r for r in _by(rows, skip=s, aux_every=k) if r["status"] == "complete"]
        table.append({"skip": s, "aux_every": k, "depth": depth,
                      "test_accuracy": _mean([r["result"]["test_accuracy"] for r in mine]),
                      "train_accuracy": _mean([r["result"]["train_accuracy"] for r in mine]), "seeds": len(mine)})
    t = {(r["skip"], r["aux_every"]): r for r in table}

    def acc(key):
        v = t[key]["test_accuracy"]
        return "-" if v is None else f"{100 * v:.1f}%"
    outcome = (f"At depth {depth} (MLP width 32, batch norm, {seeds} seeds): plain {acc(('plain', 0))}, plain with an "
               f"auxiliary head every 4 blocks {acc(('plain', 4))}, add {acc(('add', 0))} test accuracy.")
    return {"claim": DEEP_CLAIM, "outcome": outcome, "table": table}


# -- parameter efficiency -------------------------------------------------------------------
PARAM_CLAIM = "DenseNet reaches a given accuracy with fewer parameters than ResNet (1608.06993, Fig. 4)"


def parameter_efficiency(ctx: Context) -> dict[str, Any]:
    budgets = (20_000, 80_000) if ctx.quick else (10_000, 30_000, 100_000, 300_000)
    depth = 8
    seeds = 2 if ctx.quick else 3
    train = TrainConfig(epochs=3 if ctx.quick else 15, evals=2)
    specs = []
    for b in budgets:
        for s in ("add", "dense", "concat-half"):
            base = _mlp(ctx, depth=depth, width=64, skip=s, norm="batch", growth=16 if s == "dense" else None)
            m = match_budget(base, params=b, vary="growth" if s == "dense" else "width")
            specs += [RunSpec(m.spec, train, ctx.data.name, seed, f"exp:parameter-efficiency:{b}") for seed in range(seeds)]
    rows = ctx.train(specs)
    table = []
    for b in budgets:
        for s in ("add", "dense", "concat-half"):
            mine = [r for r in rows if r["spec"]["group"].endswith(f":{b}") and r["spec"]["model"]["skip"] == s
                    and r["status"] == "complete"]
            table.append({"budget": b, "skip": s, "params": mine[0]["result"]["params"] if mine else None,
                          "test_accuracy": _mean([r["result"]["test_accuracy"] for r in mine]), "seeds": len(mine)})
    best = {b: max((r for r in table if r["budget"] == b and r["test_accuracy"] is not None),
                   key=lambda r: r["test_accuracy"]) for b in budgets}
    outcome = ("Best test accuracy per budget (depth 8): " + "; ".join(
        f"{b:,} params: {best[b]['skip']} {100 * best[b]['test_accuracy']:.1f}%" for b in budgets)
        + f" ({seeds} seeds, {train.epochs} epochs).")
    return {"claim": PARAM_CLAIM, "outcome": outcome, "table": table}
