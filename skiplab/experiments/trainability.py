"""Trainability experiments that share one shape: train a few strategies at a few depths
and compare how far or how fast they get.

* ``rezero`` (Bachlechner et al., arXiv 2003.04887): steps to reach a target training loss
  for plain, add and rezero at depths 10 to 100, without a norm (the paper's setting for
  deep fully-connected nets, its Sec. 4 / Fig. 3).
* ``deep-supervision`` (seed answer 2's early-output heads; GoogLeNet's auxiliary
  classifiers, arXiv 1409.4842, Sec. 5): does an auxiliary head every few blocks make a
  deep plain network trainable?
* ``parameter-efficiency`` (DenseNet, arXiv 1608.06993, Fig. 4): test accuracy against
  parameters for add, dense and concat-half at several matched budgets.

Each default form runs 3 seeds and states the regime its claim is about (in its
function's docstring); the verdict is decided by :mod:`.outcome`.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..cost import match_budget
from ..cost.budget import sizing_options
from ..families import MLP_FAMILY
from ..run.config import TrainConfig
from ..skips import ADD, CONCAT_HALF, DENSE, PLAIN, REZERO
from ..spec import ModelSpec
from ..stats import compare
from ..study import STUDY_OPTIONS
from .context import Context
from .outcome import closing, decide, pct, predict, regime, signed


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _by(rows, **match):
    return [r for r in rows if all(r["spec"]["model"].get(k) == v for k, v in match.items())]


def _done(rows):
    return [r for r in rows if r["status"] == "complete"]


def _mlp(ctx: Context, **fields) -> ModelSpec:
    return ModelSpec(model=MLP_FAMILY.name, input_shape=ctx.data.input_shape, classes=ctx.data.classes, **fields)


# -- rezero --------------------------------------------------------------------------------
REZERO_CLAIM = "ReZero reaches a given training loss in fewer steps than add, and deep plain nets not at all (2003.04887)"
# The target is a fraction of chance's loss ln(classes): 0.65 ln 10 = 1.5 on MNIST-1D.
REZERO_DEFAULT = dict(depths=(10, 30, 100), width=32, epochs=20, seeds=3, target=0.65, lr=1e-3)
REZERO_QUICK = dict(depths=(30, 60), width=32, epochs=3, seeds=2, target=0.87, lr=1e-3)


def rezero(ctx: Context, **form) -> dict[str, Any]:
    """Steps until the training loss (cross-entropy, averaged over each of 20 stretches
    of the run) first reaches the target (``target`` x ln(classes), chance's loss), per
    strategy and depth. A run that never reaches it (or diverges) counts as the run's
    length, a lower bound: the comparison is then conservative for the strategy that did
    reach it.

    Regime criterion (checked and reported): **the fastest strategy at the deepest depth
    reaches the target in every seed within the first half of the run**, so that a run
    that never reaches it is counted at no less than twice the steps the fastest needed:
    the comparison is one of speed, not of who was cut off. Verdict: at the deepest depth rezero needs fewer
    steps than add and than plain."""
    f = {**(REZERO_QUICK if ctx.quick else REZERO_DEFAULT), **form}
    depths, seeds = tuple(f["depths"]), f["seeds"]
    target = round(f["target"] * math.log(ctx.data.classes), 2)  # a training loss, from the chance loss
    train = TrainConfig(epochs=f["epochs"], evals=20, lr=f["lr"])
    skips = (PLAIN.name, ADD.name, REZERO.name)
    specs = [ctx.run_spec(_mlp(ctx, depth=d, width=f["width"], skip=s, norm="none"), train, seed)
             for s in skips for d in depths for seed in range(seeds)]
    rows = ctx.train(specs)

    def steps(r) -> tuple[int | None, int]:
        """(steps to the target or None, the run's planned length)."""
        total = r["spec"]["train"]["epochs"] * -(-len(ctx.data.y_train) // r["spec"]["train"]["batch_size"])
        curve = [(step, v) for step, split, name, v in ctx.store.metrics(r["id"])
                 if split == "train" and name == "loss"]
        return next((step for step, v in curve if v <= target), None), total

    table, censored = [], {}
    for s in skips:
        for d in depths:
            mine = [r for r in _by(rows, skip=s, depth=d) if r["status"] != "failed"]
            got = [steps(r) for r in mine]
            reached = [x for x, _ in got if x is not None]
            censored[(s, d)] = [x if x is not None else total for x, total in got]
            table.append({"skip": s, "depth": d, "steps_to_target": _mean(reached), "reached": len(reached),
                          "seeds": len(mine), "diverged": sum(r["status"] == "diverged" for r in mine),
                          "steps_censored": censored[(s, d)],
                          "final_train_loss": _mean([r["result"].get("train_loss") for r in _done(mine)])})
    deep = depths[-1]
    cells = {(t["skip"], t["depth"]): t for t in table}
    vs_add = predict(censored[(ADD.name, deep)], censored[(REZERO.name, deep)], higher=False)
    vs_plain = predict(censored[(PLAIN.name, deep)], censored[(REZERO.name, deep)], higher=False)

    def say(s: str) -> str:
        t = cells[(s, deep)]
        if not t["seeds"]:
            return f"{s}: every run failed"
        if not t["reached"]:
            why = [f"final loss {t['final_train_loss']:.3g}"] if t["final_train_loss"] is not None else []
            why += [f"{t['diverged']} diverged"] if t["diverged"] else []
            return f"{s} never in {t['seeds']} seeds" + (f" ({', '.join(why)})" if why else "")
        spread = statistics.stdev(censored[(s, deep)]) if len(censored[(s, deep)]) > 1 else None
        return (f"{s} {statistics.fmean(censored[(s, deep)]):.0f}" + (f" +- {spread:.0f}" if spread is not None else
                                                                       " (1 seed)")
                + f" steps ({t['reached']}/{t['seeds']} seeds reached it)")

    fastest = min(skips, key=lambda s: statistics.fmean(censored[(s, deep)]) if censored[(s, deep)] else float("inf"))
    ft = cells[(fastest, deep)]
    half = [x for x, total in (steps(r) for r in _by(rows, skip=fastest, depth=deep) if r["status"] != "failed")
            if x is not None and x <= total / 2]
    reg = regime(f"the fastest strategy at depth {deep} reaches the target in every seed within the first half of "
                 f"the run", ft["seeds"] == seeds and len(half) == seeds,
                 f"{fastest}: {len(half)}/{seeds} seeds within the first half, {ft['reached']}/{seeds} at all")
    verdict = decide([vs_add, vs_plain], reg["met"])
    outcome = (f"Steps to a training loss of {target} at depth {deep} (no norm, Adam {f['lr']:g}; never = the run's "
               f"length, a lower bound): " + ", ".join(say(s) for s in skips)
               + f"; {signed(vs_add.comparison, 'rezero minus add', unit='steps', digits=0)}; "
               f"{signed(vs_plain.comparison, 'rezero minus plain', unit='steps', digits=0)} "
               f"(MLP width {f['width']}, {seeds} seeds, {train.epochs} epochs)." + closing(verdict, reg))
    return {"claim": REZERO_CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "target_loss": target,
            "table": table, "form": {**f, "depths": list(depths)}}


# -- deep supervision ---------------------------------------------------------------------
DEEP_CLAIM = "early-output (auxiliary) heads give a deep plain network a gradient signal (seed answer 2)"
DEEP_DEFAULT = dict(depth=50, width=64, epochs=20, seeds=3, aux_every=4)
DEEP_QUICK = dict(depth=24, width=32, epochs=3, seeds=2, aux_every=4)
ADD_FITS = 0.90


def deep_supervision(ctx: Context, **form) -> dict[str, Any]:
    """A deep plain MLP (batch norm) with and without an auxiliary head every few blocks,
    and add at the same depth as the reference of a net that trains.

    Regime criterion (checked and reported): **add at the same depth and budget reaches
    >= 90% training accuracy**, so the epochs suffice for a trainable net of this depth
    and plain's shortfall is not a short budget. Verdict: plain with auxiliary heads
    reaches a higher training accuracy than plain without (the heads' claim is about the
    gradient signal, i.e. optimisation); test accuracy is reported beside it."""
    f = {**(DEEP_QUICK if ctx.quick else DEEP_DEFAULT), **form}
    depth, seeds, k = f["depth"], f["seeds"], f["aux_every"]
    train = TrainConfig(epochs=f["epochs"], evals=2)
    variants = [(PLAIN.name, 0), (PLAIN.name, k), (ADD.name, 0)]
    specs = [ctx.run_spec(_mlp(ctx, depth=depth, width=f["width"], skip=s, norm="batch", aux_every=a), train, seed)
             for s, a in variants for seed in range(seeds)]
    rows = ctx.train(specs)
    acc = {}
    table = []
    for s, a in variants:
        mine = _done(_by(rows, skip=s, aux_every=a))
        acc[(s, a)] = {split: [r["result"][f"{split}_accuracy"] for r in mine] for split in ("train", "test")}
        table.append({"skip": s, "aux_every": a, "depth": depth,
                      "test_accuracy": _mean(acc[(s, a)]["test"]), "train_accuracy": _mean(acc[(s, a)]["train"]),
                      "test_accuracy_std": statistics.stdev(acc[(s, a)]["test"]) if len(mine) > 1 else None,
                      "train_accuracy_std": statistics.stdev(acc[(s, a)]["train"]) if len(mine) > 1 else None,
                      "seeds": len(mine)})
    plain, heads, resnet = acc[(PLAIN.name, 0)], acc[(PLAIN.name, k)], acc[(ADD.name, 0)]
    helps = predict(plain["train"], heads["train"], higher=True)
    test = compare(plain["test"], heads["test"])
    add_train = resnet["train"]
    reg = regime(f"add at depth {depth} reaches >= {100 * ADD_FITS:.0f}% training accuracy",
                 bool(add_train) and min(add_train) >= ADD_FITS,
                 f"add's lowest {100 * min(add_train):.1f}%" if add_train else "no complete add run")
    verdict = decide([helps], reg["met"])
    c = helps.comparison
    outcome = (f"At depth {depth} (MLP width {f['width']}, batch norm): training accuracy plain "
               f"{pct(plain['train'])}, plain with an auxiliary head every {k} blocks "
               f"{pct(heads['train'])}, add {pct(add_train)} "
               f"({signed(c, 'heads minus none', 100)}); test accuracy "
               f"{pct(plain['test'])}, {pct(heads['test'])}, {pct(resnet['test'])} "
               f"({signed(test, 'heads minus none', 100)}); {seeds} seeds, "
               f"{train.epochs} epochs." + closing(verdict, reg))
    return {"claim": DEEP_CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "table": table, "form": f}


# -- parameter efficiency -------------------------------------------------------------------
PARAM_CLAIM = "DenseNet reaches a given accuracy with fewer parameters than ResNet (1608.06993, Fig. 4)"
PARAM_DEFAULT = dict(budgets=(10_000, 30_000, 100_000), depth=8, epochs=30, seeds=3)
PARAM_QUICK = dict(budgets=(20_000, 80_000), depth=8, epochs=3, seeds=2)
PARAM_FIT = 0.95


def parameter_efficiency(ctx: Context, **form) -> dict[str, Any]:
    """add, dense and concat-half MLPs (batch norm), each sized by the cost model to the
    same parameter budgets (dense through its growth), test accuracy per budget.

    Regime criterion (checked and reported): **at the largest budget every strategy
    reaches >= 95% training accuracy**, so the nets have trained to what they can fit
    and test accuracy measures what their parameters buy, not the epochs. Verdict: dense's
    test accuracy beats add's at every budget (DenseNet's Fig. 4: the same accuracy at
    fewer parameters means higher accuracy at the same parameters)."""
    f = {**(PARAM_QUICK if ctx.quick else PARAM_DEFAULT), **form}
    budgets, seeds = tuple(f["budgets"]), f["seeds"]
    train = TrainConfig(epochs=f["epochs"], evals=2)
    skips = (ADD.name, DENSE.name, CONCAT_HALF.name)
    specs = []
    for b in budgets:
        for s in skips:
            base = _mlp(ctx, depth=f["depth"], width=64, skip=s, norm="batch", options=STUDY_OPTIONS.get(s, {}))
            m = match_budget(base, params=b, vary=(sizing_options(base) or ["width"])[0])
            specs += [ctx.run_spec(m.spec, train, seed, f"exp:parameter-efficiency:{b}") for seed in range(seeds)]
    rows = ctx.train(specs)
    table, acc = [], {}
    for b in budgets:
        for s in skips:
            mine = _done([r for r in rows if r["spec"]["group"].endswith(f":{b}") and r["spec"]["model"]["skip"] == s])
            acc[(b, s)] = [r["result"]["test_accuracy"] for r in mine]
            train_acc = [r["result"]["train_accuracy"] for r in mine]
            table.append({"budget": b, "skip": s, "params": mine[0]["result"]["params"] if mine else None,
                          "test_accuracy": _mean(acc[(b, s)]),
                          "test_accuracy_std": statistics.stdev(acc[(b, s)]) if len(mine) > 1 else None,
                          "train_accuracy": _mean(train_acc), "min_train_accuracy": min(train_acc, default=None),
                          "seeds": len(mine)})
    predictions = [predict(acc[(b, ADD.name)], acc[(b, DENSE.name)], higher=True) for b in budgets]
    top = [t["min_train_accuracy"] for t in table if t["budget"] == budgets[-1]]
    reg = regime(f"every strategy at {budgets[-1]:,} parameters reaches >= {100 * PARAM_FIT:.0f}% training accuracy",
                 all(v is not None and v >= PARAM_FIT for v in top),
                 "lowest " + ("-" if any(v is None for v in top) else f"{100 * min(top):.1f}%"))
    verdict = decide(predictions, reg["met"])
    parts = []
    for b, p in zip(budgets, predictions):
        parts.append(f"{b:,}: " + ", ".join(f"{s} {pct(acc[(b, s)])}" for s in skips)
                     + f" ({signed(p.comparison, 'dense minus add', 100)})")
    outcome = (f"Test accuracy at matched parameter budgets (MLP depth {f['depth']}, batch norm): " + "; ".join(parts)
               + f"; {seeds} seeds, {train.epochs} epochs." + closing(verdict, reg))
    return {"claim": PARAM_CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "table": table,
            "form": {**f, "budgets": list(budgets)}}
