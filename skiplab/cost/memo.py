"""Cost answers already counted, by (spec, batch): a sweep over depths
(:mod:`skiplab.cost.prefix`) counts every depth in one forward and leaves each answer here,
where :func:`skiplab.cost.count.counted_cost` finds it. Its own module so that the counter
and the sweep both use it without importing each other."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

from ..spec import ModelSpec

# (spec, batch) -> counted_cost's answer, filled by ``sweep``; read by ``counted_cost``.
_KNOWN: "OrderedDict[tuple[ModelSpec, int], dict[str, Any]]" = OrderedDict()
KNOWN_LIMIT = 4096


def enabled() -> bool:
    return os.environ.get("SKIPLAB_COST_PREFIX", "1") != "0"


def known(spec: ModelSpec, batch: int) -> dict[str, Any] | None:
    """A copy of ``counted_cost(spec, batch)`` when a sweep already counted it, else None."""
    if not enabled():
        return None
    hit = _KNOWN.get((spec, batch))
    return _copy(hit) if hit is not None else None


def _copy(x):
    """A copy of a cost answer (dicts and lists of numbers and strings) that callers may
    change: ``copy.deepcopy``'s result, several times faster."""
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


def has(spec: ModelSpec, batch: int) -> bool:
    return enabled() and (spec, batch) in _KNOWN



def remember(spec: ModelSpec, batch: int, cost: dict[str, Any]) -> None:
    """Keep a copy of ``cost``, the answer for ``(spec, batch)``; the oldest go past KNOWN_LIMIT."""
    _KNOWN[(spec, batch)] = _copy(cost)
    while len(_KNOWN) > KNOWN_LIMIT:
        _KNOWN.popitem(last=False)
