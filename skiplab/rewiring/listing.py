"""What ``skiplab rewire --dry-run`` shows: the merges found, what each becomes under each
strategy, and the cost before and after (``skiplab.profile``: parameters, matmul FLOPs,
merge FLOPs, one forward of the example batch, per sample)."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ..profiling import UncountedOpsWarning, profile
from ..textable import table
from . import ORIGINAL, Plan, plan, rewire
from .find import fmt


def cost(model: nn.Module, example: Any) -> dict[str, Any]:
    """Parameters, and forward FLOPs and merge FLOPs per sample, of ``model`` on ``example``
    (a tensor batch) in eval mode; ``uncounted_ops`` as the profiler names them."""
    was = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UncountedOpsWarning)
            p = profile(model, example, backward=False)
    finally:
        model.train(was)
    batch = example.shape[0] if example.dim() else 1
    return {"params": p.total["params"], "flops_per_sample": p.total["flops"] / batch,
            "merge_flops_per_sample": p.total["merge_flops"] / batch, "uncounted_ops": dict(p.uncounted_ops)}


def dry_run(model: nn.Module, skips: list[str], example: Any, options: dict[str, dict[str, Any]],
            channel_dim: int | None = None) -> dict[str, Any]:
    """The merges of ``model`` and, per strategy, what each becomes and what the rewired
    model costs (UserError, one line, where a strategy cannot apply)."""
    found: Plan = plan(model, example, channel_dim)
    rewired = {skip: rewire(model, skip, example, found=found, **options.get(skip, {})) for skip in skips}
    merges = []
    for i, m in enumerate(found.merges):
        row = {**m.to_dict(), "shape_text": fmt(m.shape, found.batch), "becomes": {}}
        for skip, r in rewired.items():
            row["becomes"][skip] = r.skiplab_rewiring.rows()[i]["becomes"]
        merges.append(row)
    costs = {ORIGINAL: cost(model, example)}
    for skip, r in rewired.items():
        costs[skip] = {**cost(r, example), "options": dict(r.skiplab_rewiring.options),
                       "starts_as_original": r.skiplab_rewiring.strategy.starts_as_residual}
    return {"model": found.model, "batch": found.batch, "merges": merges, "rewired": len(found.rewired),
            "traced": found.traced,
            "untraced": [{"module": n, "class": c, "why": w} for n, c, w in found.untraced], "costs": costs}


def dry_run_text(d: dict[str, Any], target: str, input_text: str) -> str:
    skips = [k for k in d["costs"] if k != ORIGINAL]
    n, r = len(d["merges"]), d["rewired"]
    lines = [f"{target} ({d['model']}): {n} residual merge{'s' * (n != 1)} found, {r} rewired, on a batch of "
             f"{input_text}"]
    rows = [[m["name"], m["found_by"], m["skip"], m["branch"], m["shape_text"],
             *[m["becomes"][s] for s in skips]] for m in d["merges"]]
    lines.append(table(["merge", "found by", "skip", "branch", "shape", *[f"becomes ({s})" for s in skips]], rows))
    if d["untraced"]:
        classes: dict[str, int] = {}
        for u in d["untraced"]:
            classes[u["class"]] = classes.get(u["class"], 0) + 1
        lines.append("not searched (torch.fx could not trace their own forward; no known block pattern): "
                     + ", ".join(f"{c} x{k}" if k > 1 else c for c, k in classes.items()))
    cells = []
    for name, c in d["costs"].items():
        start = "-" if name == ORIGINAL else ("the original's output" if c["starts_as_original"] else "differs")
        cells.append([name, f"{c['params']:,}", f"{c['flops_per_sample'] / 1e6:,.4f}",
                      f"{c['merge_flops_per_sample'] / 1e6:,.4f}", start])
    lines.append("cost per sample, one forward (skiplab.profile)")
    lines.append(table(["model", "params", "MFLOPs", "merge MFLOPs", "at init"], cells))
    uncounted = sorted({op for c in d["costs"].values() for op in c["uncounted_ops"]})
    if uncounted:
        lines.append("NOT COUNTED, no FLOP rule: " + ", ".join(uncounted))
    return "\n".join(lines)
