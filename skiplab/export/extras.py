"""Optional dependencies: imported when an export is asked for, named when missing."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def need(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra`, one line naming the extra that
    provides it: ``the MLflow export needs mlflow, which is not installed: pip install
    'skiplab[mlflow]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{what} needs {module.split('.')[0]}, which is not installed: "
                           f"pip install 'skiplab[{extra}]'") from None
