"""From stored runs to tables: mean +- std over seeds per configuration.

A spread needs two seeds: with one, ``test_accuracy_std`` is None and the text says
"(1 seed)" rather than "+- 0.0", which would claim a run-to-run agreement nobody measured."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .metrics import metric_of
from .skips import STRATEGIES, options_text
from .stats import mean_std, spread_text


REGIME_GROUP = "regime"  # a study's regime-check runs (skiplab.study.StudyPlan.regime_factor)


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (group, dataset, spec_hash): the configuration, how many seeds finished,
    diverged or failed, and test/train accuracy mean and std over the complete ones.
    ``test_accuracies`` keeps the per-seed values, so a comparison can test them
    (:func:`skiplab.stats.compare`); the std is None with fewer than two of them.

    Each row also names the ``metric`` its configuration is judged by
    (:func:`skiplab.metrics.metric_of`: ``val_bpc`` for a language model, else
    ``test_accuracy``) with its per-seed ``scores`` and their ``score_mean`` and
    ``score_std``, so that tables and verdicts compare whichever number it is."""
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
        acc_mean, acc_std = mean_std(acc)
        tr_mean, _ = mean_std([r["result"].get("train_accuracy") for r in done])
        metric = metric_of(rs)
        scores = [r["result"][metric.key] for r in done if r["result"].get(metric.key) is not None]
        score_mean, score_std = mean_std(scores)
        rows.append({
            "spec_hash": spec_hash, "group": spec.get("group", ""), "dataset": spec["dataset"],
            "model": m["model"], "skip": m["skip"], "depth": m["depth"], "width": m["width"],
            "options": m.get("options", {}), "norm": m.get("norm"),
            "params": rs[0]["result"].get("params"),
            "seeds": len(rs), "complete": len(done),
            "diverged": sum(r["status"] == "diverged" for r in rs),
            "failed": sum(r["status"] == "failed" for r in rs),
            "test_accuracies": acc,
            "test_accuracy_mean": acc_mean,
            "test_accuracy_std": acc_std,
            "train_accuracy_mean": tr_mean,
            "seconds_mean": mean_std([r["result"].get("seconds") for r in done])[0],
            "metric": metric.key, "scores": scores, "score_mean": score_mean, "score_std": score_std,
            "tokens_per_second_mean": mean_std([r["result"].get("tokens_per_second") for r in done])[0],
        })
    order = {name: i for i, name in enumerate(STRATEGIES)}  # registry order, plain first
    rows.sort(key=lambda r: (r["group"], r["dataset"], r["depth"], order.get(r["skip"], 99), r["width"]))
    return rows


def stored_options(d: dict[str, Any]) -> dict[str, Any]:
    """A stored row's strategy options (a round-1 row kept dense's growth in its own key)."""
    if d.get("options"):
        return dict(d["options"])
    return {"growth": d["growth"]} if d.get("growth") else {}


def cost_key(d: dict[str, Any]) -> tuple:
    """What ties a run or an aggregated row to the analytic cost summary a study stored
    for its configuration: group, strategy, depth, width and strategy options."""
    return d["group"], d["skip"], d["depth"], d["width"], options_text(stored_options(d))


def pct(mean: float | None, std: float | None, n: int, sign: bool = False) -> str:
    """``71.3 +- 0.8`` (percent) over ``n`` seeds, ``71.3 (1 seed)`` with one, ``-`` with none;
    ``sign`` puts the percent sign in: ``71.3 +- 0.8%``, ``71.3% (1 seed)``."""
    text = spread_text(mean, std, n, scale=100)
    if not sign or text == "-":
        return text
    value, _, note = text.partition(" (")
    return f"{value}%" + (f" ({note}" if note else "")
