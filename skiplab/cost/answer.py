"""``model_cost``: the cost of a model, counted on the model (``skiplab.cost.count``)
where it builds, even on the meta device, and estimated by the growth law of the deepest
depths that build where it does not (issue 25, item 2: concat-double's widths double with
depth, past what a tensor's size can hold), saying so under ``estimated``."""

from __future__ import annotations

import functools
from typing import Any, Sequence

from ..errors import UserError
from ..spec import ModelSpec
from . import memo
from .count import TooLargeToBuild, check_batch, counted_cost, meta_model
from .laws import POLY_LAWS, classify


def model_cost(spec: ModelSpec, batch: int = 32) -> dict[str, Any]:
    """``counted_cost(spec, batch)`` (see there for the keys), or for a model too large to
    build even on meta, ``beyond_buildable``'s estimate: totals only, and ``estimated``."""
    check_batch(batch)

    first_bad = _UNBUILDABLE_FROM.get(_base(spec)) if memo.enabled() and _UNBUILDABLE_FROM else None
    if first_bad is not None and spec.depth >= first_bad:  # known not to build: no second try
        return beyond_buildable(spec, batch)
    try:
        return counted_cost(spec, batch)
    except TooLargeToBuild:
        return beyond_buildable(spec, batch)


def model_costs(spec: ModelSpec, depths: Sequence[int], batch: int = 32) -> list[dict[str, Any]]:
    """``[model_cost(spec.replace(depth=d), batch) for d in depths]``, the same figures, with
    every buildable depth (and the depths an estimate fits) counted in one forward at the
    deepest where ``skiplab.cost.prefix`` applies (issue 25, item 7)."""
    from . import prefix

    check_batch(batch)
    depths = list(depths)
    if depths and prefix.applies(spec, depths):
        deepest = max(depths)
        need = {d for d in depths if not memo.has(spec.replace(depth=d), batch)}
        try:
            if need:
                prefix.sweep(spec, sorted(need), batch)
        except TooLargeToBuild:  # the deepest do not build: count up to the deepest that does
            top = _deepest_buildable(spec.replace(depth=0), deepest - 1)
            # ... and the depths the growth law of the others is fitted on
            need = {d for d in depths if d <= top} | set(range(max(1, top - FIT_POINTS + 1), top + 1))
            need = {d for d in need if not memo.has(spec.replace(depth=d), batch)}
            if need and prefix.applies(spec, sorted(need)):
                prefix.sweep(spec, sorted(need), batch)
    return [model_cost(spec.replace(depth=d), batch) for d in depths]


def _base(spec: ModelSpec) -> ModelSpec | None:
    """``spec`` at depth 0, the key of what is known not to build (None where depth 0 is no
    valid depth: resnet counts layers)."""
    try:
        return spec.replace(depth=0)
    except ValueError:
        return None


FIT_POINTS = 8  # depths the extrapolation fits: enough to tell the laws apart (classify needs 4)


# spec at depth 0 -> the smallest depth known not to build: every depth from there on
# fails too, so the unbuildable depths of a sweep share one bisection
_UNBUILDABLE_FROM: dict[ModelSpec, int] = {}


@functools.lru_cache(maxsize=64)
def _deepest_buildable(base: ModelSpec, below: int) -> int:
    """The largest depth <= ``below`` at which ``base`` builds on meta (0 if none): a
    bisection, as a model that builds at depth d builds at every smaller depth."""
    first_bad = _UNBUILDABLE_FROM.get(base) if memo.enabled() else None
    if first_bad is not None and first_bad <= below:
        return first_bad - 1  # first_bad - 1 built (it was the bisection's answer)
    lo = _bisect(base, below)
    if lo < below:
        _UNBUILDABLE_FROM[base] = min(lo + 1, _UNBUILDABLE_FROM.get(base, lo + 1))
    return lo


def _bisect(base: ModelSpec, below: int) -> int:
    lo, hi = 0, below
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _builds(base.replace(depth=mid)) else (lo, mid - 1)
    return lo


def _builds(spec: ModelSpec) -> bool:
    try:
        meta_model(spec)
    except TooLargeToBuild:
        return False
    return True


def beyond_buildable(spec: ModelSpec, batch: int) -> dict[str, Any]:
    """Totals of a model too large to build even on meta, from the growth laws of the
    ``FIT_POINTS`` deepest depths below it that do build (issue 25, item 2: concat-double's
    widths double with depth). A polynomial law reproduces counts exactly; the exponential
    one to ``NEAR`` of the largest (its constant term is dropped). ``estimated`` names the
    law and the depths; there is no ``per_block``."""
    top = _deepest_buildable(spec.replace(depth=0), spec.depth - 1)
    depths = list(range(max(1, top - FIT_POINTS + 1), top + 1))
    if len(depths) < 4:
        raise UserError(f"depth: {spec.skip} at depth {spec.depth} cannot be built even on the meta device, "
                         f"and too few smaller depths build ({len(depths)}) to fit a growth law")
    costs = [counted_cost(spec.replace(depth=d), batch) for d in depths]

    def law_at(values: list[int]) -> tuple[float, str]:
        law = _classify(tuple(depths), tuple(values))
        c, x = law["coefficients"], spec.depth
        if law["law"] in POLY_LAWS:
            return round(sum(c[f"c{i}"] * x ** i for i in range(len(c)))), law["law"]
        if law["law"] == "exponential":
            return c["b"] * c["base"] ** x, f"exponential, base {c['base']:.4g}"
        raise UserError(f"depth: {spec.skip} at depth {spec.depth} cannot be built even on the meta device, and "
                         f"its costs over depths {depths[0]}..{depths[-1]} follow no law to extrapolate")

    laws = {}

    def fitted(*path: str):
        value, laws[path] = law_at([_at(c, path) for c in costs])
        return value

    d = spec.describe()
    params = {k: fitted("params", k) for k in costs[-1]["params"]}
    flops = {k: fitted("flops", k) for k in costs[-1]["flops"]}
    named = {"params": ("params", "total"), "FLOPs": ("flops", "total"), "activation bytes": ("activation_bytes",)}
    return {
        "skip": spec.skip, "model": spec.model, "depth": spec.depth, "width": spec.width,
        "options": dict(d.options), "batch": batch, "state_width": spec.state_width, "spec": spec.to_dict(),
        "params": params, "flops": flops, "flops_per_token": flops["total"] / d.positions,
        "activation_bytes": fitted("activation_bytes"), "concat_bytes": fitted("concat_bytes"),
        "per_block": [], "block_flops_ratio": [],
        "estimated": (f"too large to build even on the meta device: extrapolated from depths {depths[0]}..{depths[-1]} "
                      f"({', '.join(f'{label} {laws[path]}' for label, path in named.items())})"),
    }


@functools.lru_cache(maxsize=1024)
def _classify(depths: tuple[int, ...], values: tuple) -> dict[str, Any]:
    """``classify``, memoised: every depth past the buildable ones fits the same values
    (a concat-double sweep's unbuildable depths all extrapolate from one window)."""
    return classify(list(depths), list(values))


def _at(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        d = d[key]
    return d
