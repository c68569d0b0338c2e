"""Faults: Ctrl-C, two commands on one store, a worker process that dies.

Method. Commands run as subprocesses in a session of their own, so that SIGINT can be
sent to the whole process group, as a terminal's Ctrl-C is (workers get it too). The
study runs the real command line with a tiny plan put in place of ``--quick``'s
(``STUDY``). A dying worker is made either by the test-only hook
``SKIPLAB_TEST_WORKER_DIES`` (a worker SIGKILLs itself when it starts a given seed: exact
and fast) or, as the OOM killer would, by SIGKILLing a worker process found through /proc.
"""

import glob
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from skiplab.cli import main
from skiplab.run import executors, runner, scheduler
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.spec import ModelSpec
from skiplab.store import HOST, Store
from skiplab.study import StudyPlan

ROOT = Path(__file__).resolve().parents[1]
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses process groups and /proc")

# `skiplab study --quick` with a smaller plan: 2 strategies x 2 depths x 2 budgets x 2 seeds = 16 runs.
PLAN = "StudyPlan(skips=('plain', 'add'), depths=(1, 3), seeds=2, budget_params=20000, train=TrainConfig(epochs=2, evals=1))"
STUDY = f"""
import sys
import skiplab.cli.study as cli
from skiplab.cli.main import main
from skiplab.study import StudyPlan
from skiplab.run.config import TrainConfig
if __name__ == "__main__":
    cli.plan_for = lambda model, quick, preset=None: {PLAN}
    sys.exit(main(sys.argv[1:]))
"""
STUDY_KEYS = {(r.spec_hash, r.seed) for r in eval(PLAN, {"StudyPlan": StudyPlan, "TrainConfig": TrainConfig}).runs()}


def _model(**kw) -> ModelSpec:
    return ModelSpec(model="mlp", depth=1, width=8, input_shape=(1, 40), **kw)


def _rows(out) -> list[tuple]:
    """(spec_hash, seed, status, test_accuracy) of every stored run; [] before the store exists."""
    path = Path(out) / "runs.db"
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(path, timeout=5)
        try:
            return [(h, s, st, json.loads(res).get("test_accuracy"))
                    for h, s, st, res in db.execute("SELECT spec_hash, seed, status, result FROM runs")]
        finally:
            db.close()
    except sqlite3.Error:  # being created
        return []


def _consistent(out) -> None:
    """Each key once, every metric belongs to a stored run, no claim left behind."""
    with Store(out) as s:
        db = s.db
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == \
            db.execute("SELECT count(*) FROM (SELECT DISTINCT spec_hash, seed FROM runs)").fetchone()[0]
        assert db.execute("SELECT count(*) FROM metrics WHERE run_id NOT IN (SELECT id FROM runs)").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM claims").fetchone()[0] == 0


def _interrupt(cmd: list[str], out: Path, runs: int = 1, timeout: float = 120) -> tuple[int, str, str]:
    """Start ``cmd``, wait until ``runs`` runs are stored, Ctrl-C its process group; return
    (exit code, stdout, stderr)."""
    # SIGINT at its default in the command, as in a terminal's foreground: a shell that runs
    # the tests in the background (`.ci/run &`) starts them with SIGINT ignored, and Python
    # keeps an inherited SIG_IGN, so the Ctrl-C below would never arrive.
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + timeout
    try:
        while len(_rows(out)) < runs:
            assert proc.poll() is None, f"ended before it could be interrupted: {proc.communicate()}"
            assert time.time() < deadline, "no run stored in time"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stdout, stderr


def _assert_interrupted(code: int, stdout: str, stderr: str, out: Path) -> list[tuple]:
    stored = _rows(out)
    assert code == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr  # the parent's, nor a worker's
    n = len(stored)
    assert stderr == (f"skiplab: interrupted; {n} runs stored in {out}/runs.db ({n} by this command); "
                      "run the same command again to resume\n")  # one line, its count true
    _consistent(out)
    return stored


# -- Ctrl-C ---------------------------------------------------------------------------------
@pytest.mark.slow
@LINUX
def test_ctrl_c_during_study_keeps_what_finished_and_resume_runs_the_rest_once(tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "-c", STUDY, "study", "--quick", "--out", str(out), "--workers", "2", "--json"]
    code, stdout, stderr = _interrupt(cmd, out, runs=2)
    stored = _assert_interrupted(code, stdout, stderr, out)
    assert 2 <= len(stored) < len(STUDY_KEYS) and stdout == ""
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)  # resume
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert counts["skipped"] == len(stored) and counts["complete"] == len(STUDY_KEYS) - len(stored)
    final = _rows(out)
    assert len(final) == len(STUDY_KEYS) and {(h, s) for h, s, *_ in final} == STUDY_KEYS
    assert set(stored) <= set(final)  # what finished before Ctrl-C was kept as it was, not run again
    _consistent(out)
    assert (out / "report.html").exists()


@pytest.mark.slow  # about 50 s here: two commands, four worker processes, each importing torch
@LINUX
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_ctrl_c_during_train_or_sweep_with_workers(tmp_path, command):
    """Ctrl-C with a process pool running: exit 130, one line, no worker traceback; then
    the same command finishes the rest, each run once."""
    out = tmp_path / "o"
    # More configurations than workers: a configuration's seeds train as one task (the batched
    # engine) and are stored together, so with two configurations on two workers all four runs
    # could be stored before the Ctrl-C lands, leaving nothing to interrupt.
    skips = ["plain", "add", "rezero", "highway", "dense", "concat-half"]
    total = 2 * len(skips)
    if command == "train":
        args = ["train", "--model", "mlp", "--depth", "1", "--width", "8", "--skip", ",".join(skips), "--seeds", "2",
                "--epochs", "3", "--workers", "2"]
    else:
        sweep = tmp_path / "s.toml"
        sweep.write_text("[sweep]\nseeds = 2\n[grid]\nmodel = 'mlp'\nskip = " + repr(skips) + "\ndepth = 1\n"
                         "width = 8\n[train]\nepochs = 3\nevals = 1\n")
        args = ["sweep", str(sweep), "--workers", "2"]
    cmd = [sys.executable, "-m", "skiplab", *args, "--out", str(out), "--json"]
    stored = _assert_interrupted(*_interrupt(cmd, out), out)
    assert 1 <= len(stored) < total
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    final = _rows(out)
    assert len(final) == total and len({(h, s) for h, s, *_ in final}) == total
    assert set(stored) <= set(final) and {st for _, _, st, _ in final} == {"complete"}
    _consistent(out)


@pytest.mark.parametrize("command", ["study", "train", "sweep", "experiment"])
def test_ctrl_c_in_each_command_is_one_line_exit_130(tmp_path, monkeypatch, capsys, command):
    """KeyboardInterrupt from inside a run (where Ctrl-C lands in a command that trains in
    its own process): exit 130, one line with the true count, no claim left behind."""
    import skiplab.cli.study as cli_study

    def interrupted(spec_dict, on_step=None):
        raise KeyboardInterrupt

    out = tmp_path / "o"
    with Store(out) as s:  # one run stored before, by another command
        s.add_run({"model": {}}, "h", 0, "complete", {}, [], "2026-01-01T00:00:00+00:00")
    monkeypatch.setattr(runner, "execute", interrupted)
    monkeypatch.setattr(runner, "execute_group", interrupted)  # every command's task, via the scheduler
    monkeypatch.setattr(cli_study, "plan_for", lambda model, quick, preset=None: eval(PLAN))
    sweep = tmp_path / "s.toml"
    sweep.write_text("[sweep]\nseeds = 2\n[grid]\nmodel = 'mlp'\ndepth = 1\n[train]\nepochs = 1\n")
    args = {"study": ["study", "--quick"], "train": ["train", "--model", "mlp", "--depth", "1", "--epochs", "1"],
            "sweep": ["sweep", str(sweep)], "experiment": ["experiment", "rezero", "--quick"]}[command]
    assert main([*args, "--workers", "1", "--out", str(out), "--json"]) == 130
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err == (f"skiplab: interrupted; 1 runs stored in {out}/runs.db (0 by this command); "
                       "run the same command again to resume\n")
    _consistent(out)  # the interrupted run's claim was dropped


# -- two commands on one store ----------------------------------------------------------
@pytest.mark.slow
@LINUX
def test_two_studies_at_once_share_the_plan(tmp_path):
    """Two `skiplab study` on one --out, started together: both succeed, every planned run
    is stored once, and none was trained twice (the two trained counts add up to the plan)."""
    out = tmp_path / "o"
    cmd = [sys.executable, "-c", STUDY, "study", "--quick", "--out", str(out), "--workers", "1", "--json"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0 and stderr == "", stderr
    counts = [json.loads(stdout)["counts"] for stdout, _ in results]
    trained = [c.get("complete", 0) for c in counts]
    assert sum(trained) == len(STUDY_KEYS), counts  # no run trained by both
    assert min(trained) > 0, counts  # they did run at the same time (else this test shows nothing)
    for c in counts:  # each accounts for every run: its own, already stored, or stored by the other
        assert c["skipped"] + c.get("complete", 0) + c.get("elsewhere", 0) == len(STUDY_KEYS), c
    final = _rows(out)
    assert len(final) == len(STUDY_KEYS) and {(h, s) for h, s, *_ in final} == STUDY_KEYS
    _consistent(out)
    assert (out / "report.html").exists() and not list(out.glob("*.tmp"))


def test_store_claims(tmp_path, monkeypatch):
    """The claim rules: held by a live command = busy; stale when its holder is dead or its
    lease lapsed; finished = done; a finished row is never replaced."""
    spec = {"model": {"model": "mlp", "skip": "add", "depth": 1, "width": 8}, "dataset": "mnist1d"}
    with Store(tmp_path) as a, Store(tmp_path) as b:
        assert a.claim("h", 0) == "claimed" and a.claim("h", 0) == "claimed"  # its own claim again
        assert b.claim("h", 0) == "busy"  # a lives (this very process)
        a.db.execute("UPDATE claims SET pid = ?", (2 ** 22 + 12345,))  # a pid no process has: a dead holder
        assert b.claim("h", 0) == "claimed"
        b.db.execute("UPDATE claims SET owner = 'o', host = 'elsewhere', pid = 1, expires = ?", (time.time() - 1,))
        assert a.claim("h", 0) == "claimed"  # another host's lapsed lease
        b.db.execute("UPDATE claims SET owner = 'o', host = 'elsewhere', pid = 1, expires = ?", (time.time() + 60,))
        assert a.claim("h", 0) == "busy"  # another host's live lease: no pid to look at, so wait
        b.db.execute("UPDATE claims SET host = ?, pid = ?", (HOST, os.getpid()))
        a.add_run(spec, "h", 0, "complete", {"test_accuracy": 0.5}, [(1, "test", "accuracy", 0.5)], "t")
        assert b.claim("h", 0) == "done"
        assert a.db.execute("SELECT count(*) FROM claims").fetchone()[0] == 0  # storing dropped the claim
        b.add_run(spec, "h", 0, "failed", {"message": "late"}, [], "t")  # a finished row is kept
        assert [(r["status"], r["result"]) for r in b.runs()] == [("complete", {"test_accuracy": 0.5})]
        assert b.db.execute("SELECT count(*) FROM metrics").fetchone()[0] == 1
        # a run another command tried (failed) since this one began is not tried again now;
        # one that failed before it began is
        b.add_run(spec, "f", 0, "failed", {}, [], "t")
        assert a.claim("f", 0, since="2000-01-01T00:00:00+00:00") == "done"
        assert a.claim("f", 0, since="2999-01-01T00:00:00+00:00") == "claimed"
        with a.lease():
            pass
        assert a.db.execute("SELECT count(*) FROM claims").fetchone()[0] == 0  # the lease dropped what was left


@pytest.mark.parametrize("workers", [1, 2])
def test_run_held_by_another_command_is_waited_for_not_trained(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(scheduler, "CLAIM_POLL", 0.1)
    specs = [RunSpec(_model(), TrainConfig(epochs=1, evals=1), seed=s) for s in range(3)]
    held = specs[1]
    with Store(tmp_path) as other:
        assert other.claim(held.spec_hash, held.seed) == "claimed"

    def finish_it() -> None:  # the other command stores its run a little later
        time.sleep(1.5)
        with Store(tmp_path) as o:
            o.add_run(held.to_dict(), held.spec_hash, held.seed, "complete", {"test_accuracy": 0.25}, [], "t")

    # the claim's holder (this process) is alive, so it is honoured
    with Store(tmp_path) as store:
        store.db.execute("UPDATE claims SET owner = 'other'")
        t = threading.Thread(target=finish_it)
        t.start()
        counts = runner.run_all(specs, store, workers=workers)
        t.join()
        rows = store.runs()
    assert counts == {"skipped": 0, "complete": 2, "elsewhere": 1}
    assert len(rows) == 3 and [r["result"]["test_accuracy"] for r in rows if r["seed"] == 1] == [0.25]
    _consistent(tmp_path)


# -- a worker that dies -----------------------------------------------------------------
def test_dead_worker_retried_then_failed_and_the_rest_finish(tmp_path, monkeypatch):
    """Seed 1's worker dies at every attempt: stored failed after 1 + retries attempts, with
    the reason; seed 2's dies once: retried, and its result is what an undisturbed run
    computes; seeds 0 and 3 finish. (retries=1 rather than the default 2: each new worker
    imports torch, seconds apiece.) The loop engine: one run per task, so that each seed's
    death is its own (batched, the four seeds are one task: test_dead_worker_costs_its_batch)."""
    monkeypatch.setenv(executors.TEST_DIE_ENV, "1,2:1")
    specs = [RunSpec(_model(), TrainConfig(epochs=1, evals=1, engine="loop"), seed=s) for s in range(4)]
    with Store(tmp_path / "pool") as store:
        counts = runner.run_all(specs, store, workers=2, threads=1, retries=1)
        rows = {r["seed"]: r for r in store.runs()}
    assert counts == {"skipped": 0, "complete": 3, "failed": 1, "retried": 2}
    assert rows[1]["status"] == "failed"
    assert rows[1]["result"]["message"] == "worker process died (signal 9) 2 times"
    _consistent(tmp_path / "pool")
    monkeypatch.delenv(executors.TEST_DIE_ENV)
    with Store(tmp_path / "ref") as store:  # reference: in this process (the hook is read by workers only)
        runner.run_all(specs, store, workers=1, threads=1)
        ref = {r["seed"]: r for r in store.runs()}
    for seed in (0, 2, 3):
        assert rows[seed]["status"] == "complete" and rows[seed]["result"]["test_accuracy"] == \
            ref[seed]["result"]["test_accuracy"]
    with Store(tmp_path / "pool") as store:  # resume: the failed run, and it alone, runs again
        assert runner.run_all(specs, store, workers=2, threads=1) == {"skipped": 3, "complete": 1}


def test_dead_worker_costs_its_batch(tmp_path, monkeypatch):
    """Batched (the default), a configuration's seeds are one task: config A (seeds 0, 1)
    dies at every attempt, so both its runs are stored failed; config B (seeds 2, 3) dies
    once, is retried as a whole and computes what an undisturbed batch does."""
    monkeypatch.setenv(executors.TEST_DIE_ENV, "1,3:1")
    cfg = TrainConfig(epochs=1, evals=1)
    specs = [RunSpec(_model(), cfg, seed=s) for s in (0, 1)] + [RunSpec(_model().replace(width=12), cfg, seed=s) for s in (2, 3)]
    with Store(tmp_path / "pool") as store:
        counts = runner.run_all(specs, store, workers=2, threads=1, retries=1)
        rows = {r["seed"]: r for r in store.runs()}
    assert counts == {"skipped": 0, "complete": 2, "failed": 2, "retried": 4}
    assert [rows[s]["result"]["message"] for s in (0, 1)] == ["worker process died (signal 9) 2 times"] * 2
    monkeypatch.delenv(executors.TEST_DIE_ENV)
    with Store(tmp_path / "ref") as store:
        runner.run_all(specs[2:], store, workers=1, threads=1)
        ref = {r["seed"]: r for r in store.runs()}
    for seed in (2, 3):
        assert rows[seed]["result"]["trained_by"] == "batched"
        assert rows[seed]["result"]["test_accuracy"] == ref[seed]["result"]["test_accuracy"]


class WorkerKiller(threading.Thread):
    """SIGKILLs, as the OOM killer would, the first spawned worker of process ``parent``
    seen to be at least ``age`` seconds old (past its start-up: running a run)."""

    def __init__(self, parent: int, age: float = 4.0):
        super().__init__(daemon=True)
        self.parent, self.age, self.killed, self.stop = parent, age, [], threading.Event()

    def run(self) -> None:
        first_seen: dict[int, float] = {}
        while not self.killed and not self.stop.is_set():
            for path in glob.glob("/proc/[0-9]*/stat"):
                try:
                    with open(path) as f:
                        stat = f.read()
                    with open(path.replace("stat", "cmdline"), "rb") as f:
                        cmdline = f.read()
                except OSError:
                    continue
                pid, ppid = int(path.split("/")[2]), int(stat.rsplit(")", 1)[1].split()[1])
                if ppid != self.parent or b"spawn_main" not in cmdline:
                    continue
                first_seen.setdefault(pid, time.time())
                if time.time() - first_seen[pid] >= self.age:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                    break
            time.sleep(0.05)


@pytest.mark.slow
@LINUX
def test_sweep_survives_a_worker_killed_from_outside(tmp_path):
    """`skiplab sweep` (local pool) with a worker SIGKILLed mid-run: its task (a
    configuration's 3 seeds, batched) is retried, every run stored once, exit 0."""
    sweep = tmp_path / "s.toml"
    sweep.write_text("[sweep]\nseeds = 3\n[grid]\nmodel = 'mlp'\nskip = ['plain', 'add']\ndepth = 2\nwidth = 16\n"
                     "[train]\nepochs = 20\nevals = 1\n")
    proc = subprocess.Popen([sys.executable, "-m", "skiplab", "sweep", str(sweep), "--workers", "2", "--out",
                             str(tmp_path / "o"), "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killer = WorkerKiller(proc.pid)
    killer.start()
    stdout, stderr = proc.communicate(timeout=600)
    killer.stop.set()
    assert len(killer.killed) == 1
    assert proc.returncode == 0 and stderr == "", stderr
    counts = json.loads(stdout)["counts"]
    assert counts == {"skipped": 0, "complete": 6, "retried": 3}, counts
    final = _rows(tmp_path / "o")
    assert len(final) == 6 and {st for _, _, st, _ in final} == {"complete"}
    _consistent(tmp_path / "o")


# -- experiments: killed, resumed, two at once (issue 26) ---------------------------------
EXPERIMENT = [sys.executable, "-m", "skiplab", "experiment", "equivalence", "--quick"]
EXPERIMENT_RUNS = 8  # equivalence --quick: add and dense at 2 depths, 2 seeds each


def _trained_here(stdout: str) -> int:
    """Runs a command stored itself: its progress says 'run i/N' once per run it stored."""
    return sum(1 for line in stdout.splitlines() if line.startswith("skiplab: run "))


@pytest.mark.slow
@LINUX
def test_an_experiment_killed_then_resumed_trains_only_what_was_not_stored(tmp_path):
    """SIGKILL of the command after its 3rd stored run (the scheduler's test hook), then the
    same command again: it trains the 5 others only (its models for the first 3 come from the
    weights stored with them), and every row is stored once."""
    out = tmp_path / "o"
    env = {**os.environ, "SKIPLAB_TEST_PARENT_DIES_AFTER": "3"}
    killed = subprocess.run([*EXPERIMENT, "--workers", "1", "--out", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL and len(_rows(out)) == 3
    with Store(out) as s:
        ids = {(r["spec_hash"], r["seed"]): r["id"] for r in s.runs()}
    again = subprocess.run([*EXPERIMENT, "--workers", "1", "--out", str(out)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _trained_here(again.stdout) == EXPERIMENT_RUNS - 3
    assert "run 1/5:" in again.stdout and "run 5/5:" in again.stdout
    with Store(out) as s:
        after = {(r["spec_hash"], r["seed"]): r["id"] for r in s.runs()}
        assert len(s.experiments()) == 1
    assert len(after) == EXPERIMENT_RUNS and all(after[k] == i for k, i in ids.items())  # the first 3 untouched
    _consistent(out)


def _marked(mark: str) -> list[int]:
    """Processes whose environment holds ``mark`` (a command and every worker it spawned)."""
    found = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(path, "rb") as f:
                if mark.encode() in f.read():
                    found.append(int(path.split("/")[2]))
        except OSError:
            continue
    return found


@pytest.mark.slow
@LINUX
def test_killing_an_experiments_parent_leaves_no_worker_running(tmp_path):
    """SIGKILL of an experiment's parent while two worker processes train: each worker sees
    its parent gone and exits, rather than train runs nobody would store."""
    mark = f"SKIPLAB_TEST_MARK={os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "SKIPLAB_TEST_PARENT_DIES_AFTER": "1", mark.split("=")[0]: mark.split("=")[1]}
    proc = subprocess.run([*EXPERIMENT, "--workers", "2", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.time() + 30  # a worker looks for its parent every 0.5 s
    while _marked(mark) and time.time() < deadline:
        time.sleep(0.2)
    assert _marked(mark) == []


@pytest.mark.slow
@LINUX
def test_two_experiments_at_once_train_each_run_once(tmp_path):
    procs = [subprocess.Popen([*EXPERIMENT, "--workers", "1", "--out", str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert sum(_trained_here(o) for o, _ in outs) == EXPERIMENT_RUNS  # each run trained by one of them
    assert len(_rows(tmp_path)) == EXPERIMENT_RUNS
    _consistent(tmp_path)


# -- sweeps on either backend: two at once, Ctrl-C on Ray ----------------------------------
def _sweep_file(tmp_path: Path, epochs: int = 3) -> Path:
    sweep = tmp_path / "s.toml"
    sweep.write_text("[sweep]\nseeds = 2\n[grid]\nmodel = 'mlp'\nskip = ['plain', 'add', 'rezero', 'dense']\n"
                     f"depth = 1\nwidth = 8\n[train]\nepochs = {epochs}\nevals = 1\n")
    return sweep


@pytest.mark.slow
@LINUX
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_two_sweeps_at_once_train_each_run_once(tmp_path, backend):
    """Two `skiplab sweep` on one --out at once (each with its own Ray instance on the ray
    backend): every run claimed in the store, so each is trained by one of them."""
    if backend == "ray":
        pytest.importorskip("ray", reason="ray is not installed: pip install 'skiplab[ray]'")
    out, sweep = tmp_path / "o", _sweep_file(tmp_path)
    cmd = [sys.executable, "-m", "skiplab", "sweep", str(sweep), "--backend", backend, "--workers", "1",
           "--out", str(out), "--json"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    counts = [json.loads(o)["counts"] for o, _ in outs]
    assert sum(c.get("complete", 0) for c in counts) == 8, counts  # trained once in all
    assert all(c.get("complete", 0) + c.get("elsewhere", 0) + c["skipped"] == 8 for c in counts), counts
    assert len(_rows(out)) == 8
    _consistent(out)


@pytest.mark.slow
@LINUX
def test_ctrl_c_in_a_ray_sweep_is_one_line_exit_130_and_resumes(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed: pip install 'skiplab[ray]'")
    out, sweep = tmp_path / "o", _sweep_file(tmp_path, epochs=6)
    cmd = [sys.executable, "-m", "skiplab", "sweep", str(sweep), "--backend", "ray", "--workers", "1",
           "--out", str(out), "--json"]
    stored = _assert_interrupted(*_interrupt(cmd, out), out)
    assert 0 < len(stored) < 8
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert counts["skipped"] == len(stored) and counts["complete"] == 8 - len(stored)
    _consistent(out)


# -- nothing is lost: a run that goes NaN, a foreign file, a corrupt row ----------------------
# SGD at lr 60 on a plain depth-8 MLP: the training loss stays finite for these few steps,
# but the test loss overflows to NaN at an evaluation (seeds 0-2 of 4), which the store
# could not write (metrics.value NOT NULL): every seed was lost.
DIVERGING = ["train", "--skip", "plain", "--depth", "8", "--optimizer", "sgd", "--lr", "60", "--seeds", "4",
             "--epochs", "0.2", "--workers", "1"]
REASON = r"^(test|train) (loss|accuracy|bpc) became (nan|inf|-inf) at step \d+$"


def _no_nan_json(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in JSON output")
    return json.loads(text, parse_constant=refuse)


def _nan_store_is_read_by_every_reader(out: Path, capsys) -> None:
    """runs list (both forms, --json strict JSON), the report, and the exports read a store
    holding a diverged run with NULL curve points, without a warning."""
    for argv in (["runs", "list"], ["runs", "list", "--all"]):
        assert main([*argv, "--out", str(out), "--json"]) == 0
        cap = capsys.readouterr()
        assert cap.err == "" and _no_nan_json(cap.out)
    assert main(["report", "--out", str(out), "--json"]) == 0
    assert (out / "report.html").exists() and capsys.readouterr().err == ""
    assert main(["runs", "export", "--out", str(out), "--csv", str(out / "runs.csv")]) == 0
    assert capsys.readouterr().err == ""
    import csv
    with open(out / "runs.csv") as f:
        assert {r["status"] for r in csv.DictReader(f)} >= {"diverged"}


@pytest.mark.parametrize("engine", ["batched", "loop"])
def test_a_run_whose_curves_go_nan_is_stored_diverged_and_its_siblings_finish(tmp_path, capsys, engine):
    out = tmp_path / "o"
    assert main([*DIVERGING, "--engine", engine, "--out", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    runs = [r for d in _no_nan_json(cap.out) for r in d["runs"]]
    assert sorted(r["seed"] for r in runs) == [0, 1, 2, 3] and {r["stored"] for r in runs} == {"new"}
    diverged = [r for r in runs if r["status"] == "diverged"]
    assert diverged and all(re.match(REASON, r["message"]) for r in diverged), runs
    assert {r["status"] for r in runs} <= {"complete", "diverged"}
    with Store(out) as s:
        assert len(s.runs()) == 4
        nulls = s.db.execute("SELECT count(*) FROM metrics WHERE value IS NULL").fetchone()[0]
        assert nulls >= len(diverged)
        nan_points = [v for r in s.runs() for *_, v in s.metrics(r["id"]) if v != v]
        assert len(nan_points) == nulls  # NULL reads back as float('nan')
    _consistent(out)
    assert main([*DIVERGING, "--engine", engine, "--out", str(out), "--json"]) == 0  # resume: nothing to train
    assert {r["stored"] for d in _no_nan_json(capsys.readouterr().out) for r in d["runs"]} == {"reused"}
    _nan_store_is_read_by_every_reader(out, capsys)


def test_a_transformer_whose_curves_go_nan_is_stored_diverged(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["train", "--model", "transformer", "--dataset", "pydoc", "--skip", "plain,add", "--depth", "2",
            "--width", "16", "--heads", "2", "--context", "16", "--optimizer", "sgd", "--lr", "100000",
            "--seeds", "2", "--epochs", "0.005", "--workers", "1", "--out", str(out), "--json"]
    assert main(argv) == 0
    runs = [r for d in _no_nan_json(capsys.readouterr().out) for r in d["runs"]]
    assert len(runs) == 4 and any(r["status"] == "diverged" for r in runs)
    assert all(re.match(REASON, r["message"]) for r in runs if r["status"] == "diverged"), runs
    _consistent(out)
    assert main(["runs", "list", "--out", str(out), "--json"]) == 0
    assert {d["diverged"] for d in _no_nan_json(capsys.readouterr().out)} - {0}


def test_a_sweep_holding_a_nan_run_finishes(tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text("[sweep]\nseeds = 3\n[grid]\nmodel = 'mlp'\nskip = 'plain'\ndepth = 8\n"
                     "[train]\noptimizer = 'sgd'\nlr = 60.0\nepochs = 0.2\n")
    out = tmp_path / "o"
    assert main(["sweep", str(sweep), "--workers", "1", "--out", str(out), "--json"]) == 0
    data = _no_nan_json(capsys.readouterr().out)
    assert data["counts"].get("diverged", 0) >= 1 and data["results"][0]["seeds"] == 3
    assert main(["sweep", str(sweep), "--workers", "1", "--out", str(out), "--json"]) == 0  # nothing left
    assert _no_nan_json(capsys.readouterr().out)["counts"] == {"skipped": 3}


def _foreign_db(folder: Path) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(folder / "runs.db")
    db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT, total REAL)")
    db.execute("INSERT INTO invoices (customer, total) VALUES ('someone', 12.5)")
    db.commit()
    db.close()
    return (folder / "runs.db").read_bytes()


@pytest.mark.parametrize("command", ["train", "sweep", "study", "experiment", "runs list", "report"])
def test_a_foreign_sqlite_file_is_refused_before_it_is_touched(tmp_path, monkeypatch, capsys, command):
    """Every command that opens a store (the four writers, two readers): one line, exit 2,
    the file unchanged byte for byte, and nothing written beside it."""
    import skiplab.cli.study as cli_study

    out = tmp_path / "o"
    before = _foreign_db(out)
    monkeypatch.setattr(cli_study, "plan_for", lambda model, quick, preset=None: eval(PLAN))
    sweep = tmp_path / "s.toml"
    sweep.write_text("[sweep]\nseeds = 1\n[grid]\nmodel = 'mlp'\ndepth = 1\n[train]\nepochs = 1\n")
    args = {"train": ["train", "--depth", "1", "--epochs", "1"], "sweep": ["sweep", str(sweep)],
            "study": ["study", "--quick"], "experiment": ["experiment", "rezero", "--quick"],
            "runs list": ["runs", "list"], "report": ["report"]}[command]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"skiplab: error: store: {out}/runs.db is a SQLite file but not a skiplab results store" + (
        "\n" if command in ("runs list", "report") else "; give --out another folder\n")
    assert (out / "runs.db").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["runs.db"]


def _small_store(out: Path) -> None:
    assert main(["train", "--skip", "plain,add", "--depth", "1", "--width", "8", "--epochs", "1", "--seeds", "2",
                 "--workers", "1", "--out", str(out), "--json"]) == 0


def test_a_corrupt_row_is_skipped_by_every_reader_with_one_warning_naming_it(tmp_path, capsys):
    out = tmp_path / "o"
    _small_store(out)
    capsys.readouterr()
    db = sqlite3.connect(out / "runs.db")
    (rid, h, seed), = db.execute("SELECT id, spec_hash, seed FROM runs WHERE seed = 1 ORDER BY id LIMIT 1")
    db.execute("UPDATE runs SET result = substr(result, 1, 20) WHERE id = ?", (rid,))  # JSON cut short
    db.commit()
    db.close()
    warning = f"skiplab: warning: store: run {h} seed {seed} (id {rid}) in {out}/runs.db is corrupt: its result " \
              "is not valid JSON"

    def one_warning(err: str) -> None:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(warning) and lines[0].endswith("; skipped"), err

    assert main(["runs", "list", "--all", "--out", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    one_warning(cap.err)
    assert sorted(r["id"] for r in json.loads(cap.out)) == sorted(set(range(1, 5)) - {rid})
    assert main(["runs", "list", "--out", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    one_warning(cap.err)
    assert sorted(d["seeds"] for d in json.loads(cap.out)) == [1, 2]  # the corrupt run's configuration: one seed
    assert main(["report", "--out", str(out)]) == 0
    one_warning(capsys.readouterr().err)
    assert main(["runs", "export", "--out", str(out), "--csv", str(tmp_path / "runs.csv")]) == 0
    one_warning(capsys.readouterr().err)
    assert (tmp_path / "runs.csv").read_text().count("\n") == 1 + 3
    pytest.importorskip("pandas")
    from skiplab import load_curves, load_runs
    from skiplab.store import StoreWarning
    with pytest.warns(StoreWarning, match=f"run {h} seed {seed}"):
        assert len(load_runs(out)) == 3
    with pytest.warns(StoreWarning, match=f"run {h} seed {seed}"):
        assert set(load_curves(out)["seed"]) == {0, 1}
    # the same train command again trains the corrupt run and replaces its row (counted as
    # finished, it had kept its configuration at one seed for good), at once: the row is not
    # 'just tried by another command' either (stored within this command's second, it was)
    assert main(["train", "--skip", "plain,add", "--depth", "1", "--width", "8", "--epochs", "1", "--seeds", "2",
                 "--workers", "1", "--out", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    assert "corrupt" not in cap.err and sum(len(d["runs"]) for d in json.loads(cap.out)) == 4
    assert main(["runs", "list", "--out", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and sorted(d["seeds"] for d in json.loads(cap.out)) == [2, 2]


# -- errors: the user's exit 2, skiplab's own exit 1 with a log ---------------------------------
# A bug injected into the command line's process: `runs list` aggregates the store through
# skiplab.results.aggregate, which raises a plain ValueError here (not the user's mistake).
BUGGY = """
import sys
import skiplab.cli.runs as runs
from skiplab.cli.main import main

def aggregate(rows):
    raise ValueError("an injected bug in aggregate")

if __name__ == "__main__":
    runs.aggregate = aggregate
    sys.exit(main(sys.argv[1:]))
"""


def _buggy(tmp_path, *argv):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", BUGGY, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_an_internal_error_exits_1_with_one_line_naming_its_log(tmp_path, capsys):
    out = tmp_path / "o"
    _small_store(out)
    capsys.readouterr()
    p = _buggy(tmp_path, "runs", "list", "--out", str(out))
    assert p.returncode == 1 and p.stdout == ""
    m = re.fullmatch(r"skiplab: internal error: ValueError: an injected bug in aggregate \(traceback in (\S+\.log)\)\n",
                     p.stderr)
    assert m, p.stderr
    log = Path(m.group(1))
    assert log.parent == out / "logs"  # beside the store the command read
    text = log.read_text()
    assert f"command: skiplab runs list --out {out}" in text
    assert "Traceback (most recent call last)" in text and text.endswith("ValueError: an injected bug in aggregate\n")
    assert "run_list" in text  # the frames inside skiplab, not only the last one
    # --debug: the traceback on stderr too, then the same line
    p = _buggy(tmp_path, "runs", "list", "--out", str(out), "--debug")
    assert p.returncode == 1 and "Traceback (most recent call last)" in p.stderr
    assert p.stderr.splitlines()[-1].startswith("skiplab: internal error: ValueError: an injected bug")
    assert len(list((out / "logs").glob("error-*.log"))) == 2


@pytest.mark.parametrize("argv", [["strategies"], ["--debug", "strategies"], ["strategies", "--debug"]])
def test_an_internal_error_without_an_out_folder_logs_in_the_cache(tmp_path, monkeypatch, capsys, argv):
    import skiplab.cli.strategies as strategies

    def broken(args):
        raise KeyError("a missing key inside skiplab")
    monkeypatch.setattr(strategies, "run", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("skiplab: internal error: KeyError: ")
    assert ("Traceback (most recent call last)" in err) == ("--debug" in argv)  # --debug before or after the command
    if "--debug" not in argv:
        assert err.count("\n") == 1
    logs = list((tmp_path / "cache" / "skiplab" / "logs").glob("error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err and "KeyError: 'a missing key inside skiplab'" in logs[0].read_text()


@pytest.mark.parametrize("argv, message", [
    (["train", "--depth", "-1"], "depth: must be an integer >= 0, got -1"),
    (["train", "--dataset", "nosuchdata"], "nosuchdata does not exist"),
    (["train", "--dataset", "missing.npz"], "missing.npz does not exist"),
    (["runs", "list", "--out", "nowhere"], "store: no results store at nowhere/runs.db"),
    (["cost", "--depths", "1,2"], "depths: need at least 4 different depths"),
    (["experiment", "no-such"], "invalid choice"),
])
def test_the_users_mistakes_still_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert main([*argv, *(["--out", str(tmp_path / "o")] if argv[0] in ("train", "experiment") else [])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("skiplab: error: ") and message in err, err
    assert not (tmp_path / "o" / "logs").exists()
