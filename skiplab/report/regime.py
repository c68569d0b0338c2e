"""The regime check (issue 27): is the study past its early-training phase?

A study with ``regime_factor`` f (:class:`skiplab.study.StudyPlan`) also trains add at every
depth f times as long (seed 0). If that model's metric is within ``regime_tolerance`` of the
plan's own add run of the same seed, longer training would change add's number by less than
the tolerance: the comparison describes trained models, the regime the papers' claims are
about, not the first minutes of training. The same seed on both sides, so initial weights and
data order are shared and the difference is the training length alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..metrics import metric_of
from ..results import REGIME_GROUP
from ..skips import ADD
from .content import ReportData, regime_runs_planned


@dataclass(frozen=True)
class RegimeCell:
    depth: int
    steps: int | None  # the plan's run
    score: float | None
    longer_steps: int | None  # the run trained regime_factor times as long
    longer_score: float | None

    @property
    def gap(self) -> float | None:
        if self.score is None or self.longer_score is None:
            return None
        return abs(self.score - self.longer_score)


def _seed0(data: ReportData, group: str, depth: int) -> dict[str, Any] | None:
    for r in data.current_runs():
        m, spec = r["spec"]["model"], r["spec"]
        if (spec.get("group") == group and m["skip"] == ADD.name and m["depth"] == depth
                and r["seed"] == 0 and r["status"] == "complete"):
            return r
    return None


def regime_cells(data: ReportData) -> list[RegimeCell]:
    """Per planned depth, the plan's add run (seed 0) beside the one trained longer."""
    if not regime_runs_planned(data.plan):
        return []
    cells = []
    for d in data.plan["depths"]:
        short, long = _seed0(data, "matched-params", d), _seed0(data, REGIME_GROUP, d)

        def score(r):
            return None if r is None else r["result"].get(metric_of(r).key)

        cells.append(RegimeCell(d, short and short["result"].get("steps"), score(short),
                                long and long["result"].get("steps"), score(long)))
    return cells


def regime_lines(data: ReportData) -> list[str]:
    """One sentence per depth and a conclusion; empty when the plan has no regime check."""
    cells = regime_cells(data)
    if not cells:
        return []
    M, tol, f = data.metric, data.plan["regime_tolerance"], data.plan["regime_factor"]
    out = []
    for c in cells:
        if c.gap is None:
            out.append(f"depth {c.depth}: {'missing' if c.score is None else M.format(c.score)} after the plan's "
                       f"training, {'missing' if c.longer_score is None else M.format(c.longer_score)} after "
                       f"{f:g}x as long (run the study again to complete it)")
            continue
        verdict = "within" if c.gap <= tol else "NOT within"
        out.append(f"depth {c.depth}: {M.format(c.score)} {M.unit} after {c.steps:,} steps, "
                   f"{M.format(c.longer_score)} after {c.longer_steps:,}: a difference of {M.scale * c.gap:.{M.digits}f}, "
                   f"{verdict} {M.scale * tol:g}")
    ok = [c.gap is not None and c.gap <= tol for c in cells]
    if all(ok):
        end = ("In the regime at every depth: training add longer changes its result by less than "
               f"{M.scale * tol:g} {M.unit}, so these are trained models' numbers.")
    elif any(c.gap is None for c in cells):
        end = "The check is incomplete."
    else:
        end = ("Not in the regime at every depth: these numbers describe training that has not "
               "finished, and a longer plan may rank the strategies otherwise.")
    head = (f"Regime check: add (seed 0) trained by the plan and {f:g}x as long; the plan is in the regime where "
            f"the two differ by at most {M.scale * tol:g} {M.unit}.")
    return [head, *out, end]
