"""One figure per named experiment, drawn from its stored result dict alone (what
``run_experiment`` returns and ``Store.experiments()`` gives back), so a figure can be
redrawn from the store at any time: ``skiplab experiment NAME`` writes it next to the
store, and the report redraws the latest stored result of every experiment.

Strategies keep their colour from :mod:`skiplab.palette`; U-Net merges borrow the colour
of the strategy they resemble (none: plain, add: add, concat: dense). Matplotlib's object
API (no pyplot): no global state, no display needed. A missing number (a run that did not
finish) is a gap, never a zero.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..palette import color
from ..plotting import depth_axis, dodge, number, positive, save_png_and_svg
from ..errors import UserError

MERGE_COLORS = {"none": color("plain"), "add": color("add"), "concat": color("dense")}

Result = dict[str, Any]


# -- helpers ----------------------------------------------------------------------------
def _figure(width: float, height: float, result: Result, title: str) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    form = " (quick form)" if result.get("quick") else ""
    verdict = f"\nverdict: {result['verdict']}" if result.get("verdict") else ""  # as decided by .outcome
    fig.suptitle(f"{result.get('experiment', '')}{form}: {title}".lstrip(": ") + verdict)
    return fig


_num, _positive, _dodge, _depth_axis = number, positive, dodge, depth_axis


def _pct(v: Any) -> float:
    return 100 * _num(v)


def _count(n: float) -> str:
    """20000 -> '20k', 1500000 -> '1.5M'."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def _grid(ax: Axes) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.set_axisbelow(True)


def _legend(ax: Axes, **kw) -> None:
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), **kw)


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _bar_labels(ax: Axes, bars, texts: list[str]) -> None:
    for bar, text in zip(bars, texts):
        if text and math.isfinite(bar.get_height()):
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize="small")


# -- the figures ------------------------------------------------------------------------
def equivalence(result: Result) -> Figure:
    rows = result["rows"]
    names = [f"depth {r['depth']}\nwidth {r['width']}" for r in rows]
    x = list(range(len(rows)))
    fig = _figure(12.5, 4.4, result, "a trained add network's dense copy, and the reverse")
    a, b, c = fig.subplots(1, 3)

    diffs = [_positive(r["max_abs_diff"]) for r in rows]
    a.plot(x, diffs, ls="none", marker="o", ms=9, color=color("dense"))
    for i, d in zip(x, diffs):
        if math.isfinite(d):
            a.annotate(f"{d:.1e}", (i, d), xytext=(0, 8), textcoords="offset points", ha="center", fontsize="small")
    a.set_yscale("log")
    finite = [d for d in diffs if math.isfinite(d)] or [1e-6]
    a.set_ylim(min(finite) / 30, max(finite) * 30)
    a.set_xlim(-0.6, len(rows) - 0.4)
    a.set_xticks(x, names)
    a.set_ylabel("max |add output - dense copy output|\n(logits, test set; log scale)")
    a.set_title("output difference, add vs its dense copy", fontsize="medium")
    _grid(a)

    w = 0.38
    b.bar([i - w / 2 for i in x], [_num(r["add_params"]) for r in rows], w, color=color("add"), label="add")
    dense_bars = b.bar([i + w / 2 for i in x], [_num(r["dense_params"]) for r in rows], w, color=color("dense"),
                       label="dense copy")
    _bar_labels(b, dense_bars, [f"{_num(r['param_ratio']):.1f}x" for r in rows])
    b.set_xticks(x, names)
    b.set_ylabel("parameters")
    b.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    b.set_title("parameters (labels: dense / add)", fontsize="medium")
    b.margins(y=0.12)
    b.legend(fontsize="small", loc="upper left")
    _grid(b)

    own = c.bar([i - w / 2 for i in x], [_pct(r["reverse_relative_error"]) for r in rows], w, color=color("dense"),
                label="dense trained on its own")
    _bar_labels(c, own, [f"{_pct(r['reverse_relative_error']):.0f}%" for r in rows])
    if all("reverse_check_of_emulation" in r for r in rows):
        check = c.bar([i + w / 2 for i in x], [_pct(r["reverse_check_of_emulation"]) for r in rows], w,
                      color=color("add"), label="dense copy of add (a check: 0)")
        _bar_labels(c, check, [f"{_pct(r['reverse_check_of_emulation']):.1f}%" for r in rows])
    c.set_xticks(x, names)
    c.set_ylabel("relative error of the best add layer (%)")
    c.set_title("the reverse, at equal width", fontsize="medium")
    top = max([v for v in (_pct(r["reverse_relative_error"]) for r in rows) if math.isfinite(v)] or [1])
    c.set_ylim(0, top * 1.45)
    c.legend(fontsize="small", loc="upper left")
    _grid(c)
    return fig


def degradation(result: Result) -> Figure:
    table = result["table"]
    norms = _unique(t["norm"] for t in table)
    skips = _unique(t["skip"] for t in table)
    depths = sorted({t["depth"] for t in table})
    fig = _figure(5.2 * len(norms) + 1.6, 4.6, result, "error against depth, plain vs add")
    axes = fig.subplots(1, len(norms), sharey=True, squeeze=False)[0]
    for ax, norm in zip(axes, norms):
        for i, skip in enumerate(skips):
            ts = sorted((t for t in table if t["norm"] == norm and t["skip"] == skip), key=lambda t: t["depth"])
            for split, ls, marker, k in (("train", "-", "o", 2 * i), ("test", "--", "s", 2 * i + 1)):
                ax.errorbar([_dodge(t["depth"], k, 2 * len(skips)) for t in ts],
                            [_pct(t[f"{split}_error"]) for t in ts],
                            yerr=[0 if t.get(f"{split}_error_std") is None else _pct(t[f"{split}_error_std"])
                                  for t in ts],
                            color=color(skip), ls=ls, marker=marker, ms=5, lw=1.8, capsize=3)
        _depth_axis(ax, depths)
        ax.set_title(f"norm: {norm}", fontsize="medium")
        _grid(ax)
    axes[0].set_ylabel("error (%), mean over seeds")
    handles = [Line2D([], [], color=color(s), lw=2, label=s) for s in skips]
    handles += [Line2D([], [], color="black", ls="-", marker="o", label="training error"),
                Line2D([], [], color="black", ls="--", marker="s", label="test error")]
    axes[-1].legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def lesion(result: Result) -> Figure:
    rows = result["rows"]
    skips = _unique(r["skip"] for r in rows)
    depth = max(len(r["lesioned_accuracy"]) for r in rows)
    fig = _figure(9.5, 4.8, result, "test accuracy with one block removed")
    ax = fig.add_subplot()
    for skip in skips:
        mine = [r for r in rows if r["skip"] == skip]
        blocks = list(range(1, depth + 1))
        per_block = [[_pct(r["lesioned_accuracy"][b - 1]) for r in mine if b <= len(r["lesioned_accuracy"])]
                     for b in blocks]
        mean = [sum(v) / len(v) if v else math.nan for v in per_block]
        lo = [m - min(v) if v else 0 for m, v in zip(mean, per_block)]
        hi = [max(v) - m if v else 0 for m, v in zip(mean, per_block)]
        ax.errorbar(blocks, mean, yerr=[lo, hi] if len(mine) > 1 else None, color=color(skip), marker="o", ms=5,
                    lw=1.8, capsize=3, label=f"{skip} ({len(mine)} seed{'s' if len(mine) != 1 else ''})")
        base = [_pct(r["test_accuracy"]) for r in mine]
        ax.axhline(sum(base) / len(base), color=color(skip), ls="--", lw=1.2)
    ax.set_xticks(range(1, depth + 1))
    ax.set_xlabel("removed block (1 = nearest the input)")
    ax.set_ylabel("test accuracy (%)")
    _grid(ax)
    handles = ax.get_legend_handles_labels()[0]
    handles.append(Line2D([], [], color="black", ls="--", lw=1.2, label="no block removed"))
    ax.legend(handles=handles, title="skip", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def rezero(result: Result) -> Figure:
    table = result["table"]
    target = result.get("target_loss")
    skips = _unique(t["skip"] for t in table)
    depths = sorted({t["depth"] for t in table})
    cell = {(t["skip"], t["depth"]): t for t in table}
    fig = _figure(12, 4.6, result, f"steps to a training loss of {target}")
    a, b = fig.subplots(1, 2)
    reached = [_num(t["steps_to_target"]) for t in table if t.get("reached")]
    top = max([v for v in reached if math.isfinite(v)] or [1]) * 1.3
    w = 0.8 / len(skips)
    for i, skip in enumerate(skips):
        for j, depth in enumerate(depths):
            t = cell.get((skip, depth))
            if t is None:
                continue
            x = j + (i - (len(skips) - 1) / 2) * w
            if t.get("reached"):
                bar = a.bar(x, _num(t["steps_to_target"]), w * 0.92, color=color(skip))
                partial = t["reached"] < t.get("seeds", t["reached"])
                _bar_labels(a, bar, [f"{_num(t['steps_to_target']):.0f}"
                                     + (f"\n{t['reached']}/{t['seeds']} seeds" if partial else "")])
            else:  # never reached: an empty hatched bar to the top, saying so
                a.bar(x, top, w * 0.92, facecolor="none", edgecolor=color(skip), hatch="//", lw=1.2)
                a.text(x, top / 2, "never", rotation=90, ha="center", va="center", fontsize="small",
                       bbox=dict(facecolor="white", edgecolor="none", pad=1))
    a.set_xticks(range(len(depths)), [f"depth {d}" for d in depths])
    a.set_ylim(0, top * 1.08)
    if not any(math.isfinite(v) for v in reached):
        a.set_yticks([])  # nothing reached the target: there is no step count to read
    a.set_ylabel(f"training steps (batches) to loss <= {target}")
    a.set_title("fewer is better; hatched: never reached", fontsize="medium")
    _grid(a)

    for i, skip in enumerate(skips):
        ts = [cell[(skip, d)] for d in depths if (skip, d) in cell]
        b.plot([_dodge(t["depth"], i, len(skips)) for t in ts], [_positive(t.get("final_train_loss")) for t in ts],
               color=color(skip), marker="o", ms=6, lw=1.8, label=skip)
    if target is not None:
        b.axhline(target, color="black", ls="--", lw=1, label=f"target ({target})")
    b.set_yscale("log")
    _depth_axis(b, depths)
    b.set_ylabel("final training loss (cross-entropy, log scale)")
    b.set_title("where each ended", fontsize="medium")
    _grid(b)
    _legend(b, title="skip")
    return fig


def deep_supervision(result: Result) -> Figure:
    table = result["table"]
    fig = _figure(8.5, 4.6, result, f"accuracy at depth {table[0]['depth']}")
    ax = fig.add_subplot()
    w = 0.38
    labels = []
    for i, t in enumerate(table):
        k = t.get("aux_every") or 0
        labels.append(t["skip"] + (f"\n+ aux head every {k}" if k else ""))
        hatch = "//" if k else None
        test = ax.bar(i - w / 2, _pct(t["test_accuracy"]), w, color=color(t["skip"]), hatch=hatch, edgecolor="white")
        train = ax.bar(i + w / 2, _pct(t["train_accuracy"]), w, color=color(t["skip"]), alpha=0.45, hatch=hatch,
                       edgecolor="white")
        _bar_labels(ax, test, [f"{_pct(t['test_accuracy']):.1f}"])
        _bar_labels(ax, train, [f"{_pct(t['train_accuracy']):.1f}"])
    ax.set_xticks(range(len(table)), labels)
    ax.set_ylabel("accuracy (%), mean over seeds")
    ax.margins(y=0.12)
    _grid(ax)
    ax.legend(handles=[Patch(color="#555555", label="test"), Patch(color="#555555", alpha=0.45, label="train"),
                       Patch(facecolor="#555555", hatch="//", edgecolor="white", label="with auxiliary heads")],
              fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def parameter_efficiency(result: Result) -> Figure:
    table = result["table"]
    skips = _unique(t["skip"] for t in table)
    fig = _figure(8.5, 4.6, result, "test accuracy against parameters")
    ax = fig.add_subplot()
    for skip in skips:
        ts = sorted((t for t in table if t["skip"] == skip and t.get("params")), key=lambda t: t["params"])
        ax.plot([t["params"] for t in ts], [_pct(t["test_accuracy"]) for t in ts], color=color(skip), marker="o",
                ms=6, lw=1.8, label=skip)
    budgets = sorted({t["budget"] for t in table if t.get("budget")})
    for budget in budgets:
        ax.axvline(budget, color="#999999", ls=":", lw=1)
    ax.set_xscale("log")
    if budgets:
        ax.xaxis.set_major_locator(FixedLocator(budgets))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
        ax.set_xlim(min(budgets) / 1.5, max(budgets) * 1.5)
    ax.set_xlabel("parameters (log scale; dotted: the budgets)")
    ax.set_ylabel("test accuracy (%), mean over seeds")
    _grid(ax)
    _legend(ax, title="skip")
    return fig


def long_skips(result: Result) -> Figure:
    summary = result["summary"]
    noisy = result.get("noisy_mse")
    fig = _figure(11, 4.4, result, "U-Net denoising error against cost, per merge"
                  + (f" (noisy input: {_num(noisy):.3f})" if noisy is not None else ""))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "flops", "forward FLOPs per sample")):
        for merge, s in summary.items():
            ax.errorbar([_num(s[key])], [_num(s["test_mse"])], yerr=[_num(s.get("test_mse_std") or 0)],
                        color=MERGE_COLORS.get(merge, "#333333"), marker="o", ms=8, capsize=4, lw=1.5, ls="none",
                        label=merge)
        ax.set_xlabel(label)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
        ax.margins(x=0.25, y=0.2)
        _grid(ax)
    axes[0].set_ylabel("test MSE / signal variance\n(mean +- std over seeds)")
    _legend(axes[1], title="long-skip merge")
    return fig


def seed_costs(result: Result) -> Figure:
    per_block = result["per_block_flops"]
    fig = _figure(12, 4.6, result, "the answers' cost arithmetic, from the cost model")
    a, b = fig.subplots(1, 2, width_ratios=(3, 2))
    for skip, flops in per_block.items():
        a.plot(range(1, len(flops) + 1), [_positive(f) for f in flops], color=color(skip), marker="o", ms=5, lw=1.8,
               label=skip)
    depth = max((len(f) for f in per_block.values()), default=1)
    a.set_yscale("log")
    a.set_xticks(range(1, depth + 1))
    a.set_xlabel("block")
    a.set_ylabel("forward FLOPs per sample in the block\n(log scale)")
    a.set_title("per-block cost of a conv network: channels doubled, halved, kept", fontsize="medium")
    _grid(a)
    a.legend(title="skip", fontsize="small", loc="upper left")

    ten = result["ten_layer_blocks"]
    bars = b.bar(list(ten), [_num(v) for v in ten.values()], color=[color(s) for s in ten], width=0.6)
    base = _num(ten.get("add", math.nan))
    _bar_labels(b, bars, [f"{_count(v)}" + (f" ({v / base:.1f}x)" if math.isfinite(base) and base else "")
                          for v in ten.values()])
    b.set_ylabel("block parameters")
    b.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    b.set_xlabel("skip")
    b.set_title("answer 2's 10-layer example", fontsize="medium")
    b.margins(y=0.12)
    _grid(b)
    return fig


PLACEMENT_COLORS = {"pre": color("add"), "post": color("dense")}  # Pre-LN, Post-LN


def _curves(ax: Axes, curves: list[tuple[dict[str, Any], str, str, str]]) -> None:
    """Mean curves over training steps: (curve {"steps", "mean"}, colour, line style, label),
    with their legend; a panel without any says so."""
    drawn = 0
    for curve, c, ls, label in curves:
        if curve and curve.get("steps"):
            ax.plot(curve["steps"], [_num(v) for v in curve["mean"]], color=c, ls=ls, lw=1.8, marker="o", ms=3,
                    label=label)
            drawn += 1
    ax.set_xlabel("training step")
    _grid(ax)
    if drawn:
        _legend(ax)
    else:
        ax.text(0.5, 0.5, "no curves stored", transform=ax.transAxes, ha="center", va="center")


def _log_plain(ax: Axes) -> None:
    """A log y axis labelled 1, 1.5, 2, ... rather than 10^0 (gains span little here)."""
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)


def denseformer(result: Result) -> Figure:
    table = result["table"]
    fig = _figure(11.5, 4.4, result, "validation bpc, DenseFormer (dwa) vs add")
    a, b = fig.subplots(1, 2)
    labels = [f"{t['skip']}\ndepth {t['depth']}" for t in table]
    x = list(range(len(table)))
    bars = a.bar(x, [_num(t.get("val_bpc_mean")) for t in table], 0.6, color=[color(t["skip"]) for t in table],
                 yerr=[_num(t.get("val_bpc_std")) if t.get("val_bpc_std") is not None else 0 for t in table],
                 capsize=4)
    for bar, t in zip(bars, table):  # above the error bar
        if t.get("val_bpc_mean") is not None:
            top = _num(t["val_bpc_mean"]) + (_num(t["val_bpc_std"]) if t.get("val_bpc_std") is not None else 0)
            a.annotate(f"{_num(t['val_bpc_mean']):.3f}", (bar.get_x() + bar.get_width() / 2, top), xytext=(0, 3),
                       textcoords="offset points", ha="center", va="bottom", fontsize="small")
    finite = [v for v in (_num(t.get("val_bpc_mean")) for t in table) if math.isfinite(v)]
    if finite:  # bpc differences are small against the value: zoom to them
        lo, hi = min(finite), max(finite)
        pad = max(hi - lo, 0.01)
        a.set_ylim(lo - 1.5 * pad, hi + 1.5 * pad)
    a.set_xticks(x, labels)
    a.set_ylabel("validation bpc (bits per character)\nmean +- std over seeds; lower is better")
    a.set_title("after training (y axis zoomed)", fontsize="medium")
    _grid(a)
    # the first configuration of each strategy drawn solid, a deeper one of the same strategy dashed
    seen: set[str] = set()
    styles = []
    for t in table:
        styles.append("--" if t["skip"] in seen else "-")
        seen.add(t["skip"])
    _curves(b, [(t.get("curve"), color(t["skip"]), style, f"{t['skip']} depth {t['depth']}")
                for t, style in zip(table, styles)])
    b.set_ylabel("validation bpc, mean over seeds")
    b.set_title("during training", fontsize="medium")
    return fig


def hyper_gain(result: Result) -> Figure:
    table = result["table"]
    skips = _unique(t["skip"] for t in table)
    depths = sorted({t["depth"] for t in table})
    fig = _figure(12, 4.6, result, "composite residual gain of prod H_res")
    a, b = fig.subplots(1, 2)
    for i, skip in enumerate(skips):
        ts = sorted((t for t in table if t["skip"] == skip), key=lambda t: t["depth"])
        for k, (key, ls, marker) in enumerate((("forward", "-", "o"), ("backward", "--", "s"))):
            a.errorbar([_dodge(t["depth"], 2 * i + k, 2 * len(skips)) for t in ts],
                       [_positive(t.get(f"gain_{key}_mean")) for t in ts],
                       yerr=[_num(t.get(f"gain_{key}_std")) if t.get(f"gain_{key}_std") is not None else 0
                             for t in ts],
                       color=color(skip), ls=ls, marker=marker, ms=5, lw=1.8, capsize=3)
        a.plot([t["depth"] for t in ts], [_positive(t.get("init_forward")) for t in ts], color=color(skip), ls=":",
               lw=1.2)
    _log_plain(a)
    _depth_axis(a, depths, "depth (blocks; 2 sublayers each)")
    a.set_ylabel("gain after the last sublayer (log scale)\nmean +- std over seeds")
    a.set_title("after training; dotted: at init", fontsize="medium")
    _grid(a)
    handles = [Line2D([], [], color=color(s), lw=2, label=s) for s in skips]
    handles += [Line2D([], [], color="black", ls="-", marker="o", label="forward (max row sum)"),
                Line2D([], [], color="black", ls="--", marker="s", label="backward (max column sum)"),
                Line2D([], [], color="black", ls=":", label="forward, at init")]
    a.legend(handles=handles, fontsize="small", loc="best")
    deep = depths[-1] if depths else None
    shown = [t for t in table if t["depth"] == deep]
    _curves(b, [(t.get("curve_forward"), color(t["skip"]), "-", f"{t['skip']} forward") for t in shown]
            + [(t.get("curve_backward"), color(t["skip"]), "--", f"{t['skip']} backward") for t in shown])
    _log_plain(b)
    b.set_ylabel("gain (log scale), mean over seeds")
    b.set_title(f"during training, depth {deep}", fontsize="medium")
    return fig


def norm_placement(result: Result) -> Figure:
    table = result["table"]
    depths = sorted({t["depth"] for t in table})
    warmups = sorted({t["warmup"] for t in table})
    fig = _figure(12, 4.6, result, "validation bpc, Pre-LN vs Post-LN, with and without warm-up")
    a, b = fig.subplots(1, 2)
    series = [(p, w) for w in warmups for p in ("pre", "post")]
    for i, (p, w) in enumerate(series):
        ts = sorted((t for t in table if t["placement"] == p and t["warmup"] == w), key=lambda t: t["depth"])
        a.errorbar([_dodge(t["depth"], i, len(series)) for t in ts], [_num(t.get("val_bpc_mean")) for t in ts],
                   yerr=[_num(t.get("val_bpc_std")) if t.get("val_bpc_std") is not None else 0 for t in ts],
                   color=PLACEMENT_COLORS[p], ls="--" if w else "-", marker="s" if w else "o", ms=5, lw=1.8,
                   capsize=3, label=f"{p}-LN, " + (f"warm-up {w} steps" if w else "no warm-up"))
        for t in ts:
            if t.get("diverged"):
                a.annotate(f"{t['diverged']} diverged", (t["depth"], _num(t.get("val_bpc_mean"))), xytext=(4, 4),
                           textcoords="offset points", fontsize="small", color=PLACEMENT_COLORS[p])
    _depth_axis(a, depths)
    a.set_ylabel("validation bpc, mean +- std over seeds\n(diverged = uniform guess); lower is better")
    # the unigram bpc in words: a line that far above the runs would squash their differences
    unigram = f"; unigram {_num(result['unigram_bpc']):.2f}" if result.get("unigram_bpc") is not None else ""
    a.set_title(f"after training{unigram}", fontsize="medium")
    _grid(a)
    a.legend(fontsize="small", loc="upper left")
    deep = depths[-1] if depths else None
    _curves(b, [(t.get("curve"), PLACEMENT_COLORS[t["placement"]], "--" if t["warmup"] else "-",
                 f"{t['placement']}-LN" + (f", warm-up {t['warmup']}" if t["warmup"] else ""))
                for t in table if t["depth"] == deep])
    b.set_ylabel("validation bpc, mean over complete seeds")
    b.set_title(f"during training, depth {deep}", fontsize="medium")
    return fig


def dense_memory(result: Result) -> Figure:
    table, curves, budget = result["table"], result["curves"], result["budget_bytes"]
    fig = _figure(11, 4.6, result, "the deepest net within one activation-memory budget")
    left, right = fig.subplots(1, 2)
    styles = {0: "-", 1: "--", 2: "-"}
    shown = min(len(next(iter(curves.values()))), max(12, round(1.5 * max(t["depth"] for t in table))))
    for i, t in enumerate(table):
        ys = [b / 2**20 for b in curves[t["config"]][:shown]]
        left.plot(range(1, len(ys) + 1), ys, color=color(t["skip"]), ls=styles.get(i, "-"), lw=1.8, label=t["config"])
        if t["depth"]:
            left.plot([t["depth"]], [ys[t["depth"] - 1]], "o", color=color(t["skip"]), ms=7)
    left.axhline(budget / 2**20, color="black", ls=":", lw=1.2, label="budget")
    left.set_yscale("log")
    left.set_xlabel("depth (blocks)")
    left.set_ylabel(f"activation memory (MiB, batch {result['batch']})")
    left.set_title("memory against depth; dots: the deepest within budget", fontsize="medium")
    _grid(left)
    left.legend(fontsize="small", loc="lower right")
    xs = range(len(table))
    bars = right.bar(xs, [_pct(t["test_accuracy"]) for t in table],
                     yerr=[0 if t["test_accuracy_std"] is None else _pct(t["test_accuracy_std"]) for t in table],
                     color=[color(t["skip"]) for t in table], capsize=4,
                     hatch=None, edgecolor="black", linewidth=0.6)
    for bar, t in zip(bars, table):
        if t["memory"] == "efficient":
            bar.set_hatch("//")
    right.set_xticks(list(xs), [f"{t['config']}\ndepth {t['depth']}" for t in table], fontsize="small")
    accs = [_pct(t["test_accuracy"]) for t in table if t["test_accuracy"] is not None]
    if accs:
        right.set_ylim(max(0.0, min(accs) - 10), min(100.0, max(accs) + 5))
    right.set_ylabel("test accuracy (%), mean +- std over seeds")
    right.set_title("accuracy at the same memory", fontsize="medium")
    _grid(right)
    return fig


# name -> (title, caption, drawing function), one per experiment of skiplab.experiments.EXPERIMENTS
FIGURES: dict[str, tuple[str, str, Callable[[Result], Figure]]] = {
    "equivalence": ("Equivalence: concatenation emulating addition", (
        "Left: the largest difference between a trained add network's outputs and its dense copy's (weights "
        "repeated), on log axes; near float rounding means the same function. Middle: the parameters each needs, "
        "labelled with dense/add. Right: the reverse, the relative error of the best add-style layer against a "
        "dense layer that weighs its inputs differently."), equivalence),
    "degradation": ("Degradation: error against depth", (
        "Training (solid) and test (dashed) error of plain and add MLPs against depth, one panel per norm; points: "
        "mean over seeds, bars: one standard deviation. Degradation is training error rising with depth."),
        degradation),
    "lesion": ("Lesion: removing one block at test time", (
        "Test accuracy after removing one block (x: which one), per strategy; dashed: the same network with no "
        "block removed. A curve far below its dashed line is a network that depends on that block."), lesion),
    "rezero": ("ReZero: steps to a target training loss", (
        "Left: training steps until the training loss first reaches the target, per depth and strategy (mean over "
        "the seeds that reached it); hatched: never reached. Right: the final training loss, log scale; dashed: "
        "the target."), rezero),
    "deep-supervision": ("Deep supervision: auxiliary heads on a deep plain network", (
        "Test (solid) and training (light) accuracy of a deep plain network, the same with an auxiliary head every "
        "few blocks (hatched), and add; mean over seeds."), deep_supervision),
    "parameter-efficiency": ("Parameter efficiency: accuracy against parameters", (
        "Test accuracy against parameters, per strategy, each matched to the same budgets (dotted); log x axis; "
        "mean over seeds. Higher and further left is more efficient."), parameter_efficiency),
    "long-skips": ("Long skips: U-Net merges on denoising", (
        "Denoising error (MSE over the signal's variance; lower is better) of a small 1-D U-Net whose long skips "
        "add, concatenate, or are absent, against its parameters and FLOPs; bars: one standard deviation over "
        "seeds."), long_skips),
    "denseformer": ("DenseFormer: depth-weighted averages against depth", (
        "Left: validation bits per character (lower is better) of residual transformers (add) at depth d and 1.5d "
        "and a DenseFormer (dwa) at depth d, mean +- std over seeds (the y axis is zoomed to the differences). "
        "Right: validation bpc during training, mean over seeds."), denseformer),
    "hyper-gain": ("Hyper-connections vs mHC: the composite residual gain", (
        "Left: the gain of the product of the residual mixing matrices H_res after the last sublayer (forward: "
        "largest absolute row sum, solid; backward: column sum, dashed) after training, against depth, log scale; "
        "dotted: at init. mHC's doubly stochastic matrices keep the forward gain at 1 by construction. Right: the "
        "gain during training at the deepest depth, mean over seeds."), hyper_gain),
    "norm-placement": ("Norm placement: Pre-LN vs Post-LN, with and without warm-up", (
        "Left: validation bits per character (lower is better) of Pre-LN and Post-LN residual transformers against "
        "depth, without (solid) and with (dashed) a linear learning-rate warm-up, mean +- std over seeds; a "
        "diverged run counts as the uniform guess; the panel's title gives the text's unigram bpc (a context-free "
        "model's). Right: validation bpc during training at the deepest depth."), norm_placement),
    "dense-memory": ("Dense memory: the deepest net within one memory budget", (
        "Left: activation memory for one training batch against depth (log scale) of a dense MLP whose "
        "concatenation is naive (solid) or stores each feature once (dashed, memory=\"efficient\"), and of add; "
        "dotted: the budget, the naive dense net's at its depth; dots: each kind's deepest net within it. Right: "
        "their test accuracy, mean +- std over seeds (hatched: efficient)."), dense_memory),
    "seed-costs": ("Seed costs: the answers' cost arithmetic", (
        "Left: forward FLOPs of each block of a 1-D conv network whose concatenation doubles the channels, halves "
        "and carries half, or adds (log scale: a constant factor per block is a straight line). Right: block "
        "parameters of answer 2's 10-layer example, labelled with their ratio to add."), seed_costs),
}


def figure_stem(name: str) -> str:
    """The file stem of an experiment's figure: ``experiment-NAME``."""
    return f"experiment-{name}"


def experiment_figure(name: str, result: Result) -> Figure:
    """Draw experiment ``name``'s figure from its result dict."""
    if name not in FIGURES:
        raise UserError(f"experiment: no figure for {name!r}; known: {', '.join(FIGURES)}")
    return FIGURES[name][2](result)


save_figure = save_png_and_svg


def write_experiment_figure(name: str, result: Result, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Draw experiment ``name``'s figure into ``folder`` as ``experiment-NAME.png`` and
    ``.svg``; returns (png, svg)."""
    folder = Path(folder)
    fig = experiment_figure(name, result)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"figure: cannot create {folder}: {e.strerror or e}") from None
    png, svg = folder / f"{figure_stem(name)}.png", folder / f"{figure_stem(name)}.svg"
    save_figure(fig, png, svg)
    return png, svg
