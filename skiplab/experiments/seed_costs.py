"""The answers' cost arithmetic, from the cost model: the 10-layer example (answer 2) and
channels doubling vs halving (answer 1).

No training and no seeds: these are exact counts of the analytic cost model (which the
cost tests check against PyTorch's own counters), so there is no noise to test and no
regime to reach; the verdict is whether the counts equal what the answers claim
(``supports``) or not (``contradicts``). ``--dataset`` and ``--workers`` do not apply.
"""

from __future__ import annotations

from typing import Any

from ..cost import model_cost, growth_over_depths
from ..families import CNN1D_FAMILY, MLP_FAMILY
from ..skips import ADD, CONCAT_DOUBLE, CONCAT_HALF, DENSE, PLAIN
from ..spec import ModelSpec
from .outcome import CONTRADICTS, SUPPORTS

CLAIM = ("concatenating every layer costs 5x the parameters of the 10-layer example (answer 2); doubling "
         "channels grows conv cost 4x per layer, halving keeps it constant (answer 1)")


def run(ctx) -> dict[str, Any]:  # no form to vary: the counts are the answers' own examples
    quick = ctx.quick
    ten = {s.name: model_cost(ModelSpec(model=MLP_FAMILY.name, depth=9, width=100, skip=s.name, norm="none",
                                           bias=False, input_shape=(100,)))["params"]["blocks"]
           for s in (PLAIN, ADD, DENSE)}
    conv = dict(model=CNN1D_FAMILY.name, width=64, norm="none", kernel_size=3, input_shape=(1, 40))
    depth = 6 if quick else 10
    per_block = {s.name: [b["flops"] for b in model_cost(ModelSpec(skip=s.name, depth=depth, **conv))["per_block"]]
                 for s in (CONCAT_DOUBLE, CONCAT_HALF, ADD)}
    ratios = {s: [b / a for a, b in zip(v, v[1:])] for s, v in per_block.items()}
    depths = list(range(1, 17 if quick else 33))
    laws = {s.name: growth_over_depths(ModelSpec(skip=s.name, **conv), depths)["flops"]
            for s in (CONCAT_DOUBLE, CONCAT_HALF, DENSE)}
    plain, add, dense = ten[PLAIN.name], ten[ADD.name], ten[DENSE.name]
    doubling, halving = ratios[CONCAT_DOUBLE.name], ratios[CONCAT_HALF.name]
    doubling_law, halving_law = laws[CONCAT_DOUBLE.name], laws[CONCAT_HALF.name]
    holds = (dense == 5 * add == 5 * plain
             and all(abs(r - 4) < 1e-9 for r in doubling)
             and all(abs(r - 1) < 1e-9 for r in halving))
    verdict = SUPPORTS if holds else CONTRADICTS
    outcome = (f"The cost model gives {plain:,} / {add:,} / {dense:,} block parameters for "
               f"{PLAIN.name} / {ADD.name} / {DENSE.name} in the 10-layer example ({dense / add:.1f}x for "
               f"concatenation); a same-padding conv that doubles its channels costs {min(doubling):.2f}x to "
               f"{max(doubling):.2f}x its predecessor (growth law: {doubling_law['law']}, "
               f"base {doubling_law['coefficients'].get('base', float('nan')):.2f}), one that halves and "
               f"carries half costs {min(halving):.2f}x (law of the total: {halving_law['law']}). "
               f"Verdict: {verdict} the claim (exact counts: the claimed 5x, 4x and 1x "
               f"{'hold' if holds else 'do not all hold'}; no noise, so no test).")
    return {"claim": CLAIM, "outcome": outcome, "verdict": verdict, "regime": None, "ten_layer_blocks": ten, "per_block_flops": per_block,
            "per_block_ratio": ratios, "flops_laws": {s: {"law": g["law"], "coefficients": g["coefficients"]}
                                                       for s, g in laws.items()}}
