"""The report (report.html, report.md, figures) on synthetic stores: every section, the
verdict's numbers checked against a hand computation from the stored runs, partial and
empty stores, escaping, nothing external in the page, one-line errors from the command.
No timing here: benchmarks/report_render.py measures the render time."""

import dataclasses
import html
import json
import math
import re
import statistics

import pytest

from skiplab.cli import main
from skiplab.report import write_report
from skiplab.report.figures import FIGURES, pareto_front
from skiplab.report.html import SECTIONS
from skiplab.report.synthetic import synthetic_store
from skiplab.run.config import TrainConfig
from skiplab.store import Store
from skiplab.study import StudyPlan

PLAN = StudyPlan(skips=("plain", "add", "dense"), depths=(2, 8), seeds=3, train=TrainConfig(epochs=2, evals=3))
RUNS = 3 * 2 * 2 * 3  # skips x depths x budgets x seeds


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    with synthetic_store(out, PLAN) as store:
        runs = store.runs()
        costs = store.meta("costs")
        files = write_report(store, out)
    return out, files, runs, costs


def _html(out):
    return (out / "report.html").read_text()


def test_writes_page_markdown_and_every_figure_as_png_and_svg(full):
    out, files, runs, _ = full
    assert len(runs) == RUNS
    expected = {"report.html", "report.md"} | {f"figures/{n}.{ext}" for n in FIGURES for ext in ("png", "svg")}
    assert set(files) == expected
    for name, path in files.items():
        assert path == out / name and path.stat().st_size > 0
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if name.endswith(".svg"):
            assert "<svg" in path.read_text()[:2000]


def test_page_is_self_contained_with_every_section(full):
    page = _html(full[0])
    for sid, title in SECTIONS:
        assert f'<section id="{sid}"><h2>{title}</h2>' in page
    imgs = re.findall(r'<img src="([^"]*)"', page)
    assert len(imgs) == len(FIGURES) and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)
    assert '<link rel="icon" href="data:,">' in page  # no favicon request either
    assert "Partial results" not in page and "no runs" not in page


BOTH = "at equal width and at a matched parameter budget"


def test_the_question_says_both_groups_when_the_study_trained_both(full):
    out = full[0]
    for text in (_html(out), (out / "report.md").read_text()):
        assert f"{BOTH}." in text or f"{BOTH};" in text


def test_a_matched_budget_only_study_does_not_claim_equal_width(tmp_path):
    """A plan that trains every strategy at the matched budget only (as the transformer
    study does): the report's first sentence says so, and nothing of equal width."""
    plan = dataclasses.replace(PLAN, budget_only=PLAN.skips)
    with synthetic_store(tmp_path, plan) as store:
        assert {r["spec"]["group"] for r in store.runs()} == {"matched-params"}
        write_report(store, tmp_path)
    page, md = _html(tmp_path), (tmp_path / "report.md").read_text()
    question = page.split('<section id="question">', 1)[1].split("<p>", 1)[1].split("</p>", 1)[0]
    first = md.split("\n\n", 2)[1]  # after the title: the question (the plan's description follows)
    for text in (question, first):
        assert "at a matched parameter budget" in text
        assert "equal width" not in text and BOTH not in text


def test_error_edf_figure_with_its_reading_guide_in_both_forms(full):
    out = full[0]
    page, md = _html(out), (out / "report.md").read_text()
    assert (out / "figures" / "error-edf.svg").stat().st_size > 0
    assert '<figure id="fig-error-edf">' in page and "![Error distribution per strategy (EDF)](figures/error-edf.png)" in md
    guide = "Reading guide: a point (x, y) on a strategy's curve says that a share y of its runs reached test error x"
    assert html.escape(guide) in page and guide in md


def _mean_sd(runs, group, skip, depth):
    acc = [r["result"]["test_accuracy"] for r in runs if r["spec"]["group"] == group
           and r["spec"]["model"]["skip"] == skip and r["spec"]["model"]["depth"] == depth]
    return statistics.fmean(acc), statistics.stdev(acc), len(acc)


def test_verdict_states_the_numbers_it_rests_on(full):
    """Checked against a hand computation: difference of means, and the standard error of
    that difference, sqrt(s_a^2/n_a + s_b^2/n_b), in points ("beat" or "tied" is decided by
    the test: tests/test_verdict.py checks that on stores whose answer is known)."""
    out, _, runs, costs = full
    page, md = _html(out), (out / "report.md").read_text()
    for group in ("matched-params", "equal-width"):
        for depth in PLAN.depths:
            ma, sa, na = _mean_sd(runs, group, "add", depth)
            md_, sd, nd = _mean_sd(runs, group, "dense", depth)
            d = 100 * (md_ - ma)
            se = 100 * math.sqrt(sa ** 2 / na + sd ** 2 / nd)
            numbers = f"{abs(d):.1f} +- {se:.1f} points, adjusted p"  # Holm over the report's family
            text = (f"at depth {depth}, add and dense tied (difference {numbers}",
                    f"at depth {depth}, {'dense beat add' if d > 0 else 'add beat dense'} by {numbers}")
            assert any(t in page for t in text) and any(t in md for t in text)
    assert "At a matched budget of 100,000 parameters, test accuracy over 3 seeds: " in page
    eq = {(c["skip"], c["depth"]): c for c in costs if c["group"] == "equal-width"}
    a, b = eq[("add", 8)], eq[("dense", 8)]
    ratio = f"needs {b['params'] / a['params']:.2f} times the parameters of add ({b['params']:,} vs {a['params']:,})"
    assert ratio in page and ratio in md
    mean, sd, n = _mean_sd(runs, "matched-params", "plain", 8)
    assert f"{100 * mean:.1f} +- {100 * sd:.1f} [n={n}]" in page  # the accuracy table's cell


def test_provenance_names_versions_hardware_seeds_and_hashes(full):
    out, _, runs, _ = full
    page = _html(out)
    prov = page[page.index('<section id="provenance">'):]
    assert f"torch {runs[0]['versions']['torch']}" in prov and runs[0]["hardware"]["cpu"] in prov
    assert "<b>seeds:</b> 0, 1, 2" in prov
    for h in {r["spec_hash"] for r in runs}:
        assert h in prov
    assert "the last study invocation took" in prov


def test_partial_store_says_what_is_missing(tmp_path):
    with synthetic_store(tmp_path, PLAN, runs=RUNS - 4) as store:  # the last config lacks 3 seeds, one more 1
        files = write_report(store, tmp_path)
    page, md = _html(tmp_path), (tmp_path / "report.md").read_text()
    for text in (page, md):
        assert f"Partial results: {RUNS - 4} of {RUNS} planned runs are stored" in text
        assert "matched-params, dense, depth 8: 0 of 3 seeds finished" in text
        assert "matched-params, add, depth 8: 2 of 3 seeds finished" in text
    assert "missing" in md  # the accuracy table's empty cell
    assert "figures/accuracy-vs-depth.png" in files  # what exists is still drawn


@pytest.mark.parametrize("with_plan", [False, True], ids=["bare", "plan-no-runs"])
def test_empty_store_renders_a_page_that_says_so(tmp_path, with_plan):
    if with_plan:  # a study that stored its plan, costs and gradients, then was stopped before any run
        synthetic_store(tmp_path, PLAN, runs=0).close()
    else:
        Store(tmp_path).close()
    assert main(["report", "--out", str(tmp_path)]) == 0
    page = _html(tmp_path)
    assert "The store holds no runs yet" in page and "No training runs are stored yet" in page
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in page
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == (["cost-vs-depth.png", "cost-vs-depth.svg", "gradient-ratio.png", "gradient-ratio.svg"]
                       if with_plan else [])
    assert "The store holds no runs yet" in (tmp_path / "report.md").read_text()


def test_text_from_the_store_is_escaped(tmp_path):
    with Store(tmp_path) as store:
        spec = PLAN.runs()[0].to_dict()
        spec["group"] = "<script>alert(1)</script>"
        store.add_run(spec, "h&<x>", 0, "complete", {"test_accuracy": 0.5, "train_accuracy": 0.6, "params": 10,
                                                     "seconds": 1.0}, [], "2026-01-01T00:00:00+00:00")
        write_report(store, tmp_path)
    page = _html(tmp_path)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "h&amp;&lt;x&gt;" in page


def test_cli_report_json_and_one_line_errors(tmp_path, capsys):
    synthetic_store(tmp_path / "ok", PLAN).close()
    assert main(["report", "--out", str(tmp_path / "ok"), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)
    assert files["report.html"].endswith("report.html") and "figures/training-curves.svg" in files
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "runs.db").write_bytes(b"not a database" * 100)
    assert main(["report", "--out", str(tmp_path / "bad")]) == 2
    assert main(["report", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("skiplab: error: store: ") for line in err)


def test_pareto_front_matches_brute_force():
    import random
    rng = random.Random(0)
    for _ in range(50):
        pts = [(rng.choice([1, 2, 3, 4, 5]), rng.choice([0.1, 0.2, 0.3, 0.4])) for _ in range(rng.randint(1, 12))]
        dominated = {i for i, (c, a) in enumerate(pts) for (c2, a2) in pts
                     if c2 <= c and a2 >= a and (c2, a2) != (c, a)}
        front = pareto_front(pts)
        # duplicates of a front point: one of them is kept
        assert {pts[i] for i in front} == {p for i, p in enumerate(pts) if i not in dominated}
        assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)
