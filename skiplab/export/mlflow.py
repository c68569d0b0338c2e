"""``skiplab runs export --mlflow URI``: every stored run as an MLflow run.

Where: ``URI`` is ``sqlite:///FILE.db``, or a folder (``./mlruns``), which gets
``FOLDER/mlflow.db``; artifacts go to ``mlartifacts/`` beside the database; each is checked
before MLflow is imported and before anything is created (:mod:`skiplab.export.targets`:
a bare word is a folder only if it exists, a database file must be SQLite). MLflow 3
keeps new features for its database stores and refuses its old file store unless
``MLFLOW_ALLOW_FILE_STORE=true`` is set, so a folder means a database in it; a ``file:``
URI is passed to MLflow unchanged, for those who use that store. Nothing networked: other
schemes (``http``, ``databricks``, ...) are refused.

What: one MLflow experiment per store, named after the store's folder (``--experiment``
to choose); the study's comparisons (``equal-width``, ``matched-params``) and sweeps'
groups are the ``group`` param, to filter and group by in the MLflow view. In it:

* one MLflow run per stored run, named ``GROUP/SKIP-depthD-widthW-seedS``, started and
  ended at the stored times; status ``FINISHED`` for complete and diverged runs (the
  store's "finished"), ``FAILED`` for failed ones;
* **params**: ``seed`` and the spec's flattened fields (:mod:`skiplab.export.fields`);
* **metrics**: each curve with its step history (``train/loss``, ``test/accuracy``, ...),
  and ``final/NAME`` and ``cost/NAME`` as in the TensorBoard export, stamped with the
  run's finish time;
* **tags**: ``skiplab.key`` (``SPECHASH/SEED``, the run's identity), ``skiplab.spec_hash``,
  ``skiplab.seed``, ``skiplab.status``, ``skiplab.message`` (why it failed or diverged),
  ``skiplab.started_at``, ``skiplab.finished_at``, ``skiplab.store`` (the runs.db it came
  from), ``skiplab.versions.NAME`` (skiplab, python, torch, numpy) and
  ``skiplab.hardware.NAME`` (cpu, cores, gpu, torch_threads, ...), ``skiplab.kind = run``;
* one run named ``report`` (``skiplab.kind = report``) holding ``report.html``,
  ``report.md`` and ``figures/`` as artifacts, where the store's folder has a report.

Idempotent: a run whose ``skiplab.key`` the experiment already holds with the same
finish time is left as it is; one stored again since (a failed run finished by a resume)
replaces the old MLflow run, which is deleted (MLflow keeps deleted runs out of its
views and searches). The report run is replaced when the report's files changed. So
exporting twice duplicates nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from .extras import need
from .targets import experiment_name, mlflow_target
from .fields import (StoredRuns, curve_name, flat_value, read_store, run_key, run_label, seconds, spec_fields,
                     summary_metrics)
from ..errors import UserError

REPORT_FILES = ("report.html", "report.md")
# MLflow's limits per log_batch call (mlflow.utils.validation): 1000 entries in all, of
# which at most 100 params and 100 tags.
BATCH = {"metrics": 1000, "params": 100, "tags": 100}


def tracking_uri(uri: str) -> tuple[str, Path | None]:
    """The MLflow tracking URI for ``uri``, and the folder for artifacts (None: MLflow's
    own choice, for a ``file:`` store), checked first (:func:`~skiplab.export.targets.mlflow_target`).
    Creates a new folder given as a path (only its last part)."""
    target = mlflow_target(uri)
    if target.create is not None:
        try:
            target.create.mkdir()
        except FileExistsError:
            pass
        except OSError as e:
            raise UserError(f"export: cannot create {target.create}: {e.strerror or e}") from None
    return target.tracking_uri, target.artifacts


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow announces creating its tables at INFO on stderr; only warnings are of use here."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ms(stamp: str) -> int:
    return int(seconds(stamp) * 1000)


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def run_tags(stored: StoredRuns, run: dict[str, Any]) -> dict[str, str]:
    """The provenance of a stored run, as MLflow tags."""
    tags = {"skiplab.kind": "run", "skiplab.key": run_key(run), "skiplab.spec_hash": run["spec_hash"],
            "skiplab.seed": str(run["seed"]), "skiplab.status": run["status"],
            "skiplab.started_at": run["started_at"], "skiplab.finished_at": run["finished_at"],
            "skiplab.store": str(stored.path)}
    if run["result"].get("message"):
        tags["skiplab.message"] = run["result"]["message"]
    for section in ("versions", "hardware"):
        tags.update({f"skiplab.{section}.{k}": str(v) for k, v in (run.get(section) or {}).items() if v is not None})
    return tags


def _existing(client, experiment_id: str) -> dict[str, Any]:
    """The experiment's active runs by their ``skiplab.key`` tag."""
    found, token = {}, None
    while True:
        page = client.search_runs([experiment_id], filter_string="tags.`skiplab.kind` != ''", max_results=1000,
                                  page_token=token)
        for r in page:
            found[r.data.tags.get("skiplab.key")] = r
        token = page.token
        if not token:
            return found


def _log_run(client, entities, experiment_id: str, stored: StoredRuns, run: dict[str, Any]) -> None:
    Metric, Param = entities.Metric, entities.Param
    group = run["spec"].get("group", "")
    created = client.create_run(experiment_id, start_time=_ms(run["started_at"]),
                                run_name=f"{group}/{run_label(run)}" if group else run_label(run),
                                tags=run_tags(stored, run))
    run_id, when = created.info.run_id, _ms(run["finished_at"])
    params = [Param(k, str(flat_value(v))) for k, v in {"seed": run["seed"], **spec_fields(run["spec"])}.items()
              if v is not None]
    metrics = [Metric(curve_name(split, name), value, when, step) for step, split, name, value in stored.curves[run["id"]]]
    last = max((m.step for m in metrics), default=0)
    metrics += [Metric(k, v, when, last) for k, v in summary_metrics(stored, run).items()]
    for chunk in _chunks(params, BATCH["params"]):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, BATCH["metrics"]):
        client.log_batch(run_id, metrics=chunk)
    client.set_terminated(run_id, status="FAILED" if run["status"] == "failed" else "FINISHED", end_time=when)


def _report_digest(folder: Path) -> str | None:
    """A digest of the report's files in ``folder`` (None: no report there)."""
    if not all((folder / name).is_file() for name in REPORT_FILES):
        return None
    h = hashlib.sha256()
    files = [folder / n for n in REPORT_FILES] + sorted((folder / "figures").glob("*"))
    for f in files:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def export_mlflow(out: str | os.PathLike, uri: str, experiment: str | None = None) -> dict[str, Any]:
    """Write every run of the store in ``out`` to the MLflow store at ``uri``, in the
    experiment ``experiment`` (default: the store folder's name). Returns the counts:
    ``added``, ``unchanged``, ``replaced`` runs, ``report`` (added | unchanged |
    replaced | none), with the ``experiment`` name and id and the ``tracking_uri``.
    Needs the ``mlflow`` extra."""
    mlflow_target(uri)  # a bad target: one line, before MLflow's slow import
    experiment = experiment_name(experiment)
    need("mlflow", "mlflow", "the MLflow export")
    stored = read_store(out)  # a missing store: one line, before anything is created
    folder = stored.path.parent
    name = experiment or folder.name
    target, artifacts = tracking_uri(uri)
    from mlflow import entities
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    counts = {"added": 0, "unchanged": 0, "replaced": 0}
    try:
        with _quiet():
            client = MlflowClient(tracking_uri=target)
            found = client.get_experiment_by_name(name)
            if found is None:
                location = (artifacts / name).resolve().as_uri() if artifacts else None
                experiment_id = client.create_experiment(name, artifact_location=location,
                                                         tags={"skiplab.store": str(stored.path)})
            elif found.lifecycle_stage == "deleted":
                raise UserError(f"export: the MLflow experiment {name!r} was deleted; restore it "
                                 "(mlflow experiments restore) or name another with --experiment")
            else:
                experiment_id = found.experiment_id
            existing = _existing(client, experiment_id)
            for run in stored.runs:
                old = existing.get(run_key(run))
                if old is not None and old.data.tags.get("skiplab.finished_at") == run["finished_at"]:
                    counts["unchanged"] += 1
                    continue
                if old is not None:
                    client.delete_run(old.info.run_id)
                _log_run(client, entities, experiment_id, stored, run)
                counts["replaced" if old is not None else "added"] += 1
            counts["report"] = _export_report(client, experiment_id, folder, existing.get("report"))
    except (MlflowException, OSError) as e:
        raise UserError(f"export: MLflow at {uri}: {str(e).strip().splitlines()[0]}") from None
    return {**counts, "experiment": name, "experiment_id": experiment_id, "tracking_uri": target}


def _export_report(client, experiment_id: str, folder: Path, old) -> str:
    """The report run: added, unchanged, replaced (the report changed) or none (no report)."""
    digest = _report_digest(folder)
    if digest is None:
        return "none"
    if old is not None and old.data.tags.get("skiplab.report_sha256") == digest:
        return "unchanged"
    if old is not None:
        client.delete_run(old.info.run_id)
    run_id = client.create_run(experiment_id, run_name="report",
                               tags={"skiplab.kind": "report", "skiplab.key": "report",
                                     "skiplab.report_sha256": digest}).info.run_id
    for name in REPORT_FILES:
        client.log_artifact(run_id, str(folder / name))
    if (folder / "figures").is_dir():
        client.log_artifacts(run_id, str(folder / "figures"), artifact_path="figures")
    client.set_terminated(run_id, status="FINISHED")
    return "replaced" if old is not None else "added"
