"""The verdict: sentences generated from the stored numbers, each carrying the numbers it
rests on, so that the report never claims more than the store holds.

The question is "add (ResNet) or concatenate (DenseNet)?", so the headline compares
``add`` with ``dense``; the other strategies appear in the depth and gradient sentences
and in the best-per-depth lines. Accuracy differences are given in percentage points
with the standard error of the difference of two means over seeds,
sqrt(s_a^2 / n_a + s_b^2 / n_b).
"""

from __future__ import annotations

from ..skips import options_text

import math
from collections import defaultdict
from typing import Any

from ..results import stored_options, pct
from .content import ReportData

A, B = "add", "dense"  # the question's two answers


def _ratio(v: float | None) -> str:
    return "undefined (0/0)" if v is None else f"{v:.3g}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float | None]:
    """``b - a`` in points, and its standard error (None with fewer than 2 seeds a side)."""
    d = 100 * (b["test_accuracy_mean"] - a["test_accuracy_mean"])
    if a["complete"] < 2 or b["complete"] < 2:
        return d, None
    return d, 100 * math.sqrt(a["test_accuracy_std"] ** 2 / a["complete"] + b["test_accuracy_std"] ** 2 / b["complete"])


def _cells(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["skip"], r["depth"]): r for r in rows if r["test_accuracy_mean"] is not None}


def _group_phrase(data: ReportData, group: str) -> str:
    if group == "matched-params":
        return f"a matched budget of {data.budget:,} parameters" if data.budget else "a matched parameter budget"
    return f"equal width ({data.plan['model']['width']})" if data.plan else "equal width"


def add_vs_dense(data: ReportData, group: str) -> str | None:
    """Dense against add at every depth where both have results, in one sentence."""
    cell = _cells(data.group_rows(group))
    depths = sorted(d for (s, d) in cell if s == A and (B, d) in cell)
    if not depths:
        return None
    wins: dict[str, list[str]] = {A: [], B: []}
    ties = []
    seeds = set()
    for depth in depths:
        a, b = cell[(A, depth)], cell[(B, depth)]
        seeds |= {a["complete"], b["complete"]}
        d, se = _difference(a, b)
        text = f"{abs(d):.1f}" + ("" if se is None else f" +- {se:.1f}") + f" points at depth {depth}"
        if d == 0:
            ties.append(f"depth {depth}")
        else:
            wins[B if d > 0 else A].append(text)
    parts = [f"{w} beat {A if w == B else B} by {_and(t)}" for w, t in ((B, wins[B]), (A, wins[A])) if t]
    if ties:
        parts.append(f"they tied at {_and(ties)}")
    n = min(seeds), max(seeds)
    over = f"{n[0]} seed{'s' if n[0] > 1 else ''}" if n[0] == n[1] else f"{n[0]} to {n[1]} seeds"
    note = ("+- is the standard error of the difference" if n[0] > 1 else "one seed, so no error estimate")
    return f"At {_group_phrase(data, group)}, " + "; ".join(parts) + f" (test accuracy, mean over {over}; {note})."


def cost_sentence(data: ReportData) -> str | None:
    """What dense costs relative to add at equal width, at the deepest depth stored."""
    eq = {(c["skip"], c["depth"]): c for c in data.costs if c["group"] == "equal-width"}
    depths = sorted(d for (s, d) in eq if s == A and (B, d) in eq)
    if depths:
        D = depths[-1]
        a, b = eq[(A, D)], eq[(B, D)]
        return (f"At depth {D} and equal width {b['width']}, {B} ({options_text(stored_options(b))}) needs "
                f"{b['params'] / a['params']:.2f} times the parameters of {A} ({b['params']:,} vs {a['params']:,}), "
                f"{b['flops'] / a['flops']:.2f} times its FLOPs per sample and "
                f"{b['activation_bytes'] / a['activation_bytes']:.2f} times its activation memory, and copies "
                f"{b['concat_bytes'] / 2**20:.3g} MiB per training batch in concatenations (analytic).")
    cell = _cells(data.group_rows("equal-width"))  # no stored costs: parameters from the runs
    depths = sorted(d for (s, d) in cell if s == A and (B, d) in cell and cell[(s, d)]["params"])
    if not depths:
        return None
    D = depths[-1]
    a, b = cell[(A, D)], cell[(B, D)]
    return (f"At depth {D} and equal width {b['width']}, {B} needs {b['params'] / a['params']:.2f} times the "
            f"parameters of {A} ({b['params']:,} vs {a['params']:,}).")


def budget_sentence(data: ReportData) -> str | None:
    """The sizes the matched budget gave add and dense at the deepest depth."""
    rows = {(r["skip"], r["depth"]): r for r in data.group_rows("matched-params")}
    sizes = {(c["skip"], c["depth"]): c for c in data.costs if c["group"] == "matched-params"} or rows
    depths = sorted(d for (s, d) in sizes if s == A and (B, d) in sizes)
    if not depths:
        return None
    D = depths[-1]
    a, b = sizes[(A, D)], sizes[(B, D)]
    return (f"To fit the budget{f' of {data.budget:,} parameters' if data.budget else ''} at depth {D}, {A} gets "
            f"width {a['width']} and {B} width {b['width']} with {options_text(stored_options(b))}.")


def depth_sentence(data: ReportData) -> str | None:
    """How each strategy's accuracy changes from the shallowest to the deepest depth."""
    group = "matched-params" if data.group_rows("matched-params") else "equal-width"
    cell = _cells(data.group_rows(group))
    depths = sorted({d for (_, d) in cell})
    if len(depths) < 2:
        return None
    lo, hi = depths[0], depths[-1]
    skips = list(dict.fromkeys(s for (s, _) in cell))
    moves = [f"{s} {100 * cell[(s, lo)]['test_accuracy_mean']:.1f}% -> {100 * cell[(s, hi)]['test_accuracy_mean']:.1f}%"
             for s in skips if (s, lo) in cell and (s, hi) in cell]
    if not moves:
        return None
    return (f"From depth {lo} to depth {hi} (at {_group_phrase(data, group)}), mean test accuracy went: "
            + ", ".join(moves) + ".")


def gradient_sentence(data: ReportData) -> str | None:
    """The first/last weight-gradient ratio at init at the deepest depth measured."""
    if not data.gradients:
        return None
    D = max(g["depth"] for g in data.gradients)
    at = [g for g in data.gradients if g["depth"] == D]
    return (f"At init (equal width, depth {D}), the first block's weight gradient is "
            + ", ".join(f"{_ratio(g['first_last_ratio'])} for {g['skip']}" for g in at)
            + " times the last block's (near 1: the gradient reaches the first blocks; far below 1: it vanishes; "
              "far above 1: it grows toward the input).")


def verdict(data: ReportData) -> list[str]:
    """The verdict's sentences, most important first; each omitted when its data is missing."""
    lines = [add_vs_dense(data, "matched-params"), add_vs_dense(data, "equal-width")]
    if not any(lines):
        lines = ["No training runs are stored yet, so there is no verdict on accuracy." if not data.runs else
                 f"The store holds no {A} and {B} results of a study at the same depth, so there is no "
                 f"{A}-versus-{B} verdict."]
    lines += [depth_sentence(data), cost_sentence(data), budget_sentence(data), gradient_sentence(data)]
    return [line for line in lines if line]


def _acc(r: dict[str, Any]) -> str:
    return f"{r['skip']} {pct(r['test_accuracy_mean'], r['test_accuracy_std'])}%"


def best_per_depth(rows: list[dict[str, Any]]) -> list[str]:
    """Per depth: the best strategy by mean test accuracy, its margin over the next, and the last."""
    out = []
    by_depth: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["test_accuracy_mean"] is not None:
            by_depth[r["depth"]].append(r)
    for depth in sorted(by_depth):
        ranked = sorted(by_depth[depth], key=lambda r: -r["test_accuracy_mean"])
        line = f"depth {depth}: {_acc(ranked[0])}"
        if len(ranked) > 1:
            gap = 100 * (ranked[0]["test_accuracy_mean"] - ranked[1]["test_accuracy_mean"])
            line += f", {gap:.1f} points ahead of {_acc(ranked[1])}"
        if len(ranked) > 2:
            line += f"; last: {_acc(ranked[-1])}"
        out.append(line)
    return out
