"""Costs over a range of depths, with the growth law of each (``skiplab.cost.laws``)."""

from __future__ import annotations

from typing import Any, Sequence

from ..spec import ModelSpec
from .answer import model_costs
from .laws import classify

def growth_over_depths(spec: ModelSpec, depths: Sequence[int], batch: int = 32) -> dict[str, Any]:
    """The growth law of parameters, FLOPs and activation memory of ``spec`` over ``depths``,
    with the costs at each depth under ``curve`` (counted; a depth too large to build even
    on meta is estimated, and its point says so under ``estimated``)."""
    costs = model_costs(spec, depths, batch)
    for c, d in zip(costs, depths):
        c["buildable"] = _buildable(spec.replace(depth=d))
        del c["per_block"], c["spec"]  # a curve point needs the totals only
    return {
        "depths": list(depths),
        "params": classify(depths, [c["params"]["total"] for c in costs]),
        "flops": classify(depths, [c["flops"]["total"] for c in costs]),
        "activation_bytes": classify(depths, [c["activation_bytes"] for c in costs]),
        "curve": costs,
    }


def _buildable(spec: ModelSpec) -> bool:
    try:
        spec.check_buildable()
    except ValueError:
        return False
    return True
