"""The report's tables as plain text cells (headers, rows), so ``report.md`` and
``report.html`` show the same numbers, each rendering them in its own markup."""

from __future__ import annotations

from ..skips import options_text

from typing import Any

from ..metrics import ACCURACY, metric_of
from ..results import stored_options, pct

Table = tuple[list[str], list[list[str]]]


def _grid(rows: list[dict[str, Any]], fmt) -> Table:
    """Strategies down, depths across; ``fmt(row or None)`` fills each cell."""
    depths = sorted({r["depth"] for r in rows})
    skips = list(dict.fromkeys(r["skip"] for r in rows))
    cell = {(r["skip"], r["depth"]): r for r in rows}
    return (["skip"] + [f"depth {d}" for d in depths],
            [[s] + [fmt(cell.get((s, d))) for d in depths] for s in skips])


def accuracy_table(rows: list[dict[str, Any]]) -> Table:
    """Cells: mean +- std of each row's metric over seeds (test accuracy in %, or a language
    model's bpc: :mod:`skiplab.metrics`) ("(1 seed)" where there is no spread), what
    diverged or failed, [n=seeds]."""

    def fmt(r: dict[str, Any] | None) -> str:
        if r is None:
            return "missing"
        extra = [f"{r[k]} {k}" for k in ("diverged", "failed") if r[k]]
        M = metric_of(r)
        score = (pct(r["score_mean"], r["score_std"], r["complete"]) if M is ACCURACY
                 else M.text(r["score_mean"], r["score_std"], r["complete"]))
        return (score
                + (f" ({', '.join(extra)})" if extra else "") + f" [n={r['complete']}]")

    return _grid(rows, fmt)


def throughput_table(rows: list[dict[str, Any]]) -> Table | None:
    """Cells: training tokens (predicted positions) per second of each configuration's runs
    (mean over seeds; a batched group's seeds share one figure), or None when no row has
    one (a classifier's runs)."""
    if not any(r.get("tokens_per_second_mean") for r in rows):
        return None

    def fmt(r: dict[str, Any] | None) -> str:
        v = r and r.get("tokens_per_second_mean")
        return f"{v:,.0f}" if v else "-"

    return _grid(rows, fmt)


def size_table(rows: list[dict[str, Any]], budget: int | None = None) -> Table:
    """Cells: the width (and dense growth) each strategy got, its parameters, and how far
    off the budget it landed where that is more than 2%."""

    def fmt(r: dict[str, Any] | None) -> str:
        if r is None:
            return "-"
        opts = stored_options(r)
        size = f"w={r['width']}" + (f", {options_text(opts)}" if opts else "")
        if not r["params"]:
            return size
        off = r["params"] / budget - 1 if budget else 0
        return f"{size}: {r['params']:,}" + (f" ({100 * off:+.1f}% off budget)" if abs(off) > 0.02 else "")

    return _grid(rows, fmt)


def cost_table(costs: list[dict[str, Any]]) -> Table:
    """One row per configuration; for the concatenating strategies both activation bills
    (``memory`` naive and efficient, docs/memory-efficient.md), when stored."""
    both = any("activation_bytes_by_memory" in c for c in costs)

    def bills(c: dict[str, Any]) -> list[str]:
        by = c.get("activation_bytes_by_memory")
        return [f"{by['naive'] / 2**20:.3g}", f"{by['efficient'] / 2**20:.3g}"] if by else ["", ""]

    return (["group", "skip", "depth", "width", "options", "params", "MFLOPs", "activation MiB",
             *(["naive MiB", "efficient MiB"] if both else []), "concat MiB"],
            [[c["group"], c["skip"], str(c["depth"]), str(c["width"]), options_text(stored_options(c)) if stored_options(c) else "", f"{c['params']:,}",
              f"{c['flops'] / 1e6:.3g}", f"{c['activation_bytes'] / 2**20:.3g}", *(bills(c) if both else []),
              f"{c['concat_bytes'] / 2**20:.3g}"]
             for c in costs])


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def gradient_table(grads: list[dict[str, Any]]) -> Table:
    return (["skip", "depth", "first/last", "min..max", "vanishing from block"],
            [[g["skip"], str(g["depth"]), _ratio(g["first_last_ratio"]),
              f"{_ratio(g['first_last_ratio_min'])}..{_ratio(g['first_last_ratio_max'])}",
              str(g["vanishing_block"] or "none")] for g in grads])
