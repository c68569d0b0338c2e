"""From stored runs to tables: mean +- std over seeds per configuration."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from .skips import STRATEGIES


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (group, dataset, spec_hash): the configuration, how many seeds finished,
    diverged or failed, and test/train accuracy mean and std over the complete ones."""
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_key[r["spec_hash"]].append(r)
    rows = []
    for spec_hash, rs in by_key.items():
        spec = rs[0]["spec"]
        m = spec["model"]
        done = [r for r in rs if r["status"] == "complete"]
        acc = [r["result"]["test_accuracy"] for r in done]
        tr = [r["result"]["train_accuracy"] for r in done]
        rows.append({
            "spec_hash": spec_hash, "group": spec.get("group", ""), "dataset": spec["dataset"],
            "model": m["model"], "skip": m["skip"], "depth": m["depth"], "width": m["width"],
            "options": m.get("options", {}), "norm": m["norm"],
            "params": rs[0]["result"].get("params"),
            "seeds": len(rs), "complete": len(done),
            "diverged": sum(r["status"] == "diverged" for r in rs),
            "failed": sum(r["status"] == "failed" for r in rs),
            "test_accuracy_mean": statistics.fmean(acc) if acc else None,
            "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else (0.0 if acc else None),
            "train_accuracy_mean": statistics.fmean(tr) if tr else None,
            "seconds_mean": statistics.fmean(r["result"]["seconds"] for r in done) if done else None,
        })
    order = {name: i for i, name in enumerate(STRATEGIES)}  # registry order, plain first
    rows.sort(key=lambda r: (r["group"], r["dataset"], r["depth"], order.get(r["skip"], 99), r["width"]))
    return rows


def stored_options(d: dict[str, Any]) -> dict[str, Any]:
    """A stored row's strategy options (a round-1 row kept dense's growth in its own key)."""
    if d.get("options"):
        return dict(d["options"])
    return {"growth": d["growth"]} if d.get("growth") else {}


def pct(mean: float | None, std: float | None) -> str:
    """``71.3 +- 0.8`` (percent), or ``-`` when nothing finished."""
    if mean is None:
        return "-"
    return f"{100 * mean:.1f} +- {100 * (std or 0):.1f}"
