"""``report.md``: the study's tables, from the store alone (so ``skiplab report`` can
rebuild it at any time, and a partial store gives a partial report that says so)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..results import aggregate, pct
from ..store import Store

GROUP_TITLES = {"equal-width": "Test accuracy at equal width",
                "matched-params": "Test accuracy at a matched parameter budget"}


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _accuracy_table(rows: list[dict[str, Any]]) -> str:
    """Rows: strategies; columns: depths; cells: mean +- std over seeds (% test accuracy)."""
    depths = sorted({r["depth"] for r in rows})
    skips = list(dict.fromkeys(r["skip"] for r in rows))
    cell = {(r["skip"], r["depth"]): r for r in rows}

    def fmt(r: dict[str, Any] | None) -> str:
        if r is None:
            return "missing"
        text = pct(r["test_accuracy_mean"], r["test_accuracy_std"])
        extra = []
        if r["diverged"]:
            extra.append(f"{r['diverged']} diverged")
        if r["failed"]:
            extra.append(f"{r['failed']} failed")
        return text + (f" ({', '.join(extra)})" if extra else "") + f" [n={r['complete']}]"

    return _md_table(["skip"] + [f"depth {d}" for d in depths],
                     [[s] + [fmt(cell.get((s, d))) for d in depths] for s in skips])


def _size_table(rows: list[dict[str, Any]], budget: int | None = None) -> str:
    depths = sorted({r["depth"] for r in rows})
    skips = list(dict.fromkeys(r["skip"] for r in rows))
    cell = {(r["skip"], r["depth"]): r for r in rows}

    def fmt(r):
        if r is None:
            return "-"
        size = f"w={r['width']}" + (f", k={r['growth']}" if r["growth"] else "")
        if not r["params"]:
            return size
        off = r["params"] / budget - 1 if budget else 0
        return f"{size}: {r['params']:,}" + (f" ({100 * off:+.1f}% off budget)" if abs(off) > 0.02 else "")

    return _md_table(["skip"] + [f"depth {d}" for d in depths],
                     [[s] + [fmt(cell.get((s, d))) for d in depths] for s in skips])


def _verdict(rows: list[dict[str, Any]]) -> list[str]:
    """Per depth: the best strategy by mean test accuracy and its margin over the next."""
    out = []
    by_depth: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["test_accuracy_mean"] is not None:
            by_depth[r["depth"]].append(r)
    for depth in sorted(by_depth):
        ranked = sorted(by_depth[depth], key=lambda r: -r["test_accuracy_mean"])
        best = ranked[0]
        line = f"- depth {depth}: **{best['skip']}** {pct(best['test_accuracy_mean'], best['test_accuracy_std'])}%"
        if len(ranked) > 1:
            nxt = ranked[1]
            gap = 100 * (best["test_accuracy_mean"] - nxt["test_accuracy_mean"])
            line += f", {gap:.1f} points ahead of {nxt['skip']} ({pct(nxt['test_accuracy_mean'], nxt['test_accuracy_std'])}%)"
        worst = ranked[-1]
        if len(ranked) > 2:
            line += f"; last: {worst['skip']} {pct(worst['test_accuracy_mean'], worst['test_accuracy_std'])}%"
        out.append(line)
    return out


def markdown_report(store: Store) -> str:
    runs = store.runs()
    plan = store.meta("plan")
    in_plan = set(store.meta("plan_configs") or [r["spec_hash"] for r in runs])
    rows = aggregate(runs)
    for r in rows:  # runs of an earlier, different plan are shown apart
        if r["spec_hash"] not in in_plan:
            r["group"] = f"other: {r['group']}"
    parts = ["# skiplab study report", ""]
    parts.append("Should a skip connection add the earlier activations (ResNet) or concatenate them "
                 "(DenseNet)? Each strategy was trained on the same data at several depths, at equal "
                 "width and at a matched parameter budget; mean +- std of test accuracy over seeds.")
    if not runs:
        parts += ["", "**The store holds no runs yet.**"]
        return "\n".join(parts) + "\n"
    expected = (len(plan["skips"]) * len(plan["depths"]) * 2 * plan["seeds"]) if plan else None
    finished = sum(r["status"] in ("complete", "diverged") and r["spec_hash"] in in_plan for r in runs)
    if expected and finished < expected:
        parts += ["", f"**Partial results: {finished} of {expected} planned runs are stored**; "
                      "missing cells say `missing`. Run the study again to complete it."]
    if plan:
        m, t = plan["model"], plan["train"]
        parts += ["", f"Data: `{plan['dataset']}`. Model: {m['model']}, width {m['width']}, norm {m['norm']}, "
                      f"activation {m['activation']}, init {m['init']}; dense growth {plan['dense_growth']} at equal "
                      f"width. Training: {t['optimizer']}, lr {t['lr']}, {t['schedule']} schedule, batch "
                      f"{t['batch_size']}, {t['epochs']} epochs. Matched budget: {plan['budget_params']:,} "
                      f"parameters. Seeds: {plan['seeds']}."]
    for group, title in GROUP_TITLES.items():
        g = [r for r in rows if r["group"] == group]
        if not g:
            continue
        parts += ["", f"## {title}", "", _accuracy_table(g), "", "Best per depth:", "", *_verdict(g),
                  "", "Sizes (width, dense growth: parameters):", "",
                  _size_table(g, plan["budget_params"] if plan and group == "matched-params" else None)]
    other = [r for r in rows if r["group"] not in GROUP_TITLES]
    if other:
        parts += ["", "## Other runs (not in the current plan)", "",
                  "Runs stored by earlier plans or by `skiplab train` into the same folder.", "",
                  _accuracy_table(other)]
    costs = store.meta("costs")
    if costs:
        parts += ["", "## Cost (analytic, per sample; memory for one training batch)", "",
                  _md_table(["group", "skip", "depth", "width", "growth", "params", "MFLOPs", "activation MiB",
                             "concat MiB"],
                            [[c["group"], c["skip"], c["depth"], c["width"], c["growth"] or "", f"{c['params']:,}",
                              f"{c['flops'] / 1e6:.3g}", f"{c['activation_bytes'] / 2**20:.3g}",
                              f"{c['concat_bytes'] / 2**20:.3g}"] for c in costs])]
    grads = store.meta("gradients")
    if grads:
        def ratio(v):
            return "-" if v is None else f"{v:.3g}"
        parts += ["", "## Gradient flow at init (equal width)", "",
                  "First block's weight-gradient norm over the last block's (mean, and min..max over seeds); "
                  "far below 1: the gradient vanishes before it reaches the first blocks.", "",
                  _md_table(["skip", "depth", "first/last", "min..max", "vanishing from block"],
                            [[g["skip"], g["depth"], ratio(g["first_last_ratio"]),
                              f"{ratio(g['first_last_ratio_min'])}..{ratio(g['first_last_ratio_max'])}",
                              g["vanishing_block"] or "none"] for g in grads])]
    v = runs[-1]["versions"]
    hw = runs[-1]["hardware"]
    secs = store.meta("last_study_seconds")
    parts += ["", "## Provenance", "",
              f"- {len(runs)} runs stored in `runs.db` ({finished} finished), first started {runs[0]['started_at']}, "
              f"last finished {max(r['finished_at'] for r in runs)}"
              + (f"; the last study invocation took {secs:.0f} s" if secs else ""),
              f"- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
              f"- hardware: {hw.get('cpu')}, {hw.get('cores')} cores" + (f", GPU {hw['gpu']}" if hw.get("gpu") else ""),
              "- spec hashes: " + ", ".join(sorted({r['spec_hash'] for r in runs})[:8])
              + (" ..." if len({r['spec_hash'] for r in runs}) > 8 else "")]
    return "\n".join(parts) + "\n"


def write_markdown_report(store: Store, out: str | os.PathLike) -> Path:
    path = Path(out) / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(markdown_report(store))
    os.replace(tmp, path)  # never a half-written report
    return path
