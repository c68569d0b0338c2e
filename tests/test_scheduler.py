"""One scheduler (skiplab.run.scheduler) over every executor: each run claimed in the store,
trained once, stored once, whichever command or executor trains it (issue 26).

Fast tests here; the process-killing ones are in test_faults.py (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from skiplab.experiments.context import Context
from skiplab.run import runner, scheduler
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.executors import Inline, Ray
from skiplab.spec import ModelSpec
from skiplab.store import Store

ROOT = Path(__file__).resolve().parents[1]
MODEL = ModelSpec(model="mlp", depth=1, width=8, input_shape=(40,), classes=10)


def _runs(seeds=(0, 1, 2)):
    return [RunSpec(MODEL, TrainConfig(epochs=0.05, evals=1), "mnist1d", seed=s) for s in seeds]


def _ok(args):
    """A task function: every run complete, its result naming the process that ran it."""
    import os

    from skiplab.experiments.context import run_output
    return [run_output(a, a["h"], "complete", {"status": "complete", "seed": a["seed"], "pid": os.getpid(),
                                               "test_accuracy": None}, [], "t") for a in args]


def _works(n=3, group=()):
    # each arg a stand-in spec with what a stored row's readers need (skiplab.store.MODEL_KEYS, a dataset)
    return [scheduler.Work("h", s, {"h": "h", "seed": s, "dataset": "d",
                                    "model": {"model": "mlp", "skip": "x", "depth": 1, "width": 1}}, group)
            for s in range(n)]


def test_a_run_held_by_another_command_is_not_given_to_any_executor(tmp_path, monkeypatch):
    """Inline and Ray alike: the held run is waited for and counted elsewhere, never run."""
    monkeypatch.setattr(scheduler, "CLAIM_POLL", 0.01)
    for name in ("inline", "ray"):
        with Store(tmp_path / name) as store, Store(tmp_path / name) as other:
            assert other.claim("h", 1) == "claimed"
            ran = []

            def fn(args, ran=ran, other=other):
                ran.extend(a["seed"] for a in args)
                if other.claim("h", 1) == "claimed":  # the other command finishes its run meanwhile
                    other.add_run(args[0], "h", 1, "complete", {"test_accuracy": None}, [], "t")
                return _ok(args)
            executor = Inline() if name == "inline" else Ray(FakeRay(), 1, 0, 1, 0)
            counts = scheduler.schedule(_works(), store, fn, executor)
            assert sorted(ran) == [0, 2] and counts == {"skipped": 0, "complete": 2, "elsewhere": 1}, name
            assert sorted(r["seed"] for r in store.runs()) == [0, 1, 2]
            assert store.db.execute("SELECT count(*) FROM claims").fetchone()[0] == 0  # the lease dropped them


class Ref:
    def __init__(self, kind, value):
        self.kind, self.value = kind, value


class FakeRay:
    """Enough of Ray's API for the executor, run in this process: ``remote`` calls the
    function at once, ``wait`` returns the first ref, and a ref of a function that raised
    raises a RayError from ``get``."""

    class exceptions:  # noqa: N801 - Ray's own spelling
        class RayError(Exception):
            pass

    def __init__(self):
        self.cancelled = []

    def remote(self, fn):
        ray = self

        class Remote:
            def options(self, **_):
                return self

            def remote(self, *args):
                try:
                    return Ref("ok", fn(*args))
                except Exception as e:  # noqa: BLE001
                    return Ref("error", ray.exceptions.RayError(f"worker died: {e}"))
        return Remote()

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.kind == "error":
            raise ref.value
        return ref.value

    def cancel(self, ref, force=False):
        self.cancelled.append(ref)


def test_a_ray_task_that_fails_is_stored_failed_and_the_rest_go_on(tmp_path):
    def fn(args):
        if any(a["seed"] == 1 for a in args):
            raise RuntimeError("node lost")
        return _ok(args)
    with Store(tmp_path) as store:
        counts = scheduler.schedule(_works(), store, fn, Ray(FakeRay(), 1, 0, 1, max_retries=3))
        assert counts == {"skipped": 0, "complete": 2, "failed": 1}
        failed = [r for r in store.runs() if r["status"] == "failed"][0]
        assert failed["seed"] == 1 and failed["result"]["message"].startswith("RayError after 3 retries: worker died")
        # a later command on the same plan retries the failed run only (one that starts in the
        # same second as the failure leaves it: skiplab.store.Store.claim's ``since``)
        store.db.execute("UPDATE runs SET finished_at = '2026-01-01T00:00:00+00:00' WHERE status = 'failed'")
        assert scheduler.schedule(_works(), store, _ok, Ray(FakeRay(), 1, 0, 1, 0)) == {"skipped": 2, "complete": 1}


def test_experiment_models_are_stored_and_loaded_on_resume_not_trained_again(tmp_path, monkeypatch):
    """Context.train_models keeps each complete run's weights in the store: a second call
    (a resume) trains nothing and returns the same weights, bit for bit."""
    runs = _runs((0, 1))
    with Store(tmp_path) as store:
        first = Context(None, False, store, name="t").train_models(runs)
        assert all(store.artifact(r.spec_hash, r.seed) is not None for r in runs)

        def no_training(*args, **kwargs):
            raise AssertionError("a stored run was trained again")
        monkeypatch.setattr(runner, "execute_group", no_training)
        monkeypatch.setattr(runner, "execute_keeping_weights", no_training)
        monkeypatch.setattr(runner, "train_seeds", no_training)
        again = Context(None, False, store, name="t").train_models(runs)
    for (row0, m0), (row1, m1) in zip(first, again):
        assert row0["id"] == row1["id"]
        for (n, p0), p1 in zip(m0.state_dict().items(), m1.state_dict().values()):
            assert torch.equal(p0, p1), n


def test_a_complete_run_stored_without_weights_is_trained_again_for_its_model_only(tmp_path):
    """A run `skiplab train` stored (no weights kept) that an experiment needs: its model is
    trained again in this process, and its stored row is left as it was."""
    runs = _runs((0,))
    with Store(tmp_path) as store:
        runner.run_all(runs, store)  # as skiplab train stores it: no weights
        (row,) = store.runs()
        assert store.artifact(runs[0].spec_hash, 0) is None
        ((got, model),) = Context(None, False, store, name="t").train_models(runs)
        assert model is not None and got["id"] == row["id"] and len(store.runs()) == 1


def _train_cmd(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "skiplab", "train", "--model", "mlp", "--skip", "plain,add",
                             "--depth", "1", "--width", "8", "--seeds", "2", "--epochs", "0.2", "--workers", "1",
                             "--out", str(out), "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_train_commands_on_one_out_train_each_run_once(tmp_path):
    """Two `skiplab train --workers 1` at once on one --out (each trains in its own process,
    with the scheduler's claims): 4 runs stored, each trained by exactly one of them."""
    procs = [_train_cmd(tmp_path), _train_cmd(tmp_path)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    trained = []
    for stdout, _ in outs:
        for config in json.loads(stdout):
            trained += [(config["skip"], r["seed"]) for r in config["runs"] if r["stored"] == "new"]
            assert {r["stored"] for r in config["runs"]} <= {"new", "elsewhere"}
    assert sorted(trained) == [("add", 0), ("add", 1), ("plain", 0), ("plain", 1)]  # each once, by one command
    with Store(tmp_path, create=False) as store:
        assert len(store.runs()) == 4


def test_run_all_picks_this_process_for_one_task_and_a_pool_for_more():
    assert isinstance(runner.executor_for(1, workers=4), Inline)
    assert isinstance(runner.executor_for(3, workers=1), Inline)
    pool = runner.executor_for(3, workers=2, threads=1, retries=5)
    assert (pool.workers, pool.threads, pool.retries) == (2, 1, 5)
    with pytest.raises(ValueError, match="workers"):
        runner.executor_for(2, workers=0)


def test_the_scheduler_and_executors_know_runs_not_models():
    """skiplab.run.scheduler and skiplab.run.executors import the store and provenance, no model,
    strategy, family or training code (issue 26, item 5: the tree shows the architecture)."""
    import ast
    for name in ("scheduler", "executors"):
        tree = ast.parse((ROOT / "skiplab" / "run" / f"{name}.py").read_text())
        local = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level and n.module}
        local |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level and not n.module
                  for a in n.names}
        assert local <= {"store", "scheduler", "provenance"}, (name, local)


@pytest.mark.skipif(not hasattr(signal, "raise_signal") or sys.platform == "win32", reason="POSIX signals")
def test_a_ctrl_c_sent_while_a_run_is_stored_waits_until_it_and_its_count_are_written():
    """A process's SIGINT may go to any of its threads; Python then runs the handler in the
    main thread mid-block. The block still ends before the Ctrl-C lands (CI once counted
    "2 runs stored (1 by this command)")."""
    reached = []
    # the handler a terminal's command has: a shell running the tests in the background
    # starts them with SIGINT ignored
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with scheduler._interrupts_held():
                sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
                sender.start()
                sender.join()
                time.sleep(0.2)  # without the deferral, the handler has run by now
                reached.append(True)
        assert reached == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the command's handler is back
    finally:
        signal.signal(signal.SIGINT, before)
