"""The store as pandas DataFrames: :func:`load_runs` (one row per run) and
:func:`load_curves` (one row per curve point, long format)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .extras import need
from .fields import curve_name, final_metrics, joined, read_store, spec_fields

if TYPE_CHECKING:
    import pandas

KEY = ["spec_hash", "seed"]  # a run's identity in the store, and the columns to join the two frames on


def load_runs(out: str | os.PathLike = "skiplab-out") -> "pandas.DataFrame":
    """One row per stored run of the store in ``out`` (the folder holding ``runs.db``).

    Columns: ``spec_hash``, ``seed``, ``status``, ``message`` (why a run failed or
    diverged; empty otherwise), the spec's fields flattened (``group``, ``dataset``,
    ``model``, ``skip``, ``depth``, ``width``, the strategy options such as ``growth``,
    ``lr``, ``epochs``, ...), the final metrics (``test_accuracy``, ``test_loss``,
    ``val_bpc``, ``params``, ``seconds``, ...), the cost summary where the store has one
    (``flops`` per sample, ``activation_bytes`` and ``concat_bytes`` per batch), and
    ``started_at`` and ``finished_at`` as UTC timestamps. A field a run lacks (an option
    of another strategy, a metric of another task) is missing (NaN or None).
    """
    pd = need("pandas", "pandas", "skiplab.load_runs")
    stored = read_store(out)
    rows = [joined({"spec_hash": r["spec_hash"], "seed": r["seed"], "status": r["status"],
                    "message": r["result"].get("message", "")},
                   spec_fields(r["spec"]), final_metrics(r["result"]), stored.cost_of(r),
                   {"started_at": r["started_at"], "finished_at": r["finished_at"]})
            for r in stored.runs]
    frame = pd.DataFrame(rows, columns=None if rows else [*KEY, "status", "message", "started_at", "finished_at"])
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def load_curves(out: str | os.PathLike = "skiplab-out") -> "pandas.DataFrame":
    """Every curve point of every stored run, one row each: ``spec_hash``, ``seed`` (the
    run's key: join with :func:`load_runs` on them), ``curve`` (``train/loss``,
    ``test/accuracy``, ``test/bpc``, ...), ``step`` (training batches) and ``value``."""
    pd = need("pandas", "pandas", "skiplab.load_curves")
    stored = read_store(out)
    rows = [(r["spec_hash"], r["seed"], curve_name(split, name), step, value)
            for r in stored.runs for step, split, name, value in stored.curves[r["id"]]]
    frame = pd.DataFrame(rows, columns=[*KEY, "curve", "step", "value"])
    return frame.sort_values([*KEY, "curve", "step"], ignore_index=True)
