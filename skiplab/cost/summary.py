"""One strategy's cost answer: analytic figures, and on request measurement beside them,
growth laws over a depth range, and the width that meets a budget."""

from __future__ import annotations

from typing import Any, Sequence

from ..skips.concat import MEMORY
from ..spec import ModelSpec
from .answer import model_cost, model_costs
from .budget import match_budget
from .growth import growth_over_depths
from .measure import measure_cost, why_not_measurable

# Figures compared between analytic and measured: label -> key path in both dicts.
COMPARED = {"params": ("params", "total"), "flops": ("flops", "matmul"), "merge_flops": ("flops", "merge"),
            "activation_bytes": ("activation_bytes",), "concat_bytes": ("concat_bytes",)}


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        d = d[key]
    return d


def memory_bills(spec: ModelSpec, batch: int) -> dict[str, int] | None:
    """For a strategy with a ``memory`` option (the concatenations): the activation bytes
    of one training batch with each memory path, side by side; None for the others."""
    if not spec.strategy.declares(MEMORY.name):
        return None
    return {m: model_cost(spec.replace(options={**dict(spec.options), MEMORY.name: m}), batch)["activation_bytes"]
            for m in MEMORY.choices}


def cost_summary(spec: ModelSpec, *, batch: int = 32, measure: bool = False,
                 depths: Sequence[int] | None = None, params: int | None = None,
                 flops: int | None = None, vary: str = "width") -> dict[str, Any]:
    """Analytic costs of ``spec`` (see ``model_cost``), plus:

    * ``budget`` when ``params`` or ``flops`` is given: ``spec`` is first resized to it;
    * ``measured`` and ``ratios`` (analytic / measured) when ``measure``; when the model
      cannot be built or would not fit in memory, ``measured`` is None and
      ``measured_skipped`` says why and what it would need;
    * ``growth`` over ``depths``;
    * ``activation_bytes_by_memory`` for the strategies with a ``memory`` option: both bills.
    """
    budget = None
    if params is not None or flops is not None:
        match = match_budget(spec, params=params, flops=flops, vary=vary)
        spec = match.spec
        budget = {"metric": match.metric, "target": match.target, "achieved": match.achieved,
                  "relative_error": match.relative_error, "within_tolerance": match.within_tolerance,
                  "width": spec.width, "options": spec.opts}
    if depths is not None:  # every depth of the sweep and this one in one count (skiplab.cost.prefix)
        model_costs(spec, sorted({*depths, spec.depth}), batch)
    out = model_cost(spec, batch)
    bills = memory_bills(spec, batch)
    if bills:
        out["activation_bytes_by_memory"] = bills
    if budget:
        out["budget"] = budget
    if measure:
        reason = why_not_measurable(spec, batch, out)
        if reason:
            out["measured"], out["measured_skipped"] = None, reason
        else:
            m = measure_cost(spec, batch)
            out["measured"] = m
            out["ratios"] = {k: (_get(out, p) / _get(m, p) if _get(m, p) else None)
                             for k, p in COMPARED.items()}
    if depths is not None:
        g = growth_over_depths(spec, depths, batch)
        out["growth"] = {k: g[k] for k in ("depths", "params", "flops", "activation_bytes")}
        out["growth_curve"] = g["curve"]
    return out
