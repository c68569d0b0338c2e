"""The residual stream of a transformer: three 2020-25 claims, on a character language model
(default: the ``pydoc`` text every Python ships; ``--dataset`` takes a ``.txt`` file).
Every run is judged by validation bits per character (bpc, lower is better).

* ``denseformer`` (Pagliardini et al., arXiv 2402.02622): a transformer whose blocks read a
  learned depth-weighted average of all earlier block outputs (``dwa``) is better than the
  residual one (``add``) at the same depth, and matches a deeper one: their 48-block
  DenseFormer matched a 72-block transformer's perplexity (1.5x the depth).
* ``hyper-gain`` (mHC, arXiv 2512.24880, Fig. 3): the composite residual mapping prod H_res
  of hyper-connections (``hyper``, arXiv 2409.19606) grows during training (its gain
  reached about 3000 in a 27B model), while mHC's (``mhc``), projected to doubly
  stochastic matrices, stays near 1 (1 to 1.6 there).
* ``norm-placement`` (Xiong et al., arXiv 2002.04745): Post-LN (norm after each merge)
  needs a learning-rate warm-up and trains worse as depth grows; Pre-LN (norm before each
  branch) trains without one.

Each function's docstring states the regime its default form must reach; the regime is
checked on the runs and reported, and the verdict (:mod:`.outcome`, Welch's t-test over
seeds) cannot be better than inconclusive where it is not met. Several regimes use the
text's **unigram bpc**: the validation bpc of a model that ignores context and predicts
every character with its training-text frequency (add-one smoothed), measured on the data.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
import dataclasses
from dataclasses import asdict
from typing import Any

from ..datasets import TextDataset
from ..errors import UserError
from ..families import TRANSFORMER_FAMILY
from ..gradients import stream_gains
from ..model import build_model
from ..run.config import TrainConfig
from ..skips import ADD, DWA_STRATEGY, HYPER, MHC_STRATEGY
from ..spec import ModelSpec
from ..stats import compare, mean_std
from ..study import TRANSFORMER_EPOCHS, TRANSFORMER_LR, TRANSFORMER_WARMUP
from .context import Context
from .outcome import closing, decide, predict, regime, signed

_ADD, _DWA, _HYPER, _MHC = (s.name for s in (ADD, DWA_STRATEGY, HYPER, MHC_STRATEGY))  # the strategies compared here


# -- shared --------------------------------------------------------------------------------
def _lm(ctx: Context, f: dict[str, Any], **fields) -> ModelSpec:
    """A character language model on this experiment's text."""
    return ModelSpec(model=TRANSFORMER_FAMILY.name, vocab=ctx.data.vocab, classes=ctx.data.classes, width=f["width"],
                     context=f["context"], heads=f["heads"], **fields)


def _train(f: dict[str, Any], **fields) -> TrainConfig:
    fields = {"warmup": f.get("warmup", 0), **fields}
    return TrainConfig(epochs=f["epochs"], batch_size=f["batch_size"], lr=f["lr"], evals=f["evals"], **fields)


# The regime of the papers' claims is trained models (issue 27): a reference run of each
# experiment (seed 0) is trained twice as long as well, and its validation bpc must move by at
# most this much (the transformer study's criterion, skiplab.study.StudyPlan.regime_tolerance).
TRAINED_TOLERANCE = 0.05


def _longer(ctx: Context, spec, factor: float = 2.0):
    """The run ``spec`` (seed 0) trained ``factor`` times as long: the trained-regime check's."""
    train = dataclasses.replace(spec.train, epochs=spec.train.epochs * factor)
    return ctx.run_spec(spec.model, train, 0)


def _trained(short: list[dict[str, Any]], long: list[dict[str, Any]], what: str) -> dict[str, Any]:
    """Whether the reference run (seed 0 of ``short``) is within TRAINED_TOLERANCE bpc of the
    same run trained twice as long (``long``), as a regime dict."""
    a = [r["result"]["val_bpc"] for r in short if r["seed"] == 0 and r["status"] == "complete"]
    b = [r["result"]["val_bpc"] for r in long if r["status"] == "complete"]
    met = bool(a and b and abs(a[0] - b[0]) <= TRAINED_TOLERANCE)
    measured = (f"{a[0]:.3f} bpc, {b[0]:.3f} trained twice as long, {abs(a[0] - b[0]):.3f} apart" if a and b
                else "a run did not finish")
    return regime(f"{what} (seed 0) is within {TRAINED_TOLERANCE} bpc of itself trained twice as long", met, measured)


def _both(*regimes: dict[str, Any]) -> dict[str, Any]:
    """Several regime criteria as one, met when each is."""
    return regime("; and ".join(r["criterion"] for r in regimes), all(r["met"] for r in regimes),
                  "; ".join(r["measured"] for r in regimes))


def _where(rows, **match) -> list[dict[str, Any]]:
    return [r for r in rows if all(r["spec"]["model"].get(k) == v for k, v in match.items())]


def _bpc(rows) -> list[float]:
    return [r["result"]["val_bpc"] for r in rows if r["status"] == "complete"]


def _mean_text(values, digits: int = 3, unit: str = "") -> str:
    """``1.812<unit> +- 0.004`` over seeds, ``1.812<unit> (1 seed)``, or ``-`` (Nones left out)."""
    m, s = mean_std([x for x in values if x is not None])
    if m is None:
        return "-"
    return f"{m:.{digits}f}{unit}" + (" (1 seed)" if s is None else f" +- {s:.{digits}f}")


def _text(values, digits: int = 3) -> str:
    """``1.812 bpc +- 0.004`` over seeds, ``1.812 bpc (1 seed)``, or ``-``."""
    return _mean_text(values, digits, " bpc")


def _stats(values) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    return {"mean": statistics.fmean(v) if v else None, "std": statistics.stdev(v) if len(v) > 1 else None,
            "seeds": len(v)}


def unigram_bpc(data: TextDataset) -> float:
    """Validation bpc of a context-free model: each character predicted with its (add-one
    smoothed) frequency in the training text."""
    counts = Counter(data.train_tokens.tolist())
    total = len(data.train_tokens) + data.vocab
    bits = [-math.log2((counts.get(t, 0) + 1) / total) for t in data.test_tokens.tolist()]
    return statistics.fmean(bits)


def _curve(ctx: Context, rows, name: str) -> dict[str, list[float]]:
    """A stored curve (split ``test``), the mean over the complete runs at each step."""
    by_step: dict[int, list[float]] = {}
    for r in rows:
        if r["status"] != "complete":
            continue
        for step, split, n, value in ctx.store.metrics(r["id"]):
            if split == "test" and n == name:
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return {"steps": steps, "mean": [statistics.fmean(by_step[s]) for s in steps]}


def _setting(f: dict[str, Any], seeds: int) -> str:
    warm = f", {f['warmup']} warm-up steps" if f.get("warmup") else ""
    return (f"transformer width {f['width']}, {f['heads']} heads, context {f['context']}, Adam {f['lr']:g}{warm}, "
            f"batch {f['batch_size']}, {f['epochs']} epoch{'s' if f['epochs'] != 1 else ''}, {seeds} seeds")


# -- denseformer ------------------------------------------------------------------------------
DENSE_CLAIM = ("a DenseFormer (depth-weighted averages, dwa) beats the residual transformer (add) at equal depth and "
               "matches a deeper one (2402.02622: 48 DWA blocks match 72, 1.5x the depth)")
# The transformer study's regime (skiplab.study's TRANSFORMER_* training, measured there).
TRAINED = dict(epochs=TRANSFORMER_EPOCHS, lr=TRANSFORMER_LR, warmup=TRANSFORMER_WARMUP)
DENSE_DEFAULT = dict(depth=4, add_depths=(4, 5, 6, 8), width=64, heads=4, context=64, batch_size=32, evals=8, seeds=3,
                     **TRAINED)
DENSE_QUICK = dict(depth=2, add_depths=(2, 3), width=32, heads=2, context=32, epochs=0.3, batch_size=64, lr=3e-3,
                   evals=2, seeds=2)


def matched_depth(dwa: float, add: dict[int, float]) -> tuple[float | None, str]:
    """The add depth whose validation bpc a dwa model's equals, by linear interpolation of
    add's mean bpc between the two measured depths that bracket it: (depth, how it was
    found). None with "below" when dwa is no better than add's shallowest, "beyond" when
    it beats the deepest (the matched depth is past what was trained)."""
    depths = sorted(add)
    if dwa >= add[depths[0]]:
        return None, "below"
    for lo, hi in zip(depths, depths[1:]):
        a, b = add[lo], add[hi]
        if b <= dwa <= a and a > b:
            return lo + (hi - lo) * (a - dwa) / (a - b), f"between add depths {lo} and {hi}"
    return None, "beyond"


def denseformer(ctx: Context, **form) -> dict[str, Any]:
    """add at several depths from d up (``add_depths``), dwa at depth d (pre-LN, layer
    norm), validation bpc; the claim in its own terms: **how many add blocks does a DWA
    model of d blocks match?** (:func:`matched_depth`, interpolated on add's mean bpc, with
    Welch's test against each add depth).

    Regime criteria (checked and reported): add at depth d is trained (seed 0 within 0.05
    bpc of itself trained twice as long), and **the deepest add is better than add at d**
    (Welch's test separates them), so that "matching a deeper net" is a target that means
    something: where depth buys nothing, any model matches a deeper one. Verdict: dwa at
    depth d has lower bpc than add at depth d; dwa significantly worse than add at 1.5d
    (when trained) contradicts the matching claim."""
    f = {**(DENSE_QUICK if ctx.quick else DENSE_DEFAULT), **form}
    d, seeds = f["depth"], f["seeds"]
    add_depths = tuple(sorted(set(f["add_depths"])))
    if d not in add_depths or len(add_depths) < 2:
        raise UserError(f"experiment denseformer: add_depths ({', '.join(map(str, add_depths))}) must hold depth "
                        f"({d}) and at least one deeper")
    deep = add_depths[-1]
    train = _train(f)
    variants = [(_ADD, dd) for dd in add_depths] + [(_DWA, d)]
    specs = [ctx.run_spec(_lm(ctx, f, depth=depth, skip=skip), train, seed)
             for skip, depth in variants for seed in range(seeds)]
    longer = _longer(ctx, specs[0])  # add at depth d, seed 0, twice as long
    rows = ctx.train(specs + [longer])
    rows, long_rows = rows[:-1], rows[-1:]
    bpc = {(s, dd): _bpc(_where(rows, skip=s, depth=dd)) for s, dd in variants}
    table = []
    for s, dd in variants:
        mine = _where(rows, skip=s, depth=dd)
        done = [r for r in mine if r["status"] == "complete"]
        table.append({"skip": s, "depth": dd, **{f"val_bpc_{k}": v for k, v in _stats(bpc[(s, dd)]).items()},
                      "diverged": sum(r["status"] == "diverged" for r in mine),
                      "params": done[0]["result"]["params"] if done else None,
                      "tokens_per_second": statistics.fmean(r["result"]["tokens_per_second"] for r in done)
                      if done else None,
                      "curve": _curve(ctx, mine, "bpc")})
    better = predict(bpc[(_ADD, d)], bpc[(_DWA, d)], higher=False)  # dwa: lower bpc at equal depth
    vs = {dd: compare(bpc[(_ADD, dd)], bpc[(_DWA, d)]) for dd in add_depths}  # dwa against each add depth
    one_half = [dd for dd in add_depths if dd >= 1.5 * d]
    match = predict(bpc[(_ADD, one_half[0])], bpc[(_DWA, d)], higher=False) if one_half else None
    depth_buys = compare(bpc[(_ADD, d)], bpc[(_ADD, deep)])
    predictions = [better] + ([match] if match is not None and match.direction < 0 else [])
    reg = _both(_trained(_where(rows, skip=_ADD, depth=d), long_rows, f"add at depth {d}"),
                regime(f"add at depth {deep} has lower validation bpc than add at depth {d} (Welch, 0.05)",
                       depth_buys is not None and depth_buys.winner == "a",  # the winner is the larger mean
                       signed(depth_buys, f"add {deep} minus add {d}", unit="bpc", digits=3)))
    verdict = decide(predictions, reg["met"])
    means = {dd: statistics.fmean(bpc[(_ADD, dd)]) for dd in add_depths if bpc[(_ADD, dd)]}
    matched, how = (matched_depth(statistics.fmean(bpc[(_DWA, d)]), means) if bpc[(_DWA, d)] and d in means
                    else (None, "missing"))
    tied = [dd for dd in add_depths if vs[dd] is not None and vs[dd].winner is None]
    if matched is not None:
        answer = (f"dwa at depth {d} matches add at depth {matched:.1f} ({matched / d:.2f}x its blocks; interpolated "
                  f"{how} on mean bpc)")
    elif how == "below":
        answer = f"dwa at depth {d} matches no deeper add: it is no better than add at depth {d} on mean bpc"
    elif how == "beyond":
        answer = f"dwa at depth {d} beats every add depth trained, up to {deep} (the match is deeper still)"
    else:
        answer = "the matched depth is unknown (runs missing)"
    answer += (f"; Welch's test ties it with add at depth{'s' if len(tied) > 1 else ''} "
               f"{', '.join(map(str, tied))}" if tied else "; Welch's test ties it with no add depth")
    cells = {(t["skip"], t["depth"]): t for t in table}
    cost = ""
    if cells[(_DWA, d)]["params"] and cells[(_ADD, d)]["params"]:
        cost = (f"; dwa adds {cells[(_DWA, d)]['params'] - cells[(_ADD, d)]['params']} parameters to add's "
                f"{cells[(_ADD, d)]['params']:,}")
        if cells[(_DWA, d)]["tokens_per_second"] and cells[(_ADD, d)]["tokens_per_second"]:
            cost += (f" and trains at {cells[(_DWA, d)]['tokens_per_second'] / cells[(_ADD, d)]['tokens_per_second']:.2f}x "
                     f"its tokens per second")
    adds = ", ".join(f"add depth {dd} {_text(bpc[(_ADD, dd)])}" for dd in add_depths)
    outcome = (f"Validation bpc: {adds}, dwa depth {d} {_text(bpc[(_DWA, d)])}; {answer}; "
               f"{signed(better.comparison, f'dwa {d} minus add {d}', unit='bpc', digits=3)}"
               + (f"; {signed(match.comparison, f'dwa {d} minus add {one_half[0]}', unit='bpc', digits=3)}"
                  if match is not None else "")
               + f"; {signed(depth_buys, f'add {deep} minus add {d}', unit='bpc', digits=3)}{cost} "
               f"({_setting(f, seeds)})." + closing(verdict, reg))
    return {"claim": DENSE_CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "table": table,
            "matched_depth": matched, "matched_how": how, "tied_add_depths": tied,
            "comparisons": {k: None if c is None else asdict(c) for k, c in (
                ("dwa_minus_add", better.comparison),
                ("dwa_minus_deeper_add", match.comparison if match is not None else None),
                ("deeper_add_minus_add", depth_buys))},
            "form": {**f, "add_depths": list(add_depths)}}


# -- hyper-gain --------------------------------------------------------------------------------
GAIN_CLAIM = ("hyper-connections' composite residual gain grows in training while mHC's stays near 1 "
              "(2512.24880, Fig. 3: about 3000 vs 1 to 1.6 in a 27B model)")
GAIN_DEFAULT = dict(depths=(2, 4), width=64, heads=4, context=64, batch_size=32, evals=8, seeds=3, **TRAINED)
GAIN_QUICK = dict(depths=(1, 2), width=16, heads=2, context=16, epochs=0.3, batch_size=256, lr=3e-3, evals=2, seeds=2)
GAIN_BATCH = 256  # validation windows the gain at init is measured on (as training does after)


def hyper_gain(ctx: Context, **form) -> dict[str, Any]:
    """hyper and mhc (4 streams, pre-LN) at a few depths: the composite residual gain
    (max absolute row sum of prod H_res after the last sublayer, forward; column sum,
    backward; :func:`skiplab.gradients.stream_gains`, on validation windows) at init, at
    every evaluation during training, and after training.

    mHC's H_res are doubly stochastic (non-negative, rows and columns summing to 1 after
    Sinkhorn-Knopp), so the product is too and its forward gain is 1 up to the Sinkhorn
    tolerance whatever training does: that is the design, and the outcome says so; the
    measurement is what hyper's gain does beside it.

    Regime criteria (checked and reported): hyper at the deepest depth is trained (seed 0
    within 0.05 bpc of itself trained twice as long), and **every hyper and mhc run at the
    deepest depth ends below the text's unigram bpc**, so the streams were trained in a
    model that learned to use context, not stopped at character frequencies. Verdict: at
    the deepest depth, hyper's gain after training exceeds mhc's, forward and backward."""
    f = {**(GAIN_QUICK if ctx.quick else GAIN_DEFAULT), **form}
    depths, seeds = tuple(f["depths"]), f["seeds"]
    train = _train(f)
    skips = (_HYPER, _MHC)
    specs = [ctx.run_spec(_lm(ctx, f, depth=d, skip=s), train, seed)
             for s in skips for d in depths for seed in range(seeds)]
    reference = next(s for s in specs if s.model.skip == _HYPER and s.model.depth == depths[-1])
    rows = ctx.train(specs + [_longer(ctx, reference)])
    rows, long_rows = rows[:-1], rows[-1:]
    x = ctx.data.for_model(specs[0].model).x_test[:GAIN_BATCH]
    init: dict[tuple[str, int], list[dict[str, float]]] = {}
    for spec in specs:  # at init: the same models, built here (a run's weights start from its seed)
        g = stream_gains(build_model(spec.model, seed=spec.seed), x)
        init.setdefault((spec.model.skip, spec.model.depth), []).append(
            {"forward": g["forward"][-1], "backward": g["backward"][-1]})
    table, after = [], {}
    for s in skips:
        for d in depths:
            mine = _where(rows, skip=s, depth=d)
            done = [r for r in mine if r["status"] == "complete"]
            after[(s, d)] = {k: [r["result"]["diagnostics"][f"composite_gain_{k}"] for r in done]
                             for k in ("forward", "backward")}
            table.append({"skip": s, "depth": d, "sublayers": 2 * d, "seeds": len(done),
                          "diverged": sum(r["status"] == "diverged" for r in mine),
                          **{f"init_{k}": statistics.fmean(g[k] for g in init[(s, d)]) for k in ("forward", "backward")},
                          **{f"gain_{k}_{stat}": v for k in ("forward", "backward")
                             for stat, v in _stats(after[(s, d)][k]).items() if stat != "seeds"},
                          "val_bpc": _stats(_bpc(mine))["mean"],
                          "curve_forward": _curve(ctx, mine, "gain_forward"),
                          "curve_backward": _curve(ctx, mine, "gain_backward")})
    deep = depths[-1]
    predictions = [predict(after[(_MHC, deep)][k], after[(_HYPER, deep)][k], higher=True)
                   for k in ("forward", "backward")]
    unigram = unigram_bpc(ctx.data)
    deep_bpc = _bpc(_where(rows, depth=deep))
    reg = _both(_trained(_where(rows, skip=_HYPER, depth=deep), long_rows, f"hyper at depth {deep}"),
                regime(f"every hyper and mhc run at depth {deep} ends below the text's unigram bpc ({unigram:.2f})",
                       len(deep_bpc) == 2 * seeds and max(deep_bpc) < unigram,
                       f"highest {max(deep_bpc):.3f} bpc over {len(deep_bpc)} complete runs" if deep_bpc
                       else "no complete run"))
    verdict = decide(predictions, reg["met"])
    cells = {(t["skip"], t["depth"]): t for t in table}

    def gains(s: str, k: str) -> str:
        return ", ".join(f"depth {d} {_plain(after[(s, d)][k])}" for d in depths)

    mhc_dev = max((abs(v - 1) for d in depths for v in after[(_MHC, d)]["forward"]), default=None)
    outcome = (f"Composite residual gain of prod H_res after the last of 2 x depth sublayers, after training "
               f"(forward = max row sum; backward = max column sum): hyper forward {gains(_HYPER, 'forward')}, "
               f"backward {gains(_HYPER, 'backward')}; mhc forward {gains(_MHC, 'forward')}, backward "
               f"{gains(_MHC, 'backward')}; at init hyper's is {cells[(_HYPER, deep)]['init_forward']:.3f} and "
               f"mhc's {cells[(_MHC, deep)]['init_forward']:.3f} forward at depth {deep}. At depth {deep}: "
               f"{signed(predictions[0].comparison, 'hyper minus mhc forward', unit='', digits=3)}; "
               f"{signed(predictions[1].comparison, 'hyper minus mhc backward', unit='', digits=3)}. "
               f"mhc's forward gain is 1 by construction (doubly stochastic H_res; largest deviation measured "
               + ("-" if mhc_dev is None else f"{mhc_dev:.1e}")
               + "), so the finding is hyper's gain, not mhc's; validation bpc at depth "
               f"{deep}: hyper {_text(_bpc(_where(rows, skip=_HYPER, depth=deep)))}, mhc "
               f"{_text(_bpc(_where(rows, skip=_MHC, depth=deep)))} ({_setting(f, seeds)})." + closing(verdict, reg))
    return {"claim": GAIN_CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "unigram_bpc": unigram,
            "table": table, "form": {**f, "depths": list(depths)}}


def _plain(values, digits: int = 3) -> str:
    """``_text`` without the unit."""
    return _mean_text(values, digits)


# -- norm-placement ----------------------------------------------------------------------------
NORM_CLAIM = ("Post-LN transformers need a learning-rate warm-up and train worse as depth grows; Pre-LN ones train "
              "without (Xiong et al., 2002.04745)")
NORM_DEFAULT = dict(depths=(2, 6), width=64, heads=4, context=64, batch_size=32, evals=4, seeds=3,
                    **TRAINED)  # its warmup is the warm-up arm's; the other trains without
NORM_QUICK = dict(depths=(1, 3), width=16, heads=2, context=16, epochs=0.3, batch_size=128, lr=3e-3, evals=2,
                  warmup=20, seeds=2)


def norm_placement(ctx: Context, **form) -> dict[str, Any]:
    """add with layer norm, placement pre and post, over depth, without warm-up and with a
    linear warm-up of ``warmup`` steps (then cosine), the same peak learning rate.

    A diverged run has no validation bpc; in the comparisons it counts as the uniform
    guess, log2(vocab) bpc (a model that learned nothing; a diverged one is no better),
    and the outcome says how many diverged.

    Regime criteria (checked and reported): Pre-LN without warm-up at the deepest depth is
    trained (seed 0 within 0.05 bpc of itself trained twice as long), and **it ends below
    the text's unigram bpc in every seed**, so the learning rate is one a transformer of
    that depth can train at, and Post-LN's trouble is its own. Verdict: at
    the deepest depth, Post-LN without warm-up has higher bpc than Pre-LN without warm-up,
    and warm-up narrows the gap (Post minus Pre, paired by seed, is smaller with warm-up
    than without)."""
    f = {**(NORM_QUICK if ctx.quick else NORM_DEFAULT), **form}
    depths, seeds, w = tuple(f["depths"]), f["seeds"], f["warmup"]
    if w < 1:
        raise UserError(f"experiment norm-placement: warmup must be >= 1 step, got {w!r}")
    configs = {0: _train(f, warmup=0), w: _train(f, warmup=w)}  # f's warmup is the warm-up arm's
    specs = [ctx.run_spec(_lm(ctx, f, depth=d, skip=_ADD, placement=p), configs[wu], seed)
             for wu in configs for p in ("pre", "post") for d in depths for seed in range(seeds)]
    reference = next(s for s in specs if s.train.warmup == 0 and s.model.placement == "pre"
                     and s.model.depth == depths[-1])
    rows = ctx.train(specs + [_longer(ctx, reference)])
    rows, long_rows = rows[:-1], rows[-1:]
    uniform = math.log2(ctx.data.vocab)

    def cell(p: str, d: int, wu: int) -> list[dict[str, Any]]:
        return sorted((r for r in _where(rows, placement=p, depth=d) if r["spec"]["train"].get("warmup", 0) == wu),
                      key=lambda r: r["seed"])

    def scores(p: str, d: int, wu: int) -> list[float]:  # by seed; diverged -> the uniform guess
        return [r["result"]["val_bpc"] if r["status"] == "complete" else uniform
                for r in cell(p, d, wu) if r["status"] in ("complete", "diverged")]

    table = []
    for wu in configs:
        for p in ("pre", "post"):
            for d in depths:
                mine = cell(p, d, wu)
                table.append({"placement": p, "depth": d, "warmup": wu,
                              **{f"val_bpc_{k}": v for k, v in _stats(scores(p, d, wu)).items()},
                              "diverged": sum(r["status"] == "diverged" for r in mine),
                              "curve": _curve(ctx, mine, "bpc")})
    deep = depths[-1]

    def gaps(wu: int) -> list[float]:  # Post minus Pre, seed by seed
        pre = {r["seed"]: s for r, s in zip([r for r in cell("pre", deep, wu) if r["status"] != "failed"],
                                            scores("pre", deep, wu))}
        post = {r["seed"]: s for r, s in zip([r for r in cell("post", deep, wu) if r["status"] != "failed"],
                                             scores("post", deep, wu))}
        return [post[k] - pre[k] for k in sorted(set(pre) & set(post))]

    worse = predict(scores("pre", deep, 0), scores("post", deep, 0), higher=True)  # post: higher bpc
    narrows = predict(gaps(0), gaps(w), higher=False)  # the gap is smaller with warm-up
    pre_deep = _bpc(cell("pre", deep, 0))
    unigram = unigram_bpc(ctx.data)
    reg = _both(_trained(cell("pre", deep, 0), long_rows, f"Pre-LN without warm-up at depth {deep}"),
                regime(f"Pre-LN without warm-up at depth {deep} ends below the text's unigram bpc ({unigram:.2f}) in "
                       f"every seed", len(pre_deep) == seeds and max(pre_deep) < unigram,
                       f"highest {max(pre_deep):.3f} bpc over {len(pre_deep)} complete runs" if pre_deep
                       else "no complete run"))
    verdict = decide([worse, narrows], reg["met"])
    cells = {(t["placement"], t["depth"], t["warmup"]): t for t in table}

    def line(p: str, wu: int) -> str:
        parts = []
        for d in depths:
            t = cells[(p, d, wu)]
            parts.append(f"{d}: {_text(scores(p, d, wu))}" + (f" ({t['diverged']} diverged)" if t["diverged"] else ""))
        return ", ".join(parts)

    outcome = (f"Validation bpc by depth, without warm-up: Pre-LN {line('pre', 0)}; Post-LN {line('post', 0)}. "
               f"With {w} warm-up steps: Pre-LN {line('pre', w)}; Post-LN {line('post', w)}. At depth {deep}: "
               f"{signed(worse.comparison, 'Post minus Pre without warm-up', unit='bpc', digits=3)}; "
               f"{signed(narrows.comparison, 'the gap with warm-up minus without', unit='bpc', digits=3)} "
               f"(gaps paired by seed; a diverged run counts as the uniform guess, {uniform:.2f} bpc; "
               f"{_setting({**f, 'warmup': 0}, seeds)}, cosine schedule)." + closing(verdict, reg))
    return {"claim": NORM_CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "unigram_bpc": unigram,
            "uniform_bpc": uniform, "table": table,
            "gaps": {"without_warmup": gaps(0), "with_warmup": gaps(w)}, "form": {**f, "depths": list(depths)}}
