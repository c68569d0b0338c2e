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
        # (runs that measure no accuracy, e.g. long-skips' denoising U-Nets, have None here)
        acc = [r["result"]["test_accuracy"] for r in done if r["result"].get("test_accuracy") is not None]
        tr = [r["result"]["train_accuracy"] for r in done if r["result"].get("train_accuracy") is not None]
        rows.append({
            "spec_hash": spec_hash, "group": spec.get("group", ""), "dataset": spec["dataset"],
            "model": m["model"], "skip": m["skip"], "depth": m["depth"], "width": m["width"],
            "growth": m["growth"], "norm": m["norm"],
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


def pct(mean: float | None, std: float | None) -> str:
    """``71.3 +- 0.8`` (percent), or ``-`` when nothing finished."""
    if mean is None:
        return "-"
    return f"{100 * mean:.1f} +- {100 * (std or 0):.1f}"
