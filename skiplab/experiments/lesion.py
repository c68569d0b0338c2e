"""Lesion study (Veit et al., arXiv 1605.06431, Sec. 4 and Fig. 3): remove one block at
test time from trained networks. For add-like and plain blocks "removed" means the block
passes its input on unchanged (for plain that breaks the only path); for dense the
block's new features are zeroed (the carried state goes on). Residual networks behave like
ensembles of shallower paths and degrade gracefully; plain networks collapse.

Regime criterion of the default form (checked and reported): **every network has trained
before it is lesioned: each reaches >= 90% training accuracy** (a lesion of an untrained
net says nothing). Over 3 seeds; a seed's number is its mean drop over the blocks.
Verdict (:mod:`.outcome`): plain's mean drop exceeds add's.
"""

from __future__ import annotations

import statistics
from typing import Any


from ..errors import UserError
from ..families import MLP_FAMILY
from ..run.config import TrainConfig
from ..run.loop import evaluate
from ..skips import ADD, DENSE, PLAIN
from ..spec import ModelSpec
from ..study import STUDY_OPTIONS
from .context import Context
from .outcome import closing, decide, pct, predict, regime, signed

CLAIM = "removing one block barely hurts a residual network but breaks a plain one (Veit et al., 1605.06431)"
SKIPS = (PLAIN.name, ADD.name, DENSE.name)
FIT = 0.90

DEFAULT = dict(depth=10, width=128, epochs=40, seeds=3, skips=SKIPS)
QUICK = dict(depth=6, width=64, epochs=3, seeds=2, skips=SKIPS)


def run(ctx: Context, **form) -> dict[str, Any]:
    f = {**(QUICK if ctx.quick else DEFAULT), **form}
    depth, seeds, skips = f["depth"], f["seeds"], tuple(f["skips"])
    if not {PLAIN.name, ADD.name} <= set(skips):
        raise UserError(f"skips: the lesion study compares {PLAIN.name} with {ADD.name}; both must be among them")
    train = TrainConfig(epochs=f["epochs"], evals=2)
    specs = [ctx.run_spec(ModelSpec(model=MLP_FAMILY.name, depth=depth, width=f["width"], skip=skip, norm="batch",
                                    options=STUDY_OPTIONS.get(skip, {}),
                                    input_shape=ctx.data.input_shape, classes=ctx.data.classes), train, seed)
             for skip in skips for seed in range(seeds)]
    ctx.say(f"lesion: training {len(specs)} networks")
    rows = []
    for spec, (out, model) in zip(specs, ctx.train_models(specs)):
        if model is None:
            continue  # failed or diverged: counted by the context, nothing to lesion
        base = evaluate(model, ctx.data.x_test, ctx.data.y_test)[1]
        per_block = []
        for block in model.blocks:
            handle = block.lesion()  # the strategy says what "removed" means (Connection.without_branch)
            per_block.append(evaluate(model, ctx.data.x_test, ctx.data.y_test)[1])
            handle.remove()
        rows.append({"skip": spec.model.skip, "seed": spec.seed, "depth": depth, "test_accuracy": base,
                     "train_accuracy": out["result"]["train_accuracy"], "lesioned_accuracy": per_block,
                     "mean_drop": base - statistics.fmean(per_block)})
    drops = {s: [r["mean_drop"] for r in rows if r["skip"] == s] for s in skips}
    summary = {}
    for skip in skips:
        mine = [r for r in rows if r["skip"] == skip]
        if mine:
            summary[skip] = {"base": statistics.fmean(r["test_accuracy"] for r in mine),
                             "mean_drop": statistics.fmean(drops[skip]),
                             "mean_drop_std": statistics.stdev(drops[skip]) if len(mine) > 1 else None,
                             "max_drop": max(r["test_accuracy"] - a for r in mine for a in r["lesioned_accuracy"]),
                             "seeds": len(mine)}
    worse = predict(drops[ADD.name], drops[PLAIN.name], higher=True)  # plain's drop is the larger
    trained = [r["train_accuracy"] for r in rows]
    reg = regime(f"every network reaches >= {100 * FIT:.0f}% training accuracy before it is lesioned",
                 len(rows) == len(specs) and min(trained, default=0) >= FIT,
                 f"lowest {100 * min(trained):.1f}% over {len(rows)} nets" if trained else "no trained net")
    verdict = decide([worse], reg["met"])
    c = worse.comparison
    outcome = (f"Removing one of {depth} blocks costs, in points of test accuracy (mean over blocks): " + ", ".join(
        f"{skip} {pct(drops[skip]).replace('%', '')} (worst block {100 * v['max_drop']:.1f}, "
        f"from {100 * v['base']:.1f}%)" for skip, v in summary.items())
        + f"; {signed(c, 'plain minus add', 100)} "
        f"(MLP width {f['width']}, batch norm, {seeds} seeds, {train.epochs} epochs)." + closing(verdict, reg))
    return {"claim": CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "summary": summary, "rows": rows,
            "form": {**f, "skips": list(skips)}}
