"""Sweeps: the TOML file is checked key by key; the local pool and Ray store the same
keys and the same numbers; a Ray worker killed mid-sweep leaves every run stored once.

Method for the last two: the same reduced copy of ``examples/sweep-small.toml`` (MLPs,
few epochs) runs on both backends into fresh stores, and the stored results are compared
for exact equality (one torch thread per run on both: the CPU computation is then the
same). A killer thread watches /proc for a Ray worker whose title says it runs a sweep
task (``ray::_ray_task``) and SIGKILLs it, as the kernel's OOM killer would.
"""

import glob
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from skiplab.cli import main
from skiplab.cost import param_counts
from skiplab.run import runner
from skiplab.store import Store
from skiplab.sweep import RAY_MISSING, SweepError, load_sweep, parse_sweep, run_ray, run_sweep, tomllib

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep-small.toml"


def small_doc(**train) -> dict:
    """The example file, reduced for speed: the same tables and axes (2 skips x 2 depths
    x 2 seeds), an MLP trained for a few epochs."""
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["grid"].update(model="mlp", depth=[1, 3])
    doc["train"].update({"epochs": 2, "evals": 1, **train})
    return doc


def stored(out) -> dict:
    with Store(out) as s:
        return {(r["spec_hash"], r["seed"]): (r["status"], r["result"].get("test_accuracy"),
                                              r["result"].get("test_loss"), r["result"].get("train_loss"))
                for r in s.runs()}


def row_count(out) -> int:
    db = sqlite3.connect(Path(out) / "runs.db")
    try:
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        db.close()


# -- the file ---------------------------------------------------------------------------
def test_example_names_the_grid():
    sweep = load_sweep(EXAMPLE)
    assert len(sweep.runs) == 8 and sweep.configs == 4
    assert {r.model.skip for r in sweep.runs} == {"plain", "add"}
    assert {r.model.depth for r in sweep.runs} == {2, 12}
    assert {r.seed for r in sweep.runs} == {0, 1}
    assert {r.group for r in sweep.runs} == {"sweep-small"}
    assert sweep.resources.num_cpus == 1 and sweep.resources.max_retries == 3
    assert all(r.model.input_shape == (1, 40) and r.model.classes == 10 for r in sweep.runs)  # from the dataset


def test_docs_show_the_example_file():
    page = (EXAMPLE.parents[1] / "docs" / "scaling.md").read_text()
    block = page.split("# Scaling out", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    assert block.strip() in EXAMPLE.read_text()


@pytest.mark.parametrize("doc, message", [
    ({"grid": {"depht": 3}}, "sweep: [grid] unknown key 'depht'; known: model, depth, width"),
    ({"train": {"epoch": 3}}, "sweep: [train] unknown key 'epoch'; known: optimizer, lr"),
    ({"sweep": {"seed": 3}}, "sweep: [sweep] unknown key 'seed'; known: group, seeds"),
    ({"resources": {"cpus": 1}}, "sweep: [resources] unknown key 'cpus'; known: num_cpus, num_gpus, max_retries"),
    ({"gird": {}}, "sweep: unknown table [gird]; known: [sweep], [grid], [train], [resources]"),
    ({"seeds": 2}, "sweep: key 'seeds' is outside any table; every key belongs in one of [sweep], [grid]"),
    ({"grid": {"skip": ["add", "resnet"]}},
     "sweep: [grid] skip: unknown strategy 'resnet'; allowed: plain, add, rezero, layerscale, highway, dense"),
    ({"grid": {"depth": -1}}, "sweep: [grid] depth: must be an integer >= 0, got -1"),
    ({"grid": {"width": "wide"}}, "sweep: [grid] width: must be an integer >= 1, got 'wide'"),
    ({"grid": {"norm": "group"}}, "sweep: [grid] norm: 'group' is not one of none, batch, layer"),
    ({"grid": {"depth": []}}, "sweep: [grid] depth: an empty list names no runs"),
    ({"grid": {"depth": {"a": 1}}}, "sweep: [grid] depth: expected a value or a list of values, got a table"),
    ({"grid": {"params": 10, "flops": 10}}, "sweep: [grid] params and flops: give one budget, not both"),
    ({"grid": {"params": 10}}, "sweep: [grid] params: a budget of 10 is below the smallest"),
    ({"grid": {"vary": "growth"}}, "sweep: [grid] vary: sizes a budget; give params or flops with it"),
    ({"grid": {"params": 20000, "vary": "depth"}}, "sweep: [grid] vary: unknown value 'depth'; allowed: width, growth"),
    # an option none of the grid's strategies takes: the command line's rule (skips.check_options_taken)
    ({"grid": {"skip": "add", "growth": 4}},
     "sweep: [grid] growth: only skip 'dense' uses it, not 'add'; add one to skip or drop growth"),
    ({"grid": {"growth": [4, 8]}}, "sweep: [grid] growth: only skip 'dense' uses it, not 'add'"),  # the default skip
    ({"grid": {"skip": ["add", "plain"], "streams": 2}},
     "sweep: [grid] streams: only skips 'hyper', 'mhc', 'mhc-lite' use it, not 'add', 'plain'"),
    ({"grid": {"skip": "add", "memory": "efficient"}}, "sweep: [grid] memory: only skips 'dense', 'concat-prev'"),
    ({"grid": {"skip": "add", "params": 20000, "vary": "growth"}},
     "sweep: [grid] vary: none of 'add' has a growth to vary"),
    ({"grid": {"dataset": "imagenet"}}, "sweep: [grid] dataset: unknown dataset 'imagenet'; known: mnist1d, digits"),
    ({"grid": {"skip": "concat-double", "depth": 20}}, "sweep: [grid] max_state_width:"),
    ({"train": {"lr": [1e-3, -1.0]}}, "sweep: [train] lr: must be a finite number > 0, got -1.0"),
    ({"train": {"optimizer": "lion"}}, "sweep: [train] optimizer: 'lion' is not one of adam, adamw, sgd"),
    ({"train": {"compile": [False, True]}}, "sweep: [train] compile: [false, true] names one run each time: compile "
                                            "is not part of a run's identity"),
    ({"train": {"engine": ["loop", "batched"]}}, "sweep: [train] engine: [\"loop\", \"batched\"] names one run each time"),
    ({"sweep": {"seeds": 0}}, "sweep: [sweep] seeds: must be >= 1"),
    ({"sweep": {"seeds": [0, 0]}}, "sweep: [sweep] seeds: a seed is listed twice"),
    ({"resources": {"num_cpus": 0}}, "sweep: [resources] num_cpus: must be a number > 0, got 0"),
    ({"resources": {"max_retries": -1}}, "sweep: [resources] max_retries: must be an integer >= 0, got -1"),
    ({}, "sweep: the file names nothing (no key in any table); give at least one"),  # was the defaults' sweep
    ({"grid": {}, "train": {}}, "sweep: the file names nothing"),
])
def test_bad_file_names_table_key_and_allowed(doc, message):
    with pytest.raises(SweepError) as e:
        parse_sweep(doc)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_grid_is_the_product_in_file_order_growth_for_dense_only():
    sweep = parse_sweep({"sweep": {"seeds": [3]}, "grid": {"skip": ["add", "dense"], "growth": [4, 8], "depth": 2},
                         "train": {"lr": [1e-3, 3e-3]}})
    got = [(r.model.skip, dict(r.model.options).get("growth"), r.train.lr) for r in sweep.runs]
    # add ignores growth, so its two growth points are one configuration (counted as duplicates)
    assert got == [("add", None, 1e-3), ("add", None, 3e-3), ("dense", 4, 1e-3), ("dense", 4, 3e-3),
                   ("dense", 8, 1e-3), ("dense", 8, 3e-3)]
    assert sweep.duplicates == 2 and {r.seed for r in sweep.runs} == {3}


def test_budget_sizes_each_strategy():
    sweep = parse_sweep({"sweep": {"seeds": 1}, "grid": {"skip": ["add", "dense"], "depth": 4, "params": 20000}})
    for r in sweep.runs:
        assert abs(param_counts(r.model)["total"] - 20000) / 20000 < 0.05


def test_input_shape_is_a_value_and_a_list_of_shapes_an_axis():
    one = parse_sweep({"sweep": {"seeds": 1}, "grid": {"model": "mlp", "input_shape": [40]}})
    assert [r.model.input_shape for r in one.runs] == [(40,)]
    two = parse_sweep({"sweep": {"seeds": 1}, "grid": {"model": "mlp", "input_shape": [[40], [1, 40]]}})
    assert [r.model.input_shape for r in two.runs] == [(40,), (1, 40)]


@pytest.mark.parametrize("content, message", [
    (None, "skiplab: error: sweep: no sweep file at"),
    ("[grid\nskip = 1", "skiplab: error: sweep: "),
    ("[grid]\ndepht = 3\n", "skiplab: error: sweep: [grid] unknown key 'depht'; known: model, depth"),
    ("[grid]\nskip = 'resnet'\n", "skiplab: error: sweep: [grid] skip: unknown strategy 'resnet'; allowed: plain"),
    ("", "skiplab: error: sweep: the file names nothing"),
])
def test_cli_bad_file_is_one_line_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "s.toml"
    if content is not None:
        path.write_text(content)
    assert main(["sweep", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    if content and content.startswith("[grid\n"):
        assert "is not valid TOML" in err


def test_cli_address_needs_ray_backend(capsys):
    assert main(["sweep", str(EXAMPLE), "--address", "auto"]) == 2
    assert "--address: only the ray backend joins a cluster" in capsys.readouterr().err


def test_cli_dry_run_lists_runs(capsys):
    assert main(["sweep", str(EXAMPLE), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["runs"]) == 8 and out["configs"] == 4


def test_ray_missing_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    sweep = parse_sweep(small_doc())
    with Store(tmp_path) as store, pytest.raises(SweepError) as e:
        run_sweep(sweep, store, "ray")
    assert str(e.value) == RAY_MISSING == "sweep: the ray backend needs 'pip install skiplab[ray]'"


# -- local backend ----------------------------------------------------------------------
def test_local_in_process_then_resume_skips_finished(tmp_path, capsys):
    path = tmp_path / "s.toml"  # 2 runs, in this process
    path.write_text("[sweep]\nseeds = 2\n[grid]\nmodel = 'mlp'\nskip = 'add'\ndepth = 1\n[train]\nepochs = 1\nevals = 1\n")
    assert main(["sweep", str(path), "--workers", "1", "--out", str(tmp_path / "o"), "--json"]) == 0
    cap = capsys.readouterr()
    first = json.loads(cap.out)
    assert cap.err == ""  # silent under --json
    assert first["counts"] == {"skipped": 0, "complete": 2}
    assert first["results"][0]["complete"] == 2
    before = stored(tmp_path / "o")
    assert main(["sweep", str(path), "--workers", "1", "--out", str(tmp_path / "o"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"skipped": 2}
    assert stored(tmp_path / "o") == before and row_count(tmp_path / "o") == 2


def test_local_in_process_runs_with_num_cpus_threads(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "execute_group", lambda specs: [seen.append(torch.get_num_threads()) or runner.failed_output(
        runner.RunSpec.from_dict(spec), "not run", "now") for spec in specs])
    sweep = parse_sweep({"sweep": {"seeds": 2}, "grid": {"model": "mlp", "depth": 1}})
    torch.set_num_threads(2)
    try:
        with Store(tmp_path) as store:
            assert run_sweep(sweep, store, "local", workers=1) == {"skipped": 0, "failed": 2}
        assert seen == [1, 1] and torch.get_num_threads() == 2  # the runs' 1 thread, then ours again
    finally:
        torch.set_num_threads(1)  # conftest's setting


# -- Ray --------------------------------------------------------------------------------
def _ray():
    return pytest.importorskip("ray", reason="ray is not installed: pip install 'skiplab[ray]' to run the Ray tests")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance with 2 CPUs for the tests that share it; run_ray uses an
    instance that is already up and leaves it up."""
    ray = _ray()
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024 * 1024,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_local_and_ray_store_the_same_results(tmp_path):
    ray = _ray()
    fresh = not ray.is_initialized()  # run in file order, the sweep starts its own instance
    sweep = parse_sweep(small_doc())
    with Store(tmp_path / "local") as store:
        local_counts = run_sweep(sweep, store, "local", workers=2)
    with Store(tmp_path / "here") as store:  # one worker: in this process, with the runs' 1 thread
        assert run_sweep(sweep, store, "local", workers=1) == local_counts
    with Store(tmp_path / "ray") as store:  # starts its own 2-CPU instance, and stops it
        ray_counts = run_sweep(sweep, store, "ray", workers=2)
    assert ray.is_initialized() != fresh  # one it started, it stopped
    assert local_counts == ray_counts == {"skipped": 0, "complete": 8}
    local, remote = stored(tmp_path / "local"), stored(tmp_path / "ray")
    assert set(local) == set(remote) == {(r.spec_hash, r.seed) for r in sweep.runs}
    assert local == remote == stored(tmp_path / "here")  # same test accuracy and loss, to the last bit
    with Store(tmp_path / "ray") as store:  # resume: nothing left to do, Ray not even started
        assert run_sweep(sweep, store, "ray", workers=2) == {"skipped": 8}


class Killer(threading.Thread):
    """SIGKILLs the first ``count`` Ray workers seen running a sweep task."""

    def __init__(self, count: int = 1):
        super().__init__(daemon=True)
        self.count, self.killed, self.stop = count, [], threading.Event()

    def run(self) -> None:
        deadline = time.time() + 120
        while len(self.killed) < self.count and not self.stop.is_set() and time.time() < deadline:
            for path in glob.glob("/proc/[0-9]*/cmdline"):
                try:
                    with open(path, "rb") as f:
                        title = f.read()
                except OSError:
                    continue
                pid = int(path.split("/")[2])
                if title.startswith(b"ray::_ray_task") and pid not in self.killed:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                    break
            time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray workers through /proc")
def test_killed_worker_is_retried_and_every_run_stored_once(tmp_path, ray_cluster):
    sweep = parse_sweep(small_doc(epochs=8))  # runs of about a second: the kill lands mid-run
    killer = Killer(1)
    killer.start()
    with Store(tmp_path) as store:
        counts = run_ray(sweep, store)
    killer.stop.set()
    assert len(killer.killed) == 1
    assert counts == {"skipped": 0, "complete": 8}  # the killed run was retried and finished
    assert row_count(tmp_path) == 8
    assert set(stored(tmp_path)) == {(r.spec_hash, r.seed) for r in sweep.runs}
    # the retried run computed what an undisturbed one does
    with Store(tmp_path / "ref") as store:
        run_ray(sweep, store)
    assert stored(tmp_path) == stored(tmp_path / "ref")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray workers through /proc")
def test_worker_dying_past_max_retries_is_stored_failed_then_resumed(tmp_path, ray_cluster):
    doc = small_doc(epochs=8)
    doc["resources"]["max_retries"] = 0
    sweep = parse_sweep(doc)
    killer = Killer(1)
    killer.start()
    with Store(tmp_path) as store:
        counts = run_ray(sweep, store)
    killer.stop.set()
    assert len(killer.killed) == 1
    # a task is a configuration's 2 seeds (batched): both are lost with it; the rest went on
    assert counts == {"skipped": 0, "complete": 6, "failed": 2}
    with Store(tmp_path) as store:
        failed = [r for r in store.runs() if r["status"] == "failed"]
    assert len(failed) == 2 and all(f["result"]["message"].startswith("WorkerCrashedError after 0 retries")
                                    for f in failed)
    assert len({f["spec_hash"] for f in failed}) == 1
    with Store(tmp_path) as store:  # resume: only the failed runs are run again
        assert run_ray(sweep, store) == {"skipped": 6, "complete": 2}
    assert row_count(tmp_path) == 8
    assert {s for s, *_ in stored(tmp_path).values()} == {"complete"}


def test_strategy_options_go_to_the_strategies_that_declare_them():
    sweep = parse_sweep({"sweep": {"seeds": 1}, "grid": {"skip": ["add", "hyper", "mhc"], "streams": [2, 3],
                                                         "static": True, "depth": 2}})
    got = sorted({(r.model.skip, tuple(sorted(dict(r.model.options).items()))) for r in sweep.runs})
    assert got == [("add", ()), ("hyper", (("static", True), ("streams", 2))),
                   ("hyper", (("static", True), ("streams", 3))), ("mhc", (("streams", 2),)), ("mhc", (("streams", 3),))]
    with pytest.raises(SweepError, match="streams"):
        parse_sweep({"sweep": {"seeds": 1}, "grid": {"skip": "hyper", "streams": 0}})


def test_warmup_is_a_train_key_and_zero_keeps_the_identity():
    runs = parse_sweep({"sweep": {"seeds": 1}, "grid": {"skip": "add", "depth": 2},
                        "train": {"warmup": [0, 50]}}).runs
    assert [r.train.warmup for r in runs] == [0, 50]
    assert "warmup" not in runs[0].to_dict()["train"] and runs[1].to_dict()["train"]["warmup"] == 50
    with pytest.raises(SweepError, match=r"^sweep: \[train\] warmup: must be an integer >= 0"):
        parse_sweep({"sweep": {"seeds": 1}, "grid": {"skip": "add"}, "train": {"warmup": -5}})
