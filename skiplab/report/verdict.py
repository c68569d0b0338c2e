"""The verdict: sentences generated from the stored numbers, each carrying the numbers it
rests on, so that the report never claims more than the store holds.

The question is "add (ResNet) or concatenate (DenseNet)?", so the headline compares
``add`` with ``dense``; the other strategies appear in the depth and gradient sentences
and in the best-per-depth lines. Every comparison goes through :mod:`skiplab.stats`: a
difference is a win only when Welch's t-test over seeds separates it at the stated level,
otherwise it is "tied"; with one seed there is no test and the sentence says so.
Differences are in percentage points, with the standard error of the difference of two
means, sqrt(s_a^2 / n_a + s_b^2 / n_b).

A report makes many comparisons (a study's: about 180), so at 0.05 a few "beat"s would
come from noise alone. All of one report's comparisons form one family
(:class:`skiplab.stats.Family`), corrected together by Holm's method: the verdict's words
and its leaders table use the adjusted p; the tables keep the raw numbers.

A store of language models is judged by validation bits per character instead (each
aggregated row names its ``metric``: :mod:`skiplab.metrics`): differences are in bpc and
the lower bpc wins ("dwa beat add by 0.050 +- 0.010 bpc" means dwa's bpc is lower).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..metrics import ACCURACY, Metric, metric_of
from ..results import pct, stored_options
from ..skips import ADD, STRATEGIES, options_text
from ..stats import Family, best_of, compare, mean_std, p_text, spread_text, test_statement
from .content import GROUPS, ReportData

A, B = "add", "dense"  # the question's two answers


def _ratio(v: float | None) -> str:
    return "undefined (0/0)" if v is None else f"{v:.3g}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cells(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["skip"], r["depth"]): r for r in rows if r["score_mean"] is not None}


def _seeds(rows: list[dict[str, Any]]) -> str:
    n = sorted({r["complete"] for r in rows})
    return f"{n[0]} seed{'s' if n[0] != 1 else ''}" if len(n) == 1 else f"{n[0]} to {n[-1]} seeds"


def _group_phrase(data: ReportData, group: str) -> str:
    if group == "matched-params":
        return f"a matched budget of {data.budget:,} parameters" if data.budget else "a matched parameter budget"
    return f"equal width ({data.plan['model']['width']})" if data.plan else "equal width"


def _untested(name_a: str, name_b: str, a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two means without a test (a side has one seed): the numbers, and no winner."""
    M = metric_of(a)
    d = M.scale * (b["score_mean"] - a["score_mean"])
    few = min(a["complete"], b["complete"])
    if d == 0:
        return f"{name_a} and {name_b} equal ({few} seed: no test)"
    hi, lo = (name_b, name_a) if d > 0 else (name_a, name_b)
    return f"{hi} {abs(d):.{M.digits}f} {M.unit} above {lo} ({few} seed: no test)"


def _numbers(c, M: Metric) -> str:
    return c.numbers(scale=M.scale, unit=M.unit, digits=M.digits)


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> str:
    """One comparison of two aggregated rows' scores (test accuracy, or bpc where lower
    wins), in words."""
    M = metric_of(a)
    c = compare(a["scores"], b["scores"])
    if not c.tested:
        return _untested(a["skip"], b["skip"], a, b)
    return c.sentence(a["skip"], b["skip"], scale=M.scale, unit=M.unit, digits=M.digits,
                      higher_is_better=M.higher_is_better)


def add_vs_dense(data: ReportData, group: str) -> str | None:
    """Dense against add at every depth where both have results, in one sentence."""
    cell = _cells(data.group_rows(group))
    depths = sorted(d for (s, d) in cell if s == A and (B, d) in cell)
    if not depths:
        return None
    parts = [f"at depth {depth}, {compare_rows(cell[(A, depth)], cell[(B, depth)])}" for depth in depths]
    rows = [cell[(s, d)] for d in depths for s in (A, B)]
    return f"At {_group_phrase(data, group)}, {data.metric.name} over {_seeds(rows)}: " + "; ".join(parts) + "."


def depth_change(lo: dict[str, Any], hi: dict[str, Any]) -> str:
    """Whether one strategy's score changed from the shallowest to the deepest depth."""
    M = metric_of(lo)
    c = compare(lo["scores"], hi["scores"])
    if not c.tested:
        return f"{min(lo['complete'], hi['complete'])} seed: no test"
    if c.winner is None:
        return f"not separated by the test, {_numbers(c, M)}"  # a drop the corrected test cannot tell from noise is not "no change"
    return f"{'rose' if c.winner == 'b' else 'fell'} by {_numbers(c, M)[len('difference '):]}"


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
                f"{b['concat_bytes'] / 2**20:.3g} MiB per training batch in concatenations (counted).")
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
    """How each strategy's accuracy changes from the shallowest to the deepest depth, and
    whether the test separates the two."""
    group = "matched-params" if data.group_rows("matched-params") else "equal-width"
    cell = _cells(data.group_rows(group))
    depths = sorted({d for (_, d) in cell})
    if len(depths) < 2:
        return None
    lo, hi = depths[0], depths[-1]
    skips = list(dict.fromkeys(s for (s, _) in cell))
    M = data.metric
    pc = "%" if M is ACCURACY else ""

    def at(s: str, d: int) -> str:
        return f"{M.format(cell[(s, d)]['score_mean'])}{pc}"

    moves = [f"{s} {at(s, lo)} -> {at(s, hi)} ({depth_change(cell[(s, lo)], cell[(s, hi)])})"
             for s in skips if (s, lo) in cell and (s, hi) in cell]
    if not moves:
        return None
    better = "" if M.higher_is_better else " (lower is better)"
    return (f"From depth {lo} to depth {hi} (at {_group_phrase(data, group)}), mean {M.name}{better} went: "
            + ", ".join(moves) + ".")


def gradient_sentence(data: ReportData) -> str | None:
    """The first/last weight-gradient ratio at init at the deepest depth measured."""
    if not data.gradients:
        return None
    D = max(g["depth"] for g in data.gradients)
    at = [g for g in data.gradients if g["depth"] == D]
    budget_only = list((data.plan or {}).get("budget_only", ()))
    where = "equal width" + (f"; the matched budget for {_and(budget_only)}" if budget_only else "")
    return (f"At init ({where}; depth {D}), the first block's weight gradient is "
            + ", ".join(f"{_ratio(g['first_last_ratio'])} for {g['skip']}" for g in at)
            + " times the last block's (near 1: the gradient reaches the first blocks; far below 1: it vanishes; "
              "far above 1: it grows toward the input).")


def _gap_text(gaps: list[float] | None) -> str:
    """The largest distance from doubly stochastic over runs (rows and columns of every
    H_res after training: mHC's Sinkhorn residual, mHC-lite's rounding), or nothing for
    runs stored before it was measured."""
    return f"; distance from doubly stochastic, the largest |row or column sum - 1| of a trained H_res: {max(gaps):.1e}" if gaps else ""


def stream_gain_sentence(data: ReportData) -> str | None:
    """Hyper-connections and mHC: the composite residual gain after the last block, at init
    (the study's gradient summaries) and after training (each run's diagnostics), at the
    deepest depth where runs stored it."""
    trained: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in data.runs:
        gain = ((r.get("result") or {}).get("diagnostics") or {}).get("composite_gain_forward")
        if r["status"] == "complete" and gain is not None and r["spec"].get("group") == "matched-params":
            trained[(r["spec"]["model"]["skip"], r["spec"]["model"]["depth"])].append(gain)
    if not trained:
        return None
    backward: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in data.runs:
        gain = ((r.get("result") or {}).get("diagnostics") or {}).get("composite_gain_backward")
        if r["status"] == "complete" and gain is not None and r["spec"].get("group") == "matched-params":
            backward[(r["spec"]["model"]["skip"], r["spec"]["model"]["depth"])].append(gain)
    gaps: dict[tuple[str, int], list[float]] = defaultdict(list)  # distance from doubly stochastic
    for r in data.runs:
        gap = ((r.get("result") or {}).get("diagnostics") or {}).get("doubly_stochastic_gap")
        if r["status"] == "complete" and gap is not None and r["spec"].get("group") == "matched-params":
            gaps[(r["spec"]["model"]["skip"], r["spec"]["model"]["depth"])].append(gap)
    D = max(d for _, d in trained)
    init = {g["skip"]: g.get("composite_gain_forward") for g in data.gradients if g["depth"] == D}
    parts, fixed = [], []
    for (skip, depth), gains in sorted(trained.items()):
        if depth != D:
            continue
        strategy = STRATEGIES.get(skip)
        if strategy is not None and strategy.gain_by_construction == "both":
            parts.append(f"{skip} 1 forward and backward by construction{_gap_text(gaps.get((skip, depth)))}")
            fixed.append(f"{skip}: {strategy.gain_reason}")
            continue
        if strategy is not None and strategy.gain_by_construction == "forward":
            # a 1 guaranteed by the method is no finding: show what can vary, the backward gain
            mean, std = mean_std(backward.get((skip, depth), []))
            parts.append(f"{skip} 1 forward by construction, backward "
                         f"{spread_text(mean, std, len(backward.get((skip, depth), [])), digits=3)} after training"
                         f"{_gap_text(gaps.get((skip, depth)))}")
            fixed.append(f"{skip}: {strategy.gain_reason}")
            continue
        mean, std = mean_std(gains)
        before = init.get(skip)
        parts.append(f"{skip} {'-' if before is None else f'{before:.3g}'} at init, "
                     f"{spread_text(mean, std, len(gains), digits=3)} after training")
    why = f" (gain fixed by construction for {'; '.join(fixed)})" if fixed else ""
    return (f"Composite residual gain prod H_res after the last of {D} blocks (largest absolute row sum over "
            f"tokens, forward; column sum, backward; 1 = no amplification; mHC's Fig. 3), at the matched budget: "
            + "; ".join(parts) + why + ".")


def report_family(data: ReportData) -> Family:
    """The family of every comparison this report's sentences make, collected once
    (each sentence-making function run in collecting mode) and Holm-adjusted together."""
    family = data.__dict__.get("_comparison_family")
    if family is None:
        family = Family()
        with family.collecting():
            _verdict_lines(data)
            for group in GROUPS:
                _best_lines(data.group_rows(group))
            _versus_add_rows(data)
        data.__dict__["_comparison_family"] = family
    return family


def _verdict_lines(data: ReportData) -> list[str | None]:
    lines = [add_vs_dense(data, "matched-params"), add_vs_dense(data, "equal-width")]
    if not any(lines):
        lines = ["No training runs are stored yet, so there is no verdict on accuracy." if not data.runs else
                 f"The store holds no {A} and {B} results of a study at the same depth, so there is no "
                 f"{A}-versus-{B} verdict."]
    return lines + [depth_sentence(data), cost_sentence(data), budget_sentence(data), gradient_sentence(data),
                    stream_gain_sentence(data)]


def verdict(data: ReportData) -> list[str]:
    """The verdict's sentences, most important first; each omitted when its data is missing.
    Where accuracies are compared, the last sentence states the test once. Every "beat"
    rests on the Holm-adjusted p over the report's family (:func:`report_family`)."""
    family = report_family(data)
    with family.deciding():
        lines = _verdict_lines(data)
    if any(r["score_mean"] is not None for r in data.rows):
        lines.append(how_decided(family.size))
    return [line for line in lines if line]


def how_decided(family: int = 1) -> str:
    """The one statement of the test behind every "beat", "tied" and "best" in the report."""
    return (f"How comparisons are decided: {test_statement(family=family)}; +- after a difference is its standard "
            "error, after a mean the standard deviation over seeds; with one seed there is no spread and no test.")


def _versus_add_rows(data: ReportData) -> list[list[str]]:
    """Each strategy against add at the same group and depth: the difference (strategy minus
    add) with its standard error, the test's own p and the Holm-adjusted one, and the reading."""
    M = data.metric
    rows = []
    for group in GROUPS:
        rows_ = [r for r in data.group_rows(group) if r["scores"]]  # by depth, then registry order (aggregate)
        adds = {r["depth"]: r for r in rows_ if r["skip"] == ADD.name}
        for r in rows_:
            skip, depth, add = r["skip"], r["depth"], adds.get(r["depth"])
            if skip == ADD.name or add is None:
                continue
            c = compare(add["scores"], r["scores"])
            if c is None:
                continue
            diff = f"{M.scale * c.diff:+.{M.digits}f}" + (f" +- {M.scale * c.se:.{M.digits}f}" if c.se is not None else "")
            if not c.tested:
                reading, raw, adj = "no test (1 seed)", "-", "-"
            else:
                won = c.winner is not None and M.better(c.mean_b, c.mean_a)
                reading = f"beat {ADD.name}" if won else f"lost to {ADD.name}" if c.winner else "tied"
                raw, adj = f"{c.p_raw if c.p_raw is not None else c.p:.2g}", f"{c.p:.2g}"
            rows.append([GROUPS[group], str(depth), skip, diff, raw, adj, reading])
    return rows


def versus_add(data: ReportData) -> tuple[list[str], list[list[str]]] | None:
    """Every strategy against add (Welch's test per group and depth, Holm-adjusted over the
    report's comparisons), as (headers, rows); None without add or without a second strategy."""
    family = report_family(data)
    with family.deciding():
        rows = _versus_add_rows(data)
    head = ["group", "depth", "skip", f"minus {ADD.name} ({data.metric.unit})", "p (test's own)", "adjusted p", "reading"]
    return (head, rows) if rows else None


def leaders(data: ReportData) -> tuple[list[str], list[list[str]]] | None:
    """The verdict's table, one row per group and depth: the leader by the test (ahead of
    every other strategy after Holm's correction) or the set tied for the lead, with the
    largest adjusted p between the leader and a strategy it beat (or the smallest it could
    not separate), as (headers, rows); None where nothing could be tested (one seed)."""
    family = report_family(data)
    if not family.size:
        return None
    head = ["group", "depth", "leader", "tied for the lead", "adjusted p"]
    rows: list[list[str]] = []
    sign = -1 if data.metric.higher_is_better else 1
    with family.deciding():
        for group in GROUPS:
            by_depth: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for r in data.group_rows(group):
                if r["score_mean"] is not None:
                    by_depth[r["depth"]].append(r)
            for depth in sorted(by_depth):
                named = {r["skip"]: r for r in sorted(by_depth[depth], key=lambda r: sign * r["score_mean"])}
                best, tied = best_of({k: r["scores"] for k, r in named.items()}, higher_is_better=sign < 0)
                if best is None:
                    continue
                tests = {k: c for k in named if k != best
                         if (c := compare(named[best]["scores"], named[k]["scores"])) is not None and c.tested}
                tied_ps = [tests[k].p for k in tied if k in tests]
                if not tests:
                    rows.append([GROUPS[group], str(depth), "none: 1 seed, no test", "-", "-"])
                    continue
                if tied:
                    p = f"tied: smallest {p_text(min(tied_ps))}" if tied_ps else "tied: no test (1 seed)"
                else:
                    p = f"beat every other: largest {p_text(max(c.p for c in tests.values()))}"
                rows.append([GROUPS[group], str(depth), best if not tied else f"{best} (by mean)",
                             ", ".join(tied) if tied else "-", p])
    return (head, rows) if rows else None


def _acc(r: dict[str, Any]) -> str:
    M = metric_of(r)
    if M is ACCURACY:
        return f"{r['skip']} {pct(r['score_mean'], r['score_std'], r['complete'], sign=True)}"
    return f"{r['skip']} {M.text(r['score_mean'], r['score_std'], r['complete'])} {M.unit}"


def best_per_depth(data: ReportData, group: str) -> list[str]:
    """Per depth of ``group``: the best strategy by its score (test accuracy, or the lowest
    bpc) if the test separates it from every other after Holm's correction over the
    report's family; otherwise the leaders the test cannot tell apart. Then the last by mean."""
    with report_family(data).deciding():
        return _best_lines(data.group_rows(group))


def _best_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    by_depth: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["score_mean"] is not None:
            by_depth[r["depth"]].append(r)
    sign = -1 if metric_of(rows).higher_is_better else 1
    for depth in sorted(by_depth):
        ranked = sorted(by_depth[depth], key=lambda r: sign * r["score_mean"])  # best first
        if len(ranked) == 1:
            out.append(f"depth {depth}: {_acc(ranked[0])} (the only strategy with results)")
            continue
        if all(r["complete"] < 2 for r in ranked):  # nothing to test: the order by mean, and no claim
            out.append(f"depth {depth}: one seed, so no test; by mean: " + ", ".join(_acc(r) for r in ranked))
            continue
        named = {r["skip"]: r for r in ranked}
        best, tied = best_of({s: r["scores"] for s, r in named.items()}, higher_is_better=sign < 0)
        if not tied:
            line = f"depth {depth}: best {_acc(named[best])}, ahead of every other strategy by the test"
        else:
            leaders = [named[best]] + [r for r in ranked if r["skip"] in tied]
            why = ("one seed gives no test" if min(r["complete"] for r in leaders) < 2
                   else "the test does not separate them")
            line = f"depth {depth}: no single best; tied for the lead ({why}): " + _and([_acc(r) for r in leaders])
        if ranked[-1]["skip"] != best and ranked[-1]["skip"] not in tied:
            line += f"; last: {_acc(ranked[-1])}"
        out.append(line)
    return out
