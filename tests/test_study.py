"""The study: resumable after kill -9 with nothing lost or duplicated, divergence stored,
the command line."""

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from skiplab.report import write_report_locked
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.runner import run_all
from skiplab.spec import ModelSpec
from skiplab.store import Store
from skiplab.study import StudyPlan, run_study

# A small plan: 2 strategies x 2 depths x 2 budgets x 2 seeds = 16 short runs.
PLAN = ("StudyPlan(skips=('plain', 'add'), depths=(1, 3), seeds=2, budget_params=20000,"
        " train=TrainConfig(epochs=2, evals=2))")
SCRIPT = f"""
import sys
from skiplab.study import StudyPlan, run_study
from skiplab.run.config import TrainConfig
if __name__ == "__main__":
    run_study(sys.argv[1], {PLAN}, workers=2)
"""


def _results(out):
    with Store(out) as s:
        return {(r["spec_hash"], r["seed"]): (r["status"], r["result"]["test_accuracy"], r["result"]["test_loss"])
                for r in s.runs()}


def _count(out):
    try:
        db = sqlite3.connect(out / "runs.db", timeout=5)
        try:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_mid_study_then_resume_equals_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(killed)], start_new_session=True)
    deadline = time.time() + 300
    while _count(killed) < 4:  # wait until some runs are stored, then kill -9 the whole job
        assert proc.poll() is None, "the study ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = _results(killed)
    assert 4 <= len(stored) < 16
    subprocess.run([sys.executable, "-c", SCRIPT, str(killed)], check=True, timeout=600)  # resume
    subprocess.run([sys.executable, "-c", SCRIPT, str(clean)], check=True, timeout=600)  # reference
    resumed = _results(killed)
    assert len(resumed) == 16
    for key, value in stored.items():  # nothing finished was lost or rerun
        assert resumed[key] == value
    assert resumed == _results(clean)  # same seeds, same results, as if never interrupted
    with Store(killed) as s:
        assert s.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 16  # no duplicates
        ids = [r["id"] for r in s.runs()]
        assert (s.db.execute("SELECT count(DISTINCT run_id) FROM metrics").fetchone()[0] == 16
                and len(set(ids)) == 16)


def test_a_diverging_run_is_stored_and_the_rest_go_on(tmp_path):
    model = ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 40))
    ok = RunSpec(model, TrainConfig(epochs=1, evals=1), seed=0)
    bad = RunSpec(model, TrainConfig(epochs=1, evals=1, lr=1e6, optimizer="sgd"), seed=0)
    with Store(tmp_path) as s:
        counts = run_all([bad, ok], s, workers=1)
        runs = s.runs()
    assert counts == {"skipped": 0, "diverged": 1, "complete": 1}
    assert [r["status"] for r in runs] == ["diverged", "complete"]
    with Store(tmp_path) as s:  # a diverged run is finished: not run again
        assert run_all([bad, ok], s, workers=1) == {"skipped": 2}


def test_tiny_study_writes_report_and_resumes(tmp_path):
    plan = StudyPlan(skips=("plain", "dense"), depths=(1, 2), seeds=1, budget_params=20000,
                     train=TrainConfig(epochs=1, evals=1))
    r = run_study(tmp_path, plan, workers=1)
    assert r["counts"] == {"skipped": 0, "complete": 8} and r["runs"] == 8
    assert not (tmp_path / "report.md").exists()  # the caller writes the report
    write_report_locked(tmp_path)
    text = (tmp_path / "report.md").read_text()
    for heading in ("## Test accuracy at equal width", "## Test accuracy at a matched parameter budget",
                    "## Cost", "## Gradient flow at init", "## Provenance"):
        assert heading in text
    assert run_study(tmp_path, plan, workers=1)["counts"] == {"skipped": 8}


def test_cli_study_bad_input_and_runs_on_missing_store(tmp_path, capsys):
    from skiplab.cli import main
    assert main(["study", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert main(["runs", "list", "--out", str(tmp_path / "nothing")]) == 2
    assert main(["report", "--out", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("skiplab: error: ") for line in err)


def test_cli_train_json(tmp_path, capsys):
    from skiplab.cli import main
    code = main(["train", "--model", "mlp", "--depth", "1", "--width", "8", "--skip", "add,plain", "--seeds", "2",
                 "--epochs", "1", "--workers", "1", "--out", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and [d["skip"] for d in data] == ["add", "plain"]
    for d in data:
        assert [r["seed"] for r in d["runs"]] == [0, 1]
        assert {"seed", "status", "test_accuracy", "train_accuracy", "seconds"} <= set(d["runs"][0])
        assert set(d["summary"]) >= {"test_accuracy_mean", "test_accuracy_std"}


def test_report_keeps_runs_of_an_older_plan_apart(tmp_path):
    small = StudyPlan(skips=("add",), depths=(1, 2), seeds=1, budget_params=20000,
                      train=TrainConfig(epochs=1, evals=1))
    run_study(tmp_path, small, workers=1)
    run_study(tmp_path, dataclasses.replace(small, depths=(1,)), workers=1)  # a smaller plan, same store
    write_report_locked(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "(not in the current plan)" in text and "Partial results" not in text
