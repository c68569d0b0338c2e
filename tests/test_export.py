"""Exports to TensorBoard, MLflow and pandas (skiplab.export), each read back with its own
library's reader and compared with the store value by value.

Method: one small synthetic store (skiplab.report.synthetic: a real plan, real specs and
cost summaries, made-up numbers; 24 runs) plus one failed run, exported once per test
module. TensorBoard's event files are read with TensorBoard's EventAccumulator, MLflow's
store with MlflowClient; both are compared with ``Store.runs()`` and ``Store.metrics()``
and with a flattening of the spec written out here, not the exporter's own. TensorBoard
keeps scalars as 32-bit floats: compared to 1e-6 relative; MLflow and pandas exactly.
A test whose extra is missing is skipped, saying which extra.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from skiplab.cli import main
from skiplab.export import MissingExtra, load_curves, load_runs
from skiplab.export.fields import COST_FIELDS, RUN_FIELDS, run_path
from skiplab.export.mlflow import tracking_uri
from skiplab.report.synthetic import synthetic_store
from skiplab.run.config import RunResult, TrainConfig
from skiplab.skips import all_options
from skiplab.spec import MODEL_KEYS
from skiplab.store import Store
from skiplab.study import StudyPlan

PLAN = StudyPlan(skips=("plain", "add", "dense"), depths=(2, 8), seeds=2, train=TrainConfig(epochs=1, evals=3))
RUNS = 3 * 2 * 2 * 2 + 1  # skips x depths x budgets x seeds, and one failed run

MLFLOW_REASON = "the mlflow extra is not installed: pip install 'skiplab[mlflow]'"
TB_REASON = "the tensorboard extra is not installed: pip install 'skiplab[tensorboard]'"
PANDAS_REASON = "the pandas extra is not installed: pip install 'skiplab[pandas]'"


def _failed_run(store: Store) -> None:
    spec = json.loads(json.dumps(store.runs()[0]["spec"]))
    spec["group"], spec["seed"] = "extra", 7
    store.add_run(spec, "f" * 16, 7, "failed", {"status": "failed", "seed": 7, "message": "worker process died"},
                  [], "2026-01-02T00:00:00+00:00")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    with synthetic_store(out, PLAN) as store:
        _failed_run(store)
    # a report to attach (its content does not matter to the export; writing a real one takes seconds)
    (out / "report.html").write_text("<!DOCTYPE html><title>report</title>")
    (out / "report.md").write_text("# report\n")
    (out / "figures").mkdir()
    (out / "figures" / "error-edf.svg").write_text("<svg/>")
    return out


@pytest.fixture(scope="module")
def stored(out):
    with Store(out, create=False) as store:
        runs = store.runs()
        return runs, {r["id"]: store.metrics(r["id"]) for r in runs}


def expected_fields(spec: dict) -> dict:
    """The spec flattened by hand: run fields, model fields, options, training fields."""
    model = dict(spec["model"])
    options = model.pop("options")
    return {"group": spec["group"], "dataset": spec["dataset"], "label": spec["label"], **model, **options,
            **spec["train"]}


def expected_numbers(result: dict) -> dict:
    return {k: v for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"}


def test_flattened_names_never_collide():
    """Every spec field, strategy option, result field and cost field has a name of its own,
    so a flat table (DataFrame, MLflow params and metrics) never loses one to another."""
    names = ([*RUN_FIELDS, "seed"] + [k for k in MODEL_KEYS if k != "options"]
             + list(all_options()) + [f.name for f in dataclasses.fields(TrainConfig)]
             + [f.name for f in dataclasses.fields(RunResult) if f.name not in ("seed", "curves", "diagnostics")]
             + list(COST_FIELDS))
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_tensorboard_event_files_hold_every_value(out, stored, tmp_path, capsys):
    pytest.importorskip("tensorboard", reason=TB_REASON)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    logdir = tmp_path / "tb"
    assert main(["runs", "export", "--out", str(out), "--tensorboard", str(logdir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensorboard"]["runs"] == RUNS
    assert main(["runs", "export", "--out", str(out), "--tensorboard", str(logdir)]) == 0  # again: replaced, not doubled
    runs, metrics = stored
    assert len(list(logdir.rglob("events.out.tfevents.*"))) == RUNS
    for run in runs:
        folder = logdir / run_path(run)
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        curves: dict[str, list[tuple[int, float]]] = {}
        for step, split, name, value in metrics[run["id"]]:
            curves.setdefault(f"{split}/{name}", []).append((step, value))
        final = {f"final/{k}": v for k, v in expected_numbers(run["result"]).items()}
        assert set(acc.Tags()["scalars"]) >= set(curves) | set(final)
        for tag, points in curves.items():
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            assert [s for s, _ in got] == [s for s, _ in points]
            assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6)
        for tag, value in final.items():
            assert acc.Scalars(tag)[-1].value == pytest.approx(value, rel=1e-6)
        # hparams: the session's start info holds the spec, the experiment lists the metrics
        content = acc.PluginTagToContent("hparams")
        start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
        hp = {k: (v.string_value if v.HasField("string_value") else v.bool_value if v.HasField("bool_value")
                  else v.number_value) for k, v in start.hparams.items()}
        want = {**expected_fields(run["spec"]), "seed": run["seed"], "spec_hash": run["spec_hash"],
                "status": run["status"]}
        want = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) if isinstance(v, bool) else v
                for k, v in want.items() if v is not None}
        assert hp == pytest.approx(want)
        experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert {m.name.tag for m in experiment.metric_infos} >= set(final)


@pytest.fixture(scope="module")
def mlflow_store(out, tmp_path_factory):
    pytest.importorskip("mlflow", reason=MLFLOW_REASON)
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    assert main(["runs", "export", "--out", str(out), "--mlflow", uri, "--experiment", "study"]) == 0
    from mlflow.tracking import MlflowClient
    return uri, MlflowClient(tracking_uri=uri)


def _mlflow_runs(client):
    experiment = client.get_experiment_by_name("study")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return {r.data.tags["skiplab.key"]: r for r in runs}


def test_mlflow_runs_hold_params_metric_histories_tags_and_the_report(mlflow_store, stored):
    _, client = mlflow_store
    runs, metrics = stored
    by_key = _mlflow_runs(client)
    assert len(by_key) == RUNS + 1  # and the report
    for run in runs:
        r = by_key[f"{run['spec_hash']}/{run['seed']}"]
        want = {k: str(",".join(map(str, v)) if isinstance(v, list) else v)
                for k, v in {**expected_fields(run["spec"]), "seed": run["seed"]}.items() if v is not None}
        assert r.data.params == want
        tags = r.data.tags
        assert (tags["skiplab.spec_hash"], tags["skiplab.seed"], tags["skiplab.status"]) == \
            (run["spec_hash"], str(run["seed"]), run["status"])
        assert tags["skiplab.versions.torch"] == run["versions"]["torch"]
        assert tags["skiplab.hardware.cpu"] == run["hardware"]["cpu"]
        assert r.info.status == ("FAILED" if run["status"] == "failed" else "FINISHED")
        curves: dict[str, list[tuple[int, float]]] = {}
        for step, split, name, value in metrics[run["id"]]:
            curves.setdefault(f"{split}/{name}", []).append((step, value))
        for key, points in curves.items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, key))
            assert history == points  # exact: MLflow keeps doubles
        for k, v in expected_numbers(run["result"]).items():
            assert r.data.metrics[f"final/{k}"] == v
        if run["status"] == "complete":  # the study's cost summary of the configuration
            assert r.data.metrics["cost/flops"] > 0
    report = by_key["report"]
    assert {a.path for a in client.list_artifacts(report.info.run_id)} == {"report.html", "report.md", "figures"}


def test_mlflow_export_again_duplicates_nothing(mlflow_store, out, capsys):
    uri, client = mlflow_store
    before = {k: r.info.run_id for k, r in _mlflow_runs(client).items()}
    assert main(["runs", "export", "--out", str(out), "--mlflow", uri, "--experiment", "study", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["mlflow"]
    assert (counts["added"], counts["unchanged"], counts["replaced"], counts["report"]) == (0, RUNS, 0, "unchanged")
    assert {k: r.info.run_id for k, r in _mlflow_runs(client).items()} == before
    # a failed run finished by a resume is stored again: its MLflow run is replaced, once
    with Store(out) as store:
        failed = next(r for r in store.runs() if r["status"] == "failed")
        store.add_run(failed["spec"], failed["spec_hash"], failed["seed"], "complete",
                      {"status": "complete", "seed": 7, "test_accuracy": 0.5, "params": 10}, [(1, "test", "accuracy", 0.5)],
                      "2026-01-03T00:00:00+00:00")
    assert main(["runs", "export", "--out", str(out), "--mlflow", uri, "--experiment", "study", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["mlflow"]
    assert (counts["added"], counts["unchanged"], counts["replaced"]) == (0, RUNS - 1, 1)
    after = _mlflow_runs(client)
    assert len(after) == RUNS + 1
    again = after[f"{'f' * 16}/7"]
    assert again.info.status == "FINISHED" and again.info.run_id != before[f"{'f' * 16}/7"]
    assert [(m.step, m.value) for m in client.get_metric_history(again.info.run_id, "test/accuracy")] == [(1, 0.5)]


def test_mlflow_uri_forms(tmp_path, monkeypatch):
    folder = tmp_path / "mlruns"
    assert tracking_uri(str(folder)) == (f"sqlite:///{folder.resolve() / 'mlflow.db'}", folder / "mlartifacts")
    assert folder.is_dir()
    db = tmp_path / "a" / "m.db"
    (tmp_path / "a").mkdir()  # only the last part of a path is made (tests/test_bad_input.py: a missing folder)
    assert tracking_uri(f"sqlite:///{db}") == (f"sqlite:///{db}", db.parent / "mlartifacts")
    assert tracking_uri("file:///tmp/mlruns") == ("file:///tmp/mlruns", None)
    # a bare word is a folder only if it exists (MLflow reads such words as servers); ./NAME makes one
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="no folder of that name here"):
        tracking_uri("fresh")
    assert not (tmp_path / "fresh").exists()
    assert tracking_uri("./fresh")[0] == f"sqlite:///{(tmp_path / 'fresh' / 'mlflow.db').resolve()}"
    assert (tmp_path / "fresh").is_dir()
    assert tracking_uri("fresh")[1] == Path("fresh") / "mlartifacts"
    for bad in ("http://localhost:5000", "databricks://profile", "postgresql://host/db", "sqlite://"):
        with pytest.raises(ValueError, match="export: --mlflow"):
            tracking_uri(bad)


def test_load_runs_and_load_curves(out):
    pytest.importorskip("pandas", reason=PANDAS_REASON)
    runs_frame, curves_frame = load_runs(out), load_curves(out)
    with Store(out, create=False) as store:
        runs = store.runs()
        metrics = {r["id"]: store.metrics(r["id"]) for r in runs}
    assert len(runs_frame) == len(runs)
    for row, run in zip(runs_frame.to_dict("records"), runs):
        assert (row["spec_hash"], row["seed"], row["status"]) == (run["spec_hash"], run["seed"], run["status"])
        for k, v in expected_fields(run["spec"]).items():
            assert row[k] == (tuple(v) if isinstance(v, list) else v), k
        for k, v in expected_numbers(run["result"]).items():
            assert row[k] == v, k
    assert {"flops", "activation_bytes", "concat_bytes", "growth", "test_accuracy"} <= set(runs_frame.columns)
    assert str(runs_frame["finished_at"].dtype).startswith("datetime64")
    want = sorted((r["spec_hash"], r["seed"], f"{split}/{name}", step, value)
                  for r in runs for step, split, name, value in metrics[r["id"]])
    assert list(curves_frame.columns) == ["spec_hash", "seed", "curve", "step", "value"]
    assert sorted(map(tuple, curves_frame.itertuples(index=False))) == want
    joined = curves_frame.merge(runs_frame[["spec_hash", "seed", "skip"]], on=["spec_hash", "seed"])
    assert len(joined) == len(curves_frame)


@pytest.mark.parametrize("module, extra, argv", [
    ("tensorboard", "tensorboard", ["--tensorboard", "{d}/tb"]),
    ("mlflow", "mlflow", ["--mlflow", "{d}/ml"]),
])
def test_missing_extra_is_one_line_naming_it(out, tmp_path, capsys, monkeypatch, module, extra, argv):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    argv = ["runs", "export", "--out", str(out)] + [a.replace("{d}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pip install 'skiplab[{extra}]'" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_missing_pandas_names_the_extra(out, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtra, match=r"pip install 'skiplab\[pandas\]'"):
        load_runs(out)
    with pytest.raises(ImportError):  # MissingExtra is an ImportError
        load_curves(out)


def test_export_needs_a_target_and_a_store(tmp_path, capsys):
    assert main(["runs", "export", "--out", str(tmp_path / "none"), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "no results store" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists()
