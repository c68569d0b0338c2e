"""Matched budgets: the width (or a sizing option, dense's growth) at which a strategy meets a target
parameter or FLOP count at a given depth, so strategies can be compared at equal cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..spec import ModelSpec
from ..errors import UserError
from .answer import model_cost
from .count import param_counts

TOLERANCE = 0.02  # "within 2%" of the target
MAX_WIDTH = 1 << 20


@dataclass(frozen=True)
class BudgetMatch:
    spec: ModelSpec  # the spec with the chosen width / option
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
    # a parameter budget needs only the built model (no forward): the bisection's many
    # widths stay cheap
    # FLOPs per sample: a batch of 2, as batch norm in training mode refuses one sample (the
    # counter's figures per sample do not depend on the batch: tests/test_profile_counter.py)
    return param_counts(spec)["total"] if metric == "params" else model_cost(spec, batch=2)["flops"]["total"]


def match_budget(spec: ModelSpec, *, params: int | None = None, flops: int | None = None,
                 vary: str = "width") -> BudgetMatch:
    """The ``spec`` resized so its total parameters (or FLOPs per sample) are closest to the
    target. ``vary``: ``width`` (every strategy), or an option the strategy declares as a
    size (``Option.sizes``: dense's growth), the width kept. Costs grow monotonically with
    width, so a bisection over integers finds the closest; ``BudgetMatch.within_tolerance``
    says whether it is within 2%.
    """
    if (params is None) == (flops is None):
        raise UserError("budget: give exactly one of params or flops")
    metric, target = ("params", params) if params is not None else ("flops", flops)
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise UserError(f"{metric}: the budget must be a positive integer, got {target!r}")
    sizing = sizing_options(spec)
    if vary != "width" and vary not in sizing:
        allowed = ", ".join(["width", *sizing])
        raise UserError(f"vary: skip {spec.skip!r} can vary {allowed}, not {vary!r}")
    # Sizes come in steps: concat-half needs even widths, the transformer multiples of its
    # heads (each attention sublayer splits its features among them).
    unit = spec.family.size_step(spec)
    if vary == "width":
        step = math.lcm(spec.strategy.width_step, unit)
        return _closest(lambda n: spec.replace(width=n * step), metric, target, spec, "width", step)
    opts = dict(spec.options)

    def with_option(value: int, **changes):
        return spec.replace(options={**opts, vary: value * unit}, **changes)

    # The option first (DenseNet's knob is its growth); its steps are coarse when it is
    # small (at depth 50 one more channel of growth adds ~10% of the parameters), so if
    # that misses by more than the tolerance, the width is refined around the best values.
    match = _closest(with_option, metric, target, spec, vary, unit)
    if match.within_tolerance:
        return match
    k = match.spec.opts[vary] // unit
    tries = [match]
    for g in (k - 1, k, k + 1):
        if g >= 1:
            try:
                tries.append(_closest(lambda n, g=g: with_option(g, width=n * unit), metric, target, spec, "width",
                                      unit))
            except ValueError:
                continue
    return min(tries, key=lambda m: abs(m.achieved - target))


def sizing_options(spec: ModelSpec) -> list[str]:
    """The options of ``spec``'s strategy that a budget may resize (dense: growth)."""
    return [o.name for o in spec.strategy.options if o.sizes]


def _closest(sized, metric: str, target: int, spec: ModelSpec, vary: str, step: int) -> BudgetMatch:
    """The n >= 1 whose ``sized(n)`` costs closest to ``target``, by bisection (costs grow
    monotonically with width and growth). The bracket starts around a guess: every layer's
    weights are (in x out), both linear in the width (or growth), so costs are close to a
    quadratic in n, and the quadratic through n = 1, 2, 4 predicts where the target lies.
    The guess only saves counts (about 6 instead of 16-20 at the study's sizes): the
    bracket is checked and widened until it holds, so the answer is the bisection's."""
    def cost(n: int) -> int:
        return _cost(sized(n), metric)

    if cost(1) > target:
        raise UserError(f"{metric}: a budget of {target:,} is below the smallest {spec.skip} model at depth "
                        f"{spec.depth} ({vary} {step}: {cost(1):,})")
    limit = max(2, MAX_WIDTH // step)
    g = min(max(1, _quadratic_guess([(n, cost(n)) for n in (1, 2, 4)], target)), limit)
    if cost(g) <= target:  # gallop up from the guess until the cost passes the target
        lo, span = g, 1
        hi = min(lo + span, limit)
        while cost(hi) <= target:
            if hi >= limit:
                raise UserError(f"{metric}: a budget of {target:,} needs a {vary} over {MAX_WIDTH:,}")
            lo, span = hi, 2 * span
            hi = min(lo + span, limit)
    else:  # ... or down until it is within the target
        hi, span = g, 1
        lo = max(1, hi - span)
        while cost(lo) > target:
            hi, span = lo, 2 * span
            lo = max(1, hi - span)
    while hi - lo > 1:  # invariant: cost(lo) <= target < cost(hi)
        mid = (lo + hi) // 2
        if cost(mid) <= target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda n: abs(cost(n) - target))
    return BudgetMatch(sized(best), metric, target, cost(best))


def _quadratic_guess(points: list[tuple[int, int]], target: int) -> int:
    """The n at which the quadratic through ``points`` reaches ``target`` (rounded), or the
    largest point's n when the fit gives no positive root."""
    (x0, y0), (x1, y1), (x2, y2) = points
    # Newton's divided differences: y = y0 + b (x - x0) + c (x - x0)(x - x1)
    b01, b12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    c = (b12 - b01) / (x2 - x0)
    b = b01 - c * (x0 + x1)  # y = a + b x + c x^2
    a = y0 - b * x0 - c * x0 * x0
    if abs(c) < 1e-12:
        return round((target - a) / b) if b > 0 else x2
    disc = b * b - 4 * c * (a - target)
    if disc < 0:
        return x2
    root = (-b + math.sqrt(disc)) / (2 * c)
    return round(root) if root > 0 else x2
