"""``report.html``: the whole report in one file that opens offline.

Figures are inlined as base64 PNG (the SVG files sit beside it for print), the style sheet
is inline, there is no script and nothing is fetched: no CDN, no web font, not even a
favicon (``href="data:,"`` stops the browser asking for one). Every piece of text that
comes from the store passes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
import struct
from typing import Sequence

from .content import GROUPS, ReportData, describe_experiment, describe_plan, experiments_note, provenance, status
from ..experiments.figures import figure_stem
from .figures import RenderedFigure
from .regime import regime_lines
from .tables import Table, accuracy_table, cost_table, gradient_table, size_table, throughput_table
from .verdict import best_per_depth, leaders, verdict, versus_add

# (id, heading): every page has these sections, in this order, whatever the store holds.
SECTIONS = (("question", "The question"), ("verdict", "Verdict"), ("cost", "Cost"),
            ("gradients", "Gradient flow"), ("training", "Training"), ("experiments", "Experiments"),
            ("provenance", "Provenance"))

QUESTION = ("Why do skip connections add the earlier activations (ResNet) instead of concatenating them "
            "(DenseNet)? The usual answers are that concatenation multiplies parameters and compute, that it "
            "could emulate addition anyway, and that addition passes the gradient straight through to the first "
            "layers. This report measures each claim on one study: every strategy built at several depths, its "
            "cost counted exactly, its gradient flow measured at initialisation, and trained over several seeds "
            "{where}.")  # where: ReportData.trained_where()

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a;
       margin: 0; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid #e5e5e5; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
nav a { margin-right: 1rem; }
.meta { color: #666; font-size: .9rem; margin: 0; }
.status { background: #fff4e0; border-left: 4px solid #E69F00; padding: .6rem 1rem; margin: 1rem 0; }
.verdict li { margin-bottom: .4rem; }
.note { color: #666; font-style: italic; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .88rem; }
th, td { border: 1px solid #ddd; padding: .2rem .55rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: .9rem; }
details { margin: .6rem 0; }
summary { cursor: pointer; color: #0072B2; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85rem; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _is_number(text: str) -> bool:
    return text[:1].isdigit() or text[:1] in "+-." and text[1:2].isdigit()


def _table(table: Table) -> str:
    headers, rows = table
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{esc(c)}</td>" if _is_number(c) else f"<td>{esc(c)}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (bytes 16..24), so the page reserves the space."""
    return struct.unpack(">II", data[16:24])


def _figure(f: RenderedFigure) -> str:
    data = f.png.read_bytes()
    w, h = _png_size(data)
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f"<figure id=\"fig-{esc(f.name)}\"><img src=\"{src}\" alt=\"{esc(f.title)}\" width=\"{w}\" "
            f"height=\"{h}\"><figcaption><b>{esc(f.title)}.</b> {esc(f.caption)} Files: "
            f"<code>figures/{esc(f.png.name)}</code>, <code>figures/{esc(f.svg.name)}</code>.</figcaption></figure>")


def _note(text: str) -> str:
    return f"<p class=\"note\">{esc(text)}</p>"


def _figures(figures: Sequence[RenderedFigure], section: str) -> str:
    return "".join(_figure(f) for f in figures if f.section == section)


# -- sections ---------------------------------------------------------------------------
def _question(data: ReportData) -> str:
    out = f"<p>{esc(QUESTION.format(where=data.trained_where()))}</p>"
    if data.plan:
        out += f"<p>{esc(describe_plan(data.plan))}</p>"
    return out


def _verdict(data: ReportData) -> str:
    lead = leaders(data)  # the table a reader scans first: per depth, the leader or the tied set
    table = (f"<p>Leaders per depth (Holm-adjusted over the report's comparisons):</p>{_table(lead)}" if lead else "")
    vs = versus_add(data)
    if vs:
        table += f"<p>Each strategy against add (Welch's t-test over seeds, Holm-adjusted):</p>{_table(vs)}"
    regime = regime_lines(data)
    check = (f"<p>{esc(regime[0])}</p><ul>" + "".join(f"<li>{esc(line)}</li>" for line in regime[1:-1])
             + f"</ul><p>{esc(regime[-1])}</p>") if regime else ""
    return table + "<ul class=\"verdict\">" + "".join(f"<li>{esc(line)}</li>" for line in verdict(data)) + "</ul>" + check


def _cost(data: ReportData, figures: Sequence[RenderedFigure]) -> str:
    if not data.costs:
        return _note("The store holds no cost summaries (they are written by skiplab study).")
    return (_figures(figures, "cost")
            + f"<details open><summary>Analytic cost of every configuration ({len(data.costs)}): per sample; "
              "memory for one training batch</summary>" + _table(cost_table(data.costs)) + "</details>")


def _gradients(data: ReportData, figures: Sequence[RenderedFigure]) -> str:
    if not data.gradients:
        return _note("The store holds no gradient summaries (they are written by skiplab study).")
    return (_figures(figures, "gradients")
            + "<details open><summary>First block's weight-gradient norm over the last block's at init, equal width "
              "(mean, min..max over seeds)</summary>" + _table(gradient_table(data.gradients)) + "</details>")


def _training(data: ReportData, figures: Sequence[RenderedFigure]) -> str:
    if not data.runs:
        return _note("No training runs are stored yet.")
    out = ""
    for group, phrase in GROUPS.items():
        rows = data.group_rows(group)
        if not rows:
            out += _note(f"No runs {phrase} are stored.")
            continue
        budget = data.budget if group == "matched-params" else None
        M = data.metric  # test accuracy, or a language model's bpc (skiplab.metrics)
        unit = "%" if M.unit == "points" else M.unit
        out += (f"<h3>{esc(M.name.capitalize())} {esc(phrase)}" + (f" ({budget:,} parameters)" if budget else "")
                + "</h3>" + f"<p>Mean +- std over seeds ({esc(unit)}), [n = complete seeds].</p>"
                + _table(accuracy_table(rows))
                + "<p>Best per depth:</p><ul>" + "".join(f"<li>{esc(line)}</li>" for line in best_per_depth(data, group))
                + "</ul><details><summary>Sizes: width, strategy options and parameters of each configuration</summary>"
                + _table(size_table(rows, budget)) + "</details>")
        speed = throughput_table(rows)
        if speed:
            out += "<p>Training tokens per second, per run (on the machine in Provenance):</p>" + _table(speed)
    other = data.other_rows()
    if other:
        out += ("<h3>Other runs (not in the current plan)</h3><p>Runs stored by earlier plans or by skiplab train "
                "into the same folder.</p>" + _table(accuracy_table(other)))
    return out + _figures(figures, "training")


def _experiments(data: ReportData, figures: Sequence[RenderedFigure]) -> str:
    """Per stored experiment: which result, its claim, its outcome, its figure."""
    by_name = {f.name: f for f in figures if f.section == "experiments"}
    out = ("<p>Each named experiment tests one claim of the answers or of a paper; its outcome sentence is built "
           "from the measured numbers.</p>") if data.experiments else ""
    for e in data.experiments:
        fig = by_name.get(figure_stem(e.name))
        out += (f"<h3 id=\"{esc(figure_stem(e.name))}\">{esc(e.name)}</h3>"
                f"<p class=\"meta\">{esc(describe_experiment(e))}</p>"
                f"<p><b>Claim:</b> {esc(e.result.get('claim', '(not stored)'))}</p>"
                f"<p><b>Outcome:</b> {esc(e.result.get('outcome', '(not stored)'))}</p>")
        out += _figure(fig) if fig else _note("No figure: this result cannot be drawn (no figure for this "
                                              "experiment, or a result stored in another shape).")
    note = experiments_note(data)
    if note:  # its Markdown `code` spans become <code>
        out += "<p class=\"note\">" + re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(note)) + "</p>"
    return out


def _provenance(data: ReportData) -> str:
    facts = provenance(data)
    if not facts:
        return _note("No runs are stored, so there is nothing to attribute yet.")
    out = "<ul>" + "".join(f"<li><b>{esc(label)}:</b> {esc(text)}</li>" for label, text in facts) + "</ul>"
    by_hash: dict[str, list[dict]] = {}
    for r in data.runs:
        by_hash.setdefault(r["spec_hash"], []).append(r)
    rows = []
    for h in sorted(by_hash):
        rs = by_hash[h]
        m = rs[0]["spec"]["model"]
        rows.append([h, rs[0]["spec"].get("group", ""), m["skip"], str(m["depth"]), str(m["width"]),
                     ", ".join(str(r["seed"]) for r in rs), ", ".join(sorted({r["status"] for r in rs}))])
    out += (f"<details><summary>Spec hashes ({len(rows)} configurations)</summary>"
            + _table((["spec hash", "group", "skip", "depth", "width", "seeds", "status"], rows)) + "</details>")
    if data.plan:
        out += ("<details><summary>The study plan (JSON)</summary><pre>"
                + esc(json.dumps(data.plan, indent=1)) + "</pre></details>")
    return out


def html_report(data: ReportData, figures: Sequence[RenderedFigure] = (), source: str = "") -> str:
    """The page. ``source`` names the store it was built from (shown under the title)."""
    built = {"question": _question(data), "verdict": _verdict(data), "cost": _cost(data, figures),
             "gradients": _gradients(data, figures), "training": _training(data, figures),
             "experiments": _experiments(data, figures), "provenance": _provenance(data)}
    note = status(data)
    status_html = ""
    if note:
        status_html = f"<div class=\"status\" id=\"status\"><p><b>{esc(note)}</b></p>"
        if data.missing:
            status_html += ("<details><summary>Not yet finished: " + f"{len(data.missing)} configurations</summary><ul>"
                            + "".join(f"<li>{esc(m)}</li>" for m in data.missing) + "</ul></details>")
        status_html += "</div>"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>skiplab report: add or concatenate?</title><link rel=\"icon\" href=\"data:,\">",
        f"<style>{CSS}</style></head><body><main>",
        "<header><h1>Add or concatenate? The skiplab study report</h1>",
        f"<p class=\"meta\">Built {esc(stamp)}" + (f" from {esc(source)}" if source else "") + "</p></header>",
        status_html,
        "<nav>" + "".join(f"<a href=\"#{sid}\">{esc(title)}</a>" for sid, title in SECTIONS) + "</nav>",
        *(f"<section id=\"{sid}\"><h2>{esc(title)}</h2>{built[sid]}</section>" for sid, title in SECTIONS),
        "</main></body></html>\n",
    ])
