"""Stored runs where researchers already look: TensorBoard, MLflow and pandas.

* :func:`export_tensorboard` (``skiplab runs export --tensorboard DIR``): one TensorBoard
  run per stored run, its curves as scalars and its spec as hparams;
* :func:`export_mlflow` (``skiplab runs export --mlflow URI``): one MLflow run per stored
  run, in one experiment per store, with params, metric histories, provenance tags and
  the report as an artifact; exporting again duplicates nothing;
* :func:`load_runs` and :func:`load_curves` (also ``skiplab.load_runs``, ...): the store as
  pandas DataFrames.

Each needs its library, an optional extra (``pip install 'skiplab[tensorboard]'``,
``skiplab[mlflow]``, ``skiplab[pandas]``); without it the call raises
:class:`MissingExtra`, one line naming the extra. What each export writes, name by name:
:mod:`skiplab.export.fields`.
"""

from __future__ import annotations

from .extras import MissingExtra, need
from .frames import load_curves, load_runs
from .mlflow import export_mlflow
from .tensorboard import export_tensorboard

__all__ = ["MissingExtra", "need", "export_tensorboard", "export_mlflow", "load_runs", "load_curves"]
