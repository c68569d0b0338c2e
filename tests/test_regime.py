"""The regime check (issue 27): a study plan with ``regime_factor`` also trains add at each
depth that many times as long (seed 0), and the report says whether the plan's add is within
``regime_tolerance`` of it. Checked on synthetic stores whose answer is set by hand."""

import dataclasses

import pytest

from skiplab.report import write_report
from skiplab.report.content import load_report_data
from skiplab.report.regime import regime_cells, regime_lines
from skiplab.report.synthetic import synthetic_store
from skiplab.results import REGIME_GROUP
from skiplab.run.config import TrainConfig
from skiplab.skips import ADD
from skiplab.study import StudyPlan, plan_for

PLAN = StudyPlan(skips=("add", "dense"), budget_only=("add", "dense"), depths=(2, 4), seeds=2, budget_params=None,
                 train=TrainConfig(epochs=2, evals=2), regime_factor=2.0, regime_tolerance=0.05)


def test_plan_adds_one_longer_add_run_per_depth():
    runs = PLAN.runs()
    regime = [r for r in runs if r.group == REGIME_GROUP]
    assert [r.model.depth for r in regime] == [2, 4]
    for r in regime:
        assert r.model.skip == ADD.name and r.seed == 0 and r.train.epochs == 4
        short = [s for s in runs if s.group == "matched-params" and s.model == r.model and s.seed == 0]
        assert len(short) == 1 and short[0].train.epochs == 2  # the same model and seed, half the training
    assert len(runs) == 2 * 2 * 2 + 2
    assert StudyPlan(depths=(2,), regime_factor=0).regime_runs() == []


def test_the_transformer_study_checks_its_regime_in_both_forms():
    for quick in (False, True):
        plan = plan_for("transformer", quick=quick)
        assert plan.regime_factor == 2 and len(plan.regime_runs()) == len(plan.depths)


def _bpc(gap_at: dict[int, float]):
    """val bpc per run: 2.0 for the plan's runs, 2.0 - gap for the longer one."""
    def bpc(spec):
        return 2.0 - gap_at[spec.model.depth] if spec.group == REGIME_GROUP else 2.0
    return bpc


@pytest.mark.parametrize("gaps, verdict", [({2: 0.01, 4: 0.04}, "In the regime at every depth"),
                                            ({2: 0.01, 4: 0.2}, "Not in the regime at every depth")])
def test_report_says_whether_the_plan_is_in_the_regime(tmp_path, gaps, verdict):
    with synthetic_store(tmp_path, PLAN, bpc=_bpc(gaps)) as store:
        data = load_report_data(store)
        assert data.expected == len(PLAN.runs()) and not data.partial
        cells = regime_cells(data)
        assert [c.depth for c in cells] == [2, 4]
        assert [round(c.gap, 6) for c in cells] == [gaps[2], gaps[4]]
        assert cells[0].longer_steps == 2 * cells[0].steps
        lines = regime_lines(data)
        write_report(store, tmp_path)
    assert lines[-1].startswith(verdict)
    assert ("NOT within 0.05" in lines[2]) == (gaps[4] > 0.05)
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    for text in (md, page):
        assert "Regime check" in text and verdict in text
        assert "Other runs" not in text  # the longer runs are the check's, not "other" runs
    assert "Training tokens per second" in md


def test_a_missing_longer_run_is_reported_missing(tmp_path):
    runs = len(PLAN.runs()) - 1  # the last regime run not stored
    with synthetic_store(tmp_path, PLAN, runs=runs, bpc=_bpc({2: 0.01, 4: 0.01})) as store:
        data = load_report_data(store)
        assert data.partial and any(REGIME_GROUP in m and "depth 4" in m for m in data.missing)
        lines = regime_lines(data)
    assert lines[-1] == "The check is incomplete." and "missing" in lines[2]


def test_a_plan_without_the_check_reports_none(tmp_path):
    plan = dataclasses.replace(PLAN, regime_factor=0.0)
    with synthetic_store(tmp_path, plan, bpc=_bpc({2: 0, 4: 0})) as store:
        assert regime_lines(load_report_data(store)) == []


def test_the_gpu_preset_is_the_transformer_study_sized_up():
    plan = plan_for("transformer", preset="gpu")
    base = plan_for("transformer")
    assert (plan.model.width, plan.model.context, plan.depths) == (256, 256, (12,))
    assert plan.skips == base.skips and plan.seeds == 3 and plan.regime_factor == 2


@pytest.mark.parametrize("argv, message", [
    (["--preset", "gpu"], "preset: gpu is a preset of the full transformer study (--model transformer, without --quick)"),
    (["--model", "transformer", "--quick", "--preset", "gpu"], "preset: gpu is a preset of the full transformer study"),
    (["--model", "transformer", "--preset", "tpu"], "argument --preset: invalid choice: 'tpu'"),
])
def test_a_bad_preset_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    from skiplab.cli import main

    assert main(["study", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skiplab: error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_each_strategy_against_add_with_raw_and_adjusted_p(tmp_path):
    """The verdict's table of every strategy against add: a clear loss reads "lost to add"
    (bpc: higher is worse), a tie "tied"; the adjusted p is Holm's over the report's family,
    never below the test's own."""
    from skiplab.report.verdict import versus_add

    plan = StudyPlan(skips=("add", "dwa", "mhc"), budget_only=("add", "dwa", "mhc"), depths=(2,), seeds=3,
                     budget_params=None, train=TrainConfig(epochs=1, evals=1))
    noise = {0: 0.0, 1: 0.013, 2: -0.009}
    base = {"add": 2.0, "dwa": 2.002, "mhc": 2.5}
    with synthetic_store(tmp_path, plan, bpc=lambda s: base[s.model.skip] + noise[s.seed]) as store:
        head, rows = versus_add(load_report_data(store))
        write_report(store, tmp_path)
    got = {r[2]: r for r in rows}
    assert set(got) == {"dwa", "mhc"} and head[3] == "minus add (bpc)"
    assert got["mhc"][6] == "lost to add" and got["mhc"][3].startswith("+0.500")
    assert got["dwa"][6] == "tied"
    for r in rows:
        assert float(r[5]) >= float(r[4])  # adjusted >= raw
    assert "Each strategy against add" in (tmp_path / "report.md").read_text()
