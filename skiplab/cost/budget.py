"""Matched budgets: the width (or dense growth) at which a strategy meets a target
parameter or FLOP count at a given depth, so strategies can be compared at equal cost."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import ModelSpec
from .analytic import analytic_cost

TOLERANCE = 0.02  # "within 2%" of the target
MAX_WIDTH = 1 << 20


@dataclass(frozen=True)
class BudgetMatch:
    spec: ModelSpec  # the spec with the chosen width / growth
    metric: str  # "params" (total) or "flops" (total per sample, inference)
    target: int
    achieved: int

    @property
    def relative_error(self) -> float:
        return (self.achieved - self.target) / self.target

    @property
    def within_tolerance(self) -> bool:
        return abs(self.relative_error) <= TOLERANCE


def _cost(spec: ModelSpec, metric: str) -> int:
    c = analytic_cost(spec, batch=1)
    return c["params"]["total"] if metric == "params" else c["flops"]["total"]


def match_budget(spec: ModelSpec, *, params: int | None = None, flops: int | None = None,
                 vary: str = "width") -> BudgetMatch:
    """The ``spec`` resized so its total parameters (or FLOPs per sample) are closest to the
    target. ``vary``: ``width`` (every strategy) or ``growth`` (dense only, width kept).
    Costs grow monotonically with width, so a bisection over integers finds the closest;
    ``BudgetMatch.within_tolerance`` says whether it is within 2%.
    """
    if (params is None) == (flops is None):
        raise ValueError("budget: give exactly one of params or flops")
    metric, target = ("params", params) if params is not None else ("flops", flops)
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ValueError(f"{metric}: the budget must be a positive integer, got {target!r}")
    if vary not in ("width", "growth"):
        raise ValueError(f"vary: {vary!r} is not one of width, growth")
    if vary == "growth" and spec.skip != "dense":
        raise ValueError(f"vary: only skip 'dense' has a growth to vary, not {spec.skip!r}")
    step = 2 if spec.skip == "concat-half" and vary == "width" else 1  # concat-half needs even widths
    if vary == "width":
        return _closest(lambda n: spec.replace(width=n * step), metric, target, spec, "width", step)
    # Growth first (DenseNet's knob); its steps are coarse when k is small (at depth 50 one
    # more channel of growth adds ~10% of the parameters), so if that misses by more than
    # the tolerance, the width is refined around the best growths.
    match = _closest(lambda k: spec.replace(growth=k), metric, target, spec, "growth", 1)
    if match.within_tolerance:
        return match
    k = match.spec.k
    tries = [match]
    for g in (k - 1, k, k + 1):
        if g >= 1:
            try:
                tries.append(_closest(lambda n, g=g: spec.replace(width=n, growth=g), metric, target, spec, "width", 1))
            except ValueError:
                continue
    return min(tries, key=lambda m: abs(m.achieved - target))


def _closest(sized, metric: str, target: int, spec: ModelSpec, vary: str, step: int) -> BudgetMatch:
    """Bisection over n >= 1 for the ``sized(n)`` whose cost is closest to ``target``
    (costs grow monotonically with width and growth)."""
    lo = 1
    if _cost(sized(lo), metric) > target:
        raise ValueError(f"{metric}: a budget of {target:,} is below the smallest {spec.skip} model at depth "
                         f"{spec.depth} ({vary} {lo * step}: {_cost(sized(lo), metric):,})")
    hi = 2
    while _cost(sized(hi), metric) <= target:
        if hi * step >= MAX_WIDTH:
            raise ValueError(f"{metric}: a budget of {target:,} needs a {vary} over {MAX_WIDTH:,}")
        hi *= 2
    while hi - lo > 1:  # invariant: cost(lo) <= target < cost(hi)
        mid = (lo + hi) // 2
        if _cost(sized(mid), metric) <= target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda n: abs(_cost(sized(n), metric) - target))
    return BudgetMatch(sized(best), metric, target, _cost(sized(best), metric))
