"""``report.md``: the study's verdict and tables, from the store alone (so ``skiplab report``
can rebuild it at any time, and a partial store gives a partial report that says so)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..store import Store
from ..experiments.figures import figure_stem
from .content import (ReportData, describe_experiment, describe_plan, experiments_note, load_report_data,
                      provenance, status)
from .figures import RenderedFigure
from ..metrics import ACCURACY
from .regime import regime_lines
from .tables import Table, accuracy_table, cost_table, gradient_table, size_table, throughput_table
from .verdict import best_per_depth, leaders, verdict, versus_add
from ..errors import UserError

GROUP_TITLES = {"equal-width": "Test accuracy at equal width",
                "matched-params": "Test accuracy at a matched parameter budget"}
QUESTION = ("Should a skip connection add the earlier activations (ResNet) or concatenate them (DenseNet)? "
            "Each strategy was trained on the same data at several depths, {where}; mean +- std of test accuracy "
            "over seeds.")  # where: ReportData.trained_where()
MISSING_SHOWN = 20  # list at most this many missing configurations, then a count


def _md_table(table: Table) -> str:
    headers, rows = table
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _figures(figures: Sequence[RenderedFigure], section: str, base: Path) -> list[str]:
    out = []
    for f in figures:
        if f.section == section:
            out += ["", f"![{f.title}]({Path(os.path.relpath(f.png, base)).as_posix()})", "", f.caption]
    return out


def status_lines(data: ReportData) -> list[str]:
    """What the store lacks: no runs at all, or which planned runs are missing."""
    text = status(data)
    if text is None:
        return []
    lines = [f"**{text}**"]
    if data.missing:
        lines += ["", "Not yet finished:", "", *(f"- {m}" for m in data.missing[:MISSING_SHOWN])]
        if len(data.missing) > MISSING_SHOWN:
            lines.append(f"- and {len(data.missing) - MISSING_SHOWN} more configurations")
    return lines


def provenance_lines(data: ReportData) -> list[str]:
    hashes = sorted({r["spec_hash"] for r in data.runs})
    return ([f"- {label}: {text}" for label, text in provenance(data)]
            + ["- spec hashes: " + ", ".join(hashes[:8]) + (" ..." if len(hashes) > 8 else "")])


def experiment_lines(data: ReportData, figures: Sequence[RenderedFigure], base: Path) -> list[str]:
    """Per stored experiment: which result, its claim, its outcome, a link to its figure."""
    by_name = {f.name: f for f in figures if f.section == "experiments"}
    lines = []
    for e in data.experiments:
        lines += ["", f"### {e.name}", "", describe_experiment(e), "",
                  f"**Claim:** {e.result.get('claim', '(not stored)')}", "",
                  f"**Outcome:** {e.result.get('outcome', '(not stored)')}"]
        fig = by_name.get(figure_stem(e.name))
        if fig:
            lines += _figures([fig], "experiments", base)
    note = experiments_note(data)
    return lines + (["", note] if note else [])


def markdown_report(data: ReportData, figures: Sequence[RenderedFigure] = (), base: Path = Path(".")) -> str:
    """The report as Markdown; figure links are relative to ``base`` (the report's folder)."""
    parts = ["# skiplab study report", "", QUESTION.format(where=data.trained_where()).replace("test accuracy", data.metric.name)]
    status = status_lines(data)
    if status:
        parts += ["", *status]
    if data.plan:
        parts += ["", describe_plan(data.plan)]
    parts += ["", "## Verdict", ""]
    lead = leaders(data)
    if lead:  # the table a reader scans first: per depth, the leader or the tied set
        parts += ["Leaders per depth (Holm-adjusted over the report's comparisons):", "", _md_table(lead), ""]
    vs = versus_add(data)
    if vs:
        parts += ["Each strategy against add (Welch's t-test over seeds, Holm-adjusted):", "", _md_table(vs), ""]
    parts += [f"- {line}" for line in verdict(data)]
    regime = regime_lines(data)
    if regime:
        parts += ["", regime[0], "", *(f"- {line}" for line in regime[1:-1]), "", regime[-1]]
    for group, title in GROUP_TITLES.items():
        g = data.group_rows(group)
        if not g:
            continue
        if data.metric is not ACCURACY:  # a language model's store: "Validation bpc at equal width"
            title = title.replace("Test accuracy", data.metric.name.capitalize())
        parts += ["", f"## {title}", "", _md_table(accuracy_table(g)), "", "Best per depth:", "",
                  *(f"- {line}" for line in best_per_depth(data, group)),
                  "", "Sizes (width, strategy options: parameters):", "",
                  _md_table(size_table(g, data.budget if group == "matched-params" else None))]
        speed = throughput_table(g)
        if speed:
            parts += ["", "Training tokens per second, per run (on the machine in Provenance):", "", _md_table(speed)]
    other = data.other_rows()
    if other:
        parts += ["", "## Other runs (not in the current plan)", "",
                  "Runs stored by earlier plans or by `skiplab train` into the same folder.", "",
                  _md_table(accuracy_table(other))]
    training_figures = _figures(figures, "training", base)
    if training_figures:
        parts += ["", "## Training figures", *training_figures]
    if data.costs:
        parts += ["", "## Cost (counted on the model, per sample; memory for one training batch)", "",
                  _md_table(cost_table(data.costs)), *_figures(figures, "cost", base)]
    if data.gradients:
        parts += ["", "## Gradient flow at init (equal width)", "",
                  "First block's weight-gradient norm over the last block's (mean, and min..max over seeds); "
                  "far below 1: the gradient vanishes before it reaches the first blocks.", "",
                  _md_table(gradient_table(data.gradients)), *_figures(figures, "gradients", base)]
    parts += ["", "## Experiments", *experiment_lines(data, figures, base)]
    if data.runs:
        parts += ["", "## Provenance", "", *provenance_lines(data)]
    return "\n".join(parts) + "\n"


def write_markdown(text: str, out: str | os.PathLike) -> Path:
    path = Path(out) / "report.md"
    tmp = path.with_suffix(f".md.{os.getpid()}.tmp")  # per process: two commands may write one report
    try:
        tmp.write_text(text)
        os.replace(tmp, path)  # never a half-written report
    except OSError as e:
        raise UserError(f"report: cannot write {path}: {e.strerror or e}") from None
    return path


def write_markdown_report(store: Store, out: str | os.PathLike) -> Path:
    """``out/report.md`` alone, without figures (``skiplab.report.write_report`` writes everything)."""
    return write_markdown(markdown_report(load_report_data(store), base=Path(out)), out)
