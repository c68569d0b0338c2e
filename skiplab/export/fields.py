"""What every export says about a stored run, decided once, so that TensorBoard, MLflow and
pandas name the same number the same way.

A stored run (:meth:`skiplab.store.Store.runs`) becomes

* its **spec fields**, flattened: the run's own fields (``group``, ``dataset``, ``label``),
  every ``ModelSpec`` field (``model`` is the family, ``skip``, ``depth``, ``width``, ...),
  every strategy option (``growth``, ``streams``, ...) and every ``TrainConfig`` field
  (``lr``, ``epochs``, ...), each under its own name (no two of these share a name:
  ``tests/test_export.py`` checks it over every field and option);
* its **final metrics**: the numbers of its result (``test_accuracy``, ``test_loss``,
  ``val_bpc``, ``params``, ``seconds``, ``steps``, ``tokens_per_second``, and the
  strategy diagnostics such as ``composite_gain_forward``);
* its **cost summary** where the store has one (a study stores the analytic cost of each
  planned configuration): ``flops`` (per sample), ``activation_bytes`` and
  ``concat_bytes`` (per batch of the plan's batch size);
* its **curves**, each named ``split/name`` as the store keys it: ``train/loss``,
  ``train/accuracy``, ``test/loss``, ``test/accuracy``, a language model's ``test/bpc``
  (its held-out split is stored as ``test``; that is the validation text), and
  ``test/gain_forward``, ``test/gain_backward`` for strategies that mix streams.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..results import cost_key
from ..store import Store

RUN_FIELDS = ("group", "dataset", "label")  # the RunSpec's own fields; the seed is kept apart
COST_FIELDS = ("flops", "activation_bytes", "concat_bytes")
NOT_METRICS = ("seed", "status", "message")  # result fields that are not numbers to plot


def spec_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored spec flattened to one level: run fields, model fields, strategy options,
    training fields, in that order (the seed is not among them)."""
    model = dict(spec["model"])
    options = model.pop("options", None) or {}
    out: dict[str, Any] = {}
    for part in ({k: spec.get(k, "") for k in RUN_FIELDS}, model, options, spec["train"]):
        for key, value in part.items():
            if key in out:  # never silently overwrite: a new field must get a name of its own
                raise ValueError(f"export: spec field {key!r} appears twice in {sorted(spec)}")
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def final_metrics(result: dict[str, Any]) -> dict[str, float | int]:
    """The numbers of a stored result, the diagnostics' among them; missing ones left out."""
    out: dict[str, float | int] = {}
    for key, value in result.items():
        if key in NOT_METRICS:
            continue
        if isinstance(value, dict):  # diagnostics: {"composite_gain_forward": ..., ...}
            out.update({k: v for k, v in value.items() if _number(v)})
        elif _number(value):
            out[key] = value
    return out


def flat_value(value: Any) -> Any:
    """A field's value as a TensorBoard hparam or MLflow param takes it: a shape as ``1,40``."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


def curve_name(split: str, name: str) -> str:
    """``train/loss``: a TensorBoard scalar's tag, an MLflow metric's key, ``load_curves``'s ``curve``."""
    return f"{split}/{name}"


def _safe(text: str) -> str:
    """A path component from free text (a group name): letters, digits, ``.``, ``_``, ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "ungrouped"


def run_label(run: dict[str, Any]) -> str:
    """``add-depth8-width43-seed0``: what a person reads first."""
    m = run["spec"]["model"]
    return f"{m['skip']}-depth{m['depth']}-width{m['width']}-seed{run['seed']}"


def run_path(run: dict[str, Any]) -> str:
    """A unique relative path for a run: ``GROUP/SKIP-depthD-widthW-SPECHASH-seedS`` (the
    spec hash tells apart configurations that differ only in, say, an option)."""
    m = run["spec"]["model"]
    return (f"{_safe(run['spec'].get('group', ''))}/"
            f"{_safe(m['skip'])}-depth{m['depth']}-width{m['width']}-{run['spec_hash']}-seed{run['seed']}")


def run_key(run: dict[str, Any]) -> str:
    """A run's identity in the store, ``SPECHASH/SEED``."""
    return f"{run['spec_hash']}/{run['seed']}"


def seconds(stamp: str) -> float:
    """Unix time of a stored ISO 8601 time."""
    return dt.datetime.fromisoformat(stamp).timestamp()


@dataclass
class StoredRuns:
    """A store read once for export: runs, their curves and the cost summaries."""

    path: Path  # the runs.db
    runs: list[dict[str, Any]]  # Store.runs()
    curves: dict[int, list[tuple[int, str, str, float]]]  # run id -> (step, split, name, value)
    costs: dict[tuple, dict[str, Any]]  # results.cost_key -> the study's cost summary

    def cost_of(self, run: dict[str, Any]) -> dict[str, Any]:
        """The cost fields of a run's configuration, or {} when the store has none for it."""
        c = self.costs.get(cost_key({"group": run["spec"].get("group", ""), **run["spec"]["model"]}))
        return {k: c[k] for k in COST_FIELDS if k in c} if c else {}


def summary_metrics(stored: StoredRuns, run: dict[str, Any]) -> dict[str, float | int]:
    """One number per name for the TensorBoard and MLflow exports: ``final/NAME`` for each
    final metric, ``cost/NAME`` for each field of the cost summary."""
    return {**{f"final/{k}": v for k, v in final_metrics(run["result"]).items()},
            **{f"cost/{k}": v for k, v in stored.cost_of(run).items()}}


def read_store(out: str | os.PathLike) -> StoredRuns:
    """Everything the exports need from the store in ``out``; a missing or corrupt store is
    one :class:`~skiplab.store.StoreError` (a ValueError)."""
    with Store(out, create=False) as store:
        runs = store.runs()
        curves = {r["id"]: store.metrics(r["id"]) for r in runs}
        costs = {cost_key(c): c for c in store.meta("costs") or []}
        return StoredRuns(store.path.resolve(), runs, curves, costs)


def joined(*parts: dict[str, Any]) -> dict[str, Any]:
    """The parts' fields in one dict; a name in two parts is an error, never an overwrite."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key in out:
                raise ValueError(f"export: the name {key!r} is both a spec field and a result field")
            out[key] = value
    return out
