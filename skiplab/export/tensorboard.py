"""``skiplab runs export --tensorboard DIR``: every stored run as a TensorBoard run.

Layout: ``DIR/GROUP/SKIP-depthD-widthW-SPECHASH-seedS/`` (:func:`~skiplab.export.fields.run_path`),
one event file per run, written with PyTorch's ``SummaryWriter`` (TensorBoard's own
format). In it:

* each curve as a scalar series at its training steps: ``train/loss``, ``test/accuracy``,
  ``test/bpc``, ... (:mod:`skiplab.export.fields`);
* each final metric as a scalar ``final/NAME`` at the run's last step
  (``final/test_accuracy``, ``final/params``, ...), and each field of the configuration's
  cost summary, where the store has one, as ``cost/NAME`` (``cost/flops``, ...);
* the hparams of the run (the HParams dashboard's session): ``seed``, ``spec_hash``,
  ``status`` and the spec's flattened fields, with the ``final/...`` and ``cost/...``
  scalars as its metrics. They are written into the run's own event file, not into the subfolder
  ``SummaryWriter.add_hparams`` would make, so that the HParams dashboard shows each
  session as the same run as its curves.

Every point carries the run's finish time as its wall time. TensorBoard keeps scalars as
32-bit floats, so a value read back equals the store's to about 7 significant digits.
Exporting again rewrites each run's folder (its old event files are removed first): a
run is never there twice.
"""

from __future__ import annotations

import os
from typing import Any

from .extras import need
from .fields import curve_name, flat_value, read_store, run_path, seconds, spec_fields, summary_metrics
from ..errors import UserError
from .targets import check_folder


def run_hparams(run: dict[str, Any]) -> dict[str, Any]:
    """The hparams of a stored run: its key and status, then its flattened spec; None
    (a field not set) left out, a bool as ``True``/``False`` (PyTorch's writer would store
    it as the number 1 or 0)."""
    hp = {"seed": run["seed"], "spec_hash": run["spec_hash"], "status": run["status"], **spec_fields(run["spec"])}
    return {k: str(v) if isinstance(v, bool) else flat_value(v) for k, v in hp.items() if v is not None}


def export_tensorboard(out: str | os.PathLike, logdir: str | os.PathLike) -> dict[str, Any]:
    """Write every run of the store in ``out`` under ``logdir``. Returns ``{"runs": n,
    "scalars": points written, "logdir": ...}``. Needs the ``tensorboard`` extra."""
    logdir = check_folder("--tensorboard", logdir)  # only its last part is made, after every check
    need("tensorboard", "tensorboard", "the TensorBoard export")
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    stored = read_store(out)
    try:
        logdir.mkdir(exist_ok=True)
    except OSError as e:
        raise UserError(f"export: cannot create {logdir}: {e.strerror or e}") from None
    points = 0
    for run in stored.runs:
        folder = logdir / run_path(run)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("events.out.tfevents.*"):  # a re-export replaces the run, never appends to it
                old.unlink()
        except OSError as e:
            raise UserError(f"export: cannot write {folder}: {e.strerror or e}") from None
        wall = seconds(run["finished_at"])
        curves = stored.curves[run["id"]]
        final = summary_metrics(stored, run)
        last = max((step for step, *_ in curves), default=0)
        with SummaryWriter(log_dir=str(folder), max_queue=1000, flush_secs=3600) as w:
            for step, split, name, value in curves:
                w.add_scalar(curve_name(split, name), value, step, walltime=wall)
            for tag, value in final.items():
                w.add_scalar(tag, value, last, walltime=wall)
            for summary in hparams(run_hparams(run), final):
                w.file_writer.add_summary(summary, walltime=wall)
        points += len(curves) + len(final)
    return {"runs": len(stored.runs), "scalars": points, "logdir": str(logdir)}
