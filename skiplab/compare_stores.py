"""Two stores of the same runs, compared cell by cell: did another machine, engine or
version give the same answer within its spread?

A run's numbers are bitwise reproducible only on the machine (CPU, thread count, torch
build) that made them: another CPU rounds matrix products in another order, and a few
hundred training steps carry that difference into the last digits of the accuracy, then
into the first ones. What must hold everywhere is the answer within the seeds' spread.
This module is that check, used by ``skiplab runs compare A B`` and by
``benchmarks/study_engines.py``.

Per configuration stored in both (same group, dataset and spec hash: the seed aside, the
run's whole identity), the two sets of per-seed scores are compared by Welch's t-test;
the p-values of all the cells are adjusted together by Holm's method
(:func:`skiplab.stats.holm`), so that "differ" means a difference the whole family of tests
supports. A cell that does not differ is *not separated*: with 3 seeds a side the test has
little power, and that is no evidence of equality. Equality is claimed only with a
``margin`` (two one-sided tests, :func:`skiplab.stats.equivalence_p`, Holm-adjusted too).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .metrics import metric_of
from .results import aggregate
from .stats import ALPHA, equivalence_p, holm, mean_std, welch_p
from .store import Store
from .errors import UserError


def _cells(directory: str | Path) -> dict[tuple, dict[str, Any]]:
    with Store(directory, create=False) as store:
        runs = store.runs()
    return {(r["group"], r["dataset"], r["spec_hash"]): r for r in aggregate(runs)}


def compare_stores(a: str | Path, b: str | Path, margin: float | None = None,
                   alpha: float = ALPHA) -> dict[str, Any]:
    """Compare every configuration the results folders ``a`` and ``b`` both hold.

    ``margin`` (in the metric's shown unit: accuracy points, or bpc) asks also for an
    equivalence test per cell. Returns ``cells`` (one dict per shared configuration with
    both sides' scores, ``diff`` = b - a in the shown unit, raw ``p``, Holm's ``p_holm``,
    ``differ``, and with a margin ``p_equivalent`` and ``equivalent``), ``only_a`` and
    ``only_b`` (configurations in one store alone), ``untested`` (shared cells with fewer
    than two scores a side) and a ``summary`` sentence."""
    if margin is not None and not margin > 0:
        raise UserError(f"--margin: must be a number > 0, got {margin!r}")
    ca, cb = _cells(a), _cells(b)
    shared = [k for k in ca if k in cb]
    if not shared:
        raise UserError(f"{a} and {b} hold no configuration in common (same group, dataset and spec)")
    metric = metric_of([ca[k] for k in shared])
    cells, untested = [], []
    for k in shared:
        ra, rb = ca[k], cb[k]
        xa, xb = ra["scores"], rb["scores"]
        row = {"group": ra["group"], "dataset": ra["dataset"], "spec_hash": ra["spec_hash"], "skip": ra["skip"],
               "depth": ra["depth"], "width": ra["width"], "options": ra["options"], "metric": metric.key,
               "n_a": len(xa), "n_b": len(xb), "scores_a": xa, "scores_b": xb}
        (ma, sa), (mb, sb) = mean_std(xa), mean_std(xb)
        row.update(mean_a=ma, std_a=sa, mean_b=mb, std_b=sb)
        if len(xa) < 2 or len(xb) < 2:
            untested.append(row)
            continue
        row["diff"] = metric.scale * (mb - ma)
        row["p"] = welch_p(xa, xb)
        if margin is not None:
            row["p_equivalent"] = equivalence_p(xa, xb, margin / metric.scale)
        cells.append(row)
    for key, p_key in (("p_holm", "p"), ("p_equivalent_holm", "p_equivalent")):
        if cells and p_key in cells[0]:
            for row, q in zip(cells, holm([c[p_key] for c in cells])):
                row[key] = q
    for row in cells:
        row["differ"] = row["p_holm"] < alpha
        if margin is not None:
            row["equivalent"] = row["p_equivalent_holm"] < alpha
    differ = [c for c in cells if c["differ"]]
    diffs = [abs(c["diff"]) for c in cells]
    unit = metric.unit
    if not cells:
        summary = f"{len(shared)} configurations in common, none with 2 or more scores a side: no test"
    else:
        summary = (f"{len(differ)} of {len(cells)} configurations differ (Welch's t-test, Holm-adjusted, "
                   f"at {alpha:g})" + (": " + ", ".join(f"{c['skip']} depth {c['depth']}" for c in differ)
                                       if differ else "")
                   + f"; median |difference| {statistics.median(diffs):.{metric.digits}f} {unit}, "
                     f"largest {max(diffs):.{metric.digits}f}")
        if margin is None:
            summary += ("; not separated is not shown equal: give --margin to test agreement "
                        "within a stated difference")
        else:
            eq = sum(c["equivalent"] for c in cells)
            summary += (f"; {eq} of {len(cells)} shown equal within {margin:g} {unit} "
                        "(two one-sided tests, Holm-adjusted)")
    return {"a": str(a), "b": str(b), "metric": metric.key, "unit": unit, "alpha": alpha, "margin": margin,
            "cells": cells, "untested": untested,
            "only_a": [ca[k]["spec_hash"] for k in ca if k not in cb],
            "only_b": [cb[k]["spec_hash"] for k in cb if k not in ca],
            "summary": summary}
