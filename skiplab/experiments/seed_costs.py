"""The answers' cost arithmetic, from the cost model: the 10-layer example (answer 2) and
channels doubling vs halving (answer 1).

No training and no seeds: these are exact counts of the analytic cost model (which the
cost tests check against PyTorch's own counters), so there is no noise to test and no
regime to reach; the verdict is whether the counts equal what the answers claim
(``supports``) or not (``contradicts``). ``--dataset`` and ``--workers`` do not apply.
"""

from __future__ import annotations

from typing import Any

from ..cost import analytic_cost, growth_over_depths
from ..spec import ModelSpec
from .outcome import CONTRADICTS, SUPPORTS

CLAIM = ("concatenating every layer costs 5x the parameters of the 10-layer example (answer 2); doubling "
         "channels grows conv cost 4x per layer, halving keeps it constant (answer 1)")


def run(ctx) -> dict[str, Any]:  # no form to vary: the counts are the answers' own examples
    quick = ctx.quick
    ten = {s: analytic_cost(ModelSpec(model="mlp", depth=9, width=100, skip=s, norm="none", bias=False,
                                      input_shape=(100,)))["params"]["blocks"] for s in ("plain", "add", "dense")}
    conv = dict(model="cnn1d", width=64, norm="none", kernel_size=3, input_shape=(1, 40))
    depth = 6 if quick else 10
    per_block = {s: [b["flops"] for b in analytic_cost(ModelSpec(skip=s, depth=depth, **conv))["per_block"]]
                 for s in ("concat-double", "concat-half", "add")}
    ratios = {s: [b / a for a, b in zip(v, v[1:])] for s, v in per_block.items()}
    depths = list(range(1, 17 if quick else 33))
    laws = {s: growth_over_depths(ModelSpec(skip=s, **conv), depths)["flops"] for s in ("concat-double", "concat-half", "dense")}
    holds = (ten["dense"] == 5 * ten["add"] == 5 * ten["plain"]
             and all(abs(r - 4) < 1e-9 for r in ratios["concat-double"])
             and all(abs(r - 1) < 1e-9 for r in ratios["concat-half"]))
    verdict = SUPPORTS if holds else CONTRADICTS
    outcome = (f"The cost model gives {ten['plain']:,} / {ten['add']:,} / {ten['dense']:,} block parameters for "
               f"plain / add / dense in the 10-layer example ({ten['dense'] / ten['add']:.1f}x for concatenation); "
               f"a same-padding conv that doubles its channels costs {min(ratios['concat-double']):.2f}x to "
               f"{max(ratios['concat-double']):.2f}x its predecessor (growth law: {laws['concat-double']['law']}, "
               f"base {laws['concat-double']['coefficients'].get('base', float('nan')):.2f}), one that halves and "
               f"carries half costs {min(ratios['concat-half']):.2f}x (law of the total: {laws['concat-half']['law']}). "
               f"Verdict: {verdict} the claim (exact counts: the claimed 5x, 4x and 1x "
               f"{'hold' if holds else 'do not all hold'}; no noise, so no test).")
    return {"claim": CLAIM, "outcome": outcome, "verdict": verdict, "regime": None, "ten_layer_blocks": ten, "per_block_flops": per_block,
            "per_block_ratio": ratios, "flops_laws": {s: {"law": g["law"], "coefficients": g["coefficients"]}
                                                       for s, g in laws.items()}}
