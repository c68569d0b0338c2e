"""The report's figures, drawn from :class:`ReportData` alone and written as PNG and SVG.

Every figure takes its colours from :mod:`skiplab.palette` (one colour per strategy in
every figure of the project), labels its axes with units, puts depth and cost on log axes
(the study's depths span 2 to 50 and its costs several decades), and shows the spread
over seeds as error bars or bands. Matplotlib's object API (no pyplot): no global state,
no display needed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..experiments.figures import FIGURES as EXPERIMENT_FIGURES
from ..experiments.figures import experiment_figure, figure_stem
from ..palette import color
from ..plotting import depth_axis, dodge, positive, save_png_and_svg
from .content import GROUPS, ReportData
from .edf import bin_weights, edf
from ..errors import UserError

GROUP_MARKERS = {"equal-width": "o", "matched-params": "s"}
GROUP_NAMES = {"equal-width": "equal width", "matched-params": "matched budget"}


@dataclass(frozen=True)
class RenderedFigure:
    name: str  # file stem, e.g. "accuracy-vs-depth"
    section: str  # the report section it belongs to: cost | gradients | training | experiments
    title: str  # alt text and heading
    caption: str  # what it shows and how to read it
    png: Path
    svg: Path


# -- helpers ----------------------------------------------------------------------------
def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both counts: lower or equal cost
    (x) with higher or equal accuracy (y), one of them strictly. Ordered by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


_dodge, _depth_axis, _positive = dodge, depth_axis, positive


def _skips(items: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(d["skip"] for d in items))


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


# -- the figures ------------------------------------------------------------------------
def cost_vs_depth(data: ReportData) -> tuple[Figure, str] | None:
    costs = [c for c in data.costs if c["group"] == "equal-width"]
    if not costs:
        return None
    batch = data.plan["train"]["batch_size"] if data.plan else None
    per_batch = f"per batch of {batch}" if batch else "per batch"
    panels = (("parameters", lambda c: c["params"]),
              ("forward FLOPs per sample", lambda c: c["flops"]),
              (f"activation memory (MiB {per_batch})", lambda c: c["activation_bytes"] / 2**20),
              (f"bytes copied by concatenation (MiB {per_batch})", lambda c: c["concat_bytes"] / 2**20))
    depths = sorted({c["depth"] for c in costs})
    fig = _figure(11, 7.2)
    axes = fig.subplots(2, 2).ravel()
    for ax, (label, value) in zip(axes, panels):
        drawn = []
        for skip in _skips(costs):
            cs = sorted((c for c in costs if c["skip"] == skip), key=lambda c: c["depth"])
            ys = [_positive(value(c)) for c in cs]
            if all(math.isnan(y) for y in ys):
                continue
            ax.plot([c["depth"] for c in cs], ys, marker="o", ms=4, lw=1.8, color=color(skip), label=skip)
            drawn.append(skip)
            if label.startswith("activation") and all("activation_bytes_by_memory" in c for c in cs):
                # the concatenations' other bill: efficient beside naive, or naive where the study ran efficient
                trained = (cs[0].get("options") or {}).get("memory", "naive")
                path = next(m for m in cs[0]["activation_bytes_by_memory"] if m != trained)
                other = [_positive(c["activation_bytes_by_memory"][path] / 2**20) for c in cs]
                ax.plot([c["depth"] for c in cs], other, marker="o", ms=3, lw=1.4, ls="--", color=color(skip),
                        label=f"{skip}, memory={path}")
        _depth_axis(ax, depths)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
        if len(drawn) < len(_skips(costs)):
            ax.set_title("strategies that copy nothing are not drawn", fontsize="small")
    axes[1].legend(*axes[2].get_legend_handles_labels(), title="skip", fontsize="small", loc="upper left",
                   bbox_to_anchor=(1.01, 1.0))  # the activation panel draws every strategy and bill
    width = data.plan["model"]["width"] if data.plan else costs[0]["width"]
    fig.suptitle(f"Analytic cost against depth at equal width ({width}), log-log axes")
    return fig, ("Analytic cost of each strategy at equal width, from the cost model (exact counts, nothing "
                 "trained). On log-log axes a cost linear in depth is a line of slope 1, a quadratic one slope 2. "
                 "Strategies with equal costs lie on top of each other. Dashed: a concatenating strategy's "
                 "other activation bill, memory=\"efficient\" (each feature stored once, the concatenation "
                 "rebuilt in backward) beside the naive one trained, or naive where the study trained efficient.")


def gradient_ratio(data: ReportData) -> tuple[Figure, str] | None:
    grads = [g for g in data.gradients if g["first_last_ratio"] is not None]
    if not grads:
        return None
    skips = _skips(grads)
    fig = _figure(8.5, 4.8)
    ax = fig.add_subplot()
    for i, skip in enumerate(skips):
        gs = sorted((g for g in grads if g["skip"] == skip), key=lambda g: g["depth"])
        x = [_dodge(g["depth"], i, len(skips)) for g in gs]
        y = [g["first_last_ratio"] for g in gs]
        lo = [max(v - (g["first_last_ratio_min"] or v), 0) for v, g in zip(y, gs)]
        hi = [max((g["first_last_ratio_max"] or v) - v, 0) for v, g in zip(y, gs)]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", ms=5, lw=1.8, capsize=3, color=color(skip), label=skip)
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    _depth_axis(ax, sorted({g["depth"] for g in grads}))
    ax.set_yscale("log")
    ax.set_ylabel("first / last block weight-gradient norm")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="skip", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    undefined = sorted({g["skip"] for g in data.gradients} - set(skips))
    ax.set_title("At init, equal width; bars: min..max over seeds"
                 + (f"; {', '.join(undefined)}: 0/0, not drawn" if undefined else ""), fontsize="medium")
    return fig, ("Block 1's weight-gradient norm over the last block's, at initialisation. Near 1 (dotted): the "
                 "gradient reaches the first blocks as strongly as the last; far below 1: it vanishes on the way; "
                 "far above 1: it grows toward the input (as batch norm makes it do at init).")


def accuracy_vs_depth(data: ReportData) -> tuple[Figure, str] | None:
    M = data.metric  # test accuracy, or a language model's bpc (skiplab.metrics)
    groups = [g for g in GROUPS if any(r["score_mean"] is not None for r in data.group_rows(g))]
    if not groups:
        return None
    fig = _figure(5.2 * len(groups) + 1.3, 4.6)
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for ax, group in zip(axes, groups):
        rows = [r for r in data.group_rows(group) if r["score_mean"] is not None]
        skips = _skips(rows)
        for i, skip in enumerate(skips):
            rs = sorted((r for r in rows if r["skip"] == skip), key=lambda r: r["depth"])
            ax.errorbar([_dodge(r["depth"], i, len(skips)) for r in rs], [M.scale * r["score_mean"] for r in rs],
                        yerr=[M.scale * (r["score_std"] or 0) for r in rs], marker=GROUP_MARKERS[group], ms=5, lw=1.8,
                        capsize=3, color=color(skip), label=skip)
        _depth_axis(ax, sorted({r["depth"] for r in rows}))
        ax.set_title(f"at {GROUP_NAMES[group]}" + (f" ({data.budget:,} parameters)"
                                                   if group == "matched-params" and data.budget else ""))
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(M.label)
    axes[-1].legend(title="skip", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, f"{M.name.capitalize()} against depth; points: mean over seeds, bars: one standard deviation (none with one seed)."


def accuracy_vs_cost(data: ReportData) -> tuple[Figure, str] | None:
    M = data.metric
    sign = 1 if M.higher_is_better else -1  # the Pareto front keeps the better values
    rows = [r for g in GROUPS for r in data.group_rows(g) if r["score_mean"] is not None and r["params"]]
    if not rows:
        return None
    flops = {id(r): c["flops"] for r in rows if (c := data.cost_of(r))}
    panels = [("parameters", lambda r: r["params"])]
    if flops:
        panels.append(("forward FLOPs per sample", lambda r: flops.get(id(r))))
    fig = _figure(5.2 * len(panels) + 1.6, 4.6)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (label, cost) in zip(axes, panels):
        pts = [r for r in rows if cost(r)]
        for group in GROUPS:  # one artist per (group, strategy): fast to draw, small SVG
            for skip in _skips(pts):
                rs = [r for r in pts if r["group"] == group and r["skip"] == skip]
                if rs:
                    ax.errorbar([cost(r) for r in rs], [M.scale * r["score_mean"] for r in rs],
                                yerr=[M.scale * (r["score_std"] or 0) for r in rs], ls="none",
                                marker=GROUP_MARKERS[group], ms=5, color=color(skip), capsize=2, lw=1, alpha=0.9)
        front = [pts[i] for i in pareto_front([(cost(r), sign * r["score_mean"]) for r in pts])]
        ax.step([cost(r) for r in front], [M.scale * r["score_mean"] for r in front], where="post",
                color="black", lw=1.2, zorder=3)
        ax.scatter([cost(r) for r in front], [M.scale * r["score_mean"] for r in front], s=90,
                   facecolors="none", edgecolors="black", lw=1.2, zorder=4)
        ax.set_xscale("log")
        ax.set_xlabel(label + " (log scale)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(M.label)
    handles = [Line2D([], [], color=color(s), marker="o", ls="", label=s) for s in _skips(rows)]
    handles += [Line2D([], [], color="black", marker=GROUP_MARKERS[g], mfc="none", ls="", label=GROUP_NAMES[g])
                for g in GROUPS if any(r["group"] == g for r in rows)]
    handles.append(Line2D([], [], color="black", marker="o", mfc="none", ms=9, lw=1.2, label="Pareto front"))
    axes[-1].legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, (f"Each configuration's {M.name} (mean, bars: one standard deviation over seeds) against its "
                 "cost. Ringed and joined: the Pareto front, the configurations no other one beats with "
                 "equal or less cost.")


def training_curves(data: ReportData) -> tuple[Figure, str] | None:
    groups = [g for g in GROUPS if any(r["spec_hash"] in data.curves for r in data.group_rows(g))]
    if not groups:
        return None
    depths = sorted({r["depth"] for g in groups for r in data.group_rows(g) if r["spec_hash"] in data.curves})
    shown = sorted({depths[0], depths[len(depths) // 2], depths[-1]})  # shallowest, middle, deepest
    fig = _figure(4.2 * len(shown) + 1.3, 3.6 * len(groups))
    axes = fig.subplots(len(groups), len(shown), sharex=True, sharey=True, squeeze=False)
    skips_seen: list[str] = []
    M = data.metric
    for row, group in zip(axes, groups):
        for ax, depth in zip(row, shown):
            for r in data.group_rows(group):
                curve = data.curves.get(r["spec_hash"])
                if r["depth"] != depth or curve is None:
                    continue
                mean = [M.scale * v for v in curve.mean]
                std = [M.scale * v for v in curve.std]
                ax.plot(curve.steps, mean, marker=".", lw=1.6, color=color(r["skip"]))
                ax.fill_between(curve.steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=color(r["skip"]), alpha=0.15, lw=0)
                skips_seen.append(r["skip"])
            ax.set_title(f"{GROUP_NAMES[group]}, depth {depth}", fontsize="medium")
            ax.grid(True, alpha=0.3)
        row[0].set_ylabel(M.label)
    for ax in axes[-1]:
        ax.set_xlabel("training step (batches)")
    handles = [Line2D([], [], color=color(s), lw=2, label=s) for s in dict.fromkeys(skips_seen)]
    axes[0][-1].legend(handles=handles, title="skip", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, (f"{M.name.capitalize()} during training at depths {', '.join(map(str, shown))}: mean over seeds, band: "
                 "one standard deviation.")


def error_edf(data: ReportData) -> tuple[Figure, str] | None:
    """Per strategy, the complexity-normalised EDF of the error over its runs
    (Radosavovic et al., arXiv 1905.13214; :mod:`skiplab.report.edf`)."""
    M = data.metric
    points: dict[str, list[tuple[float, float]]] = {}
    left_out: dict[str, int] = {}
    for r in data.current_runs():
        skip, value, params = r["spec"]["model"]["skip"], r["result"].get(M.key), r["result"].get("params")
        if r["status"] == "complete" and value is not None and params:
            points.setdefault(skip, []).append((M.error(value), params))
        else:
            left_out[skip] = left_out.get(skip, 0) + 1
    if not points:
        return None
    skips = [s for s in dict.fromkeys([*_skips(data.rows), *points]) if s in points]
    every = [M.scale * e for pts in points.values() for e, _ in pts]
    margin = 0.03 * (max(every) - min(every)) or 0.5
    right = max(every) + margin  # every curve is drawn on to 1 past its last run
    fig = _figure(8.5, 4.8)
    ax = fig.add_subplot()
    for skip in skips:
        errors, sizes = zip(*points[skip])
        xs, ys = edf(errors, bin_weights(sizes))
        xs = [M.scale * x for x in xs]
        note = f", {left_out[skip]} not finished or diverged" if left_out.get(skip) else ""
        ax.step([xs[0], *xs, right], [0.0, *ys, ys[-1]], where="post", lw=1.8, color=color(skip),
                label=f"{skip} ({len(errors)} runs{note})")
    ax.set_xlim(min(every) - margin, right)
    ax.set_xlabel(M.error_label)
    ax.set_ylabel("share of runs with lower error\n(each parameter bin weighted equally)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(title="skip", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{M.error_label.split(' (')[0].capitalize()} EDF, complexity-normalised "
                 "(Radosavovic et al. 2019)", fontsize="medium")
    return fig, (f"Reading guide: a point (x, y) on a strategy's curve says that a share y of its runs reached "
                 f"{M.error_label.split(' (')[0]} x or better; a curve further up and to the left is the better "
                 "strategy across model sizes. Each strategy's runs are weighted so that every complexity bin "
                 "counts equally: complexity is trainable parameters, binned half a decade wide on a log scale "
                 "(edges at 10^(j/2)); a bin's m runs get weight 1/(k m) each, k the strategy's occupied bins. "
                 "Complete runs only (Radosavovic et al., On Network Design Spaces, arXiv 1905.13214).")


# name -> (section, title, drawing function), in the order the report shows them
FIGURES: dict[str, tuple[str, str, Callable[[ReportData], tuple[Figure, str] | None]]] = {
    "cost-vs-depth": ("cost", "Cost against depth", cost_vs_depth),
    "gradient-ratio": ("gradients", "Gradient ratio at init against depth", gradient_ratio),
    "accuracy-vs-depth": ("training", "Test accuracy against depth", accuracy_vs_depth),
    "accuracy-vs-cost": ("training", "Test accuracy against parameters and FLOPs", accuracy_vs_cost),
    "training-curves": ("training", "Test accuracy during training", training_curves),
    "error-edf": ("training", "Error distribution per strategy (EDF)", error_edf),
}


def write_figures(data: ReportData, folder: str | os.PathLike) -> list[RenderedFigure]:
    """Draw every figure the data allows into ``folder`` (PNG and SVG): the study's, then
    one per stored experiment (``experiment-NAME``, the same file ``skiplab experiment``
    writes). A figure the data does not allow is left out, and its file from an earlier
    report removed."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"report: cannot create {folder}: {e.strerror or e}") from None
    out = []
    for name, (section, title, draw) in FIGURES.items():
        png, svg = folder / f"{name}.png", folder / f"{name}.svg"
        drawn = draw(data)
        if drawn is None:
            png.unlink(missing_ok=True)
            svg.unlink(missing_ok=True)
            continue
        fig, caption = drawn
        save_png_and_svg(fig, png, svg)
        # the study's metric names the figure: test accuracy, or a language model's bpc
        title = title.replace("Test accuracy", data.metric.name.capitalize())
        out.append(RenderedFigure(name, section, title, caption, png, svg))
    drawn_experiments = set()
    for e in data.experiments:
        if e.name not in EXPERIMENT_FIGURES:
            continue
        try:
            fig = experiment_figure(e.name, e.result)
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
            continue  # a result stored in another shape (an older skiplab): its text is shown, no figure
        png, svg = folder / f"{figure_stem(e.name)}.png", folder / f"{figure_stem(e.name)}.svg"
        save_png_and_svg(fig, png, svg)
        title, caption, _ = EXPERIMENT_FIGURES[e.name]
        out.append(RenderedFigure(figure_stem(e.name), "experiments", title, caption, png, svg))
        drawn_experiments.add(e.name)
    for name in EXPERIMENT_FIGURES.keys() - drawn_experiments:
        for ext in ("png", "svg"):
            (folder / f"{figure_stem(name)}.{ext}").unlink(missing_ok=True)
    return out
