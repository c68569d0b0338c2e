"""What every dataset source shares: the ``Dataset`` of train/test tensors, where
generated data is cached, and writing a cache file atomically."""

from __future__ import annotations

import os
import pathlib
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

# Errors that mean "this cache file is unusable" (truncated zip, wrong pickle-free
# content, missing key, bad shape); any of them regenerates the file.
_CORRUPT = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors of one classification task.

    ``x_*`` are float32 of shape (N, *input_shape); ``y_*`` are int64 labels in
    ``[0, classes)``.
    """

    name: str
    x_train: torch.Tensor  # (N_train, *input_shape) float32
    y_train: torch.Tensor  # (N_train,) int64
    x_test: torch.Tensor  # (N_test, *input_shape) float32
    y_test: torch.Tensor  # (N_test,) int64
    classes: int = 10

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (1, 40) for MNIST-1D (one channel, length 40)."""
        return tuple(self.x_train.shape[1:])

    def model_fields(self) -> dict:
        """The model fields this data fixes (a caller fills those the user left out)."""
        return {"input_shape": self.input_shape, "classes": self.classes}

    def for_model(self, model) -> "Dataset":
        """What ``model`` trains on: these tensors as they are (a text cuts windows)."""
        return self

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train):,}, test={len(self.y_test):,}, "
                f"input_shape={self.input_shape}, classes={self.classes})")


def resolve_cache_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Where datasets are cached: ``path``, else ``$SKIPLAB_CACHE``, else ``~/.cache/skiplab``."""
    if path is not None:
        return pathlib.Path(path)
    env = os.environ.get("SKIPLAB_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "skiplab"


def read_cache(path: pathlib.Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unusable."""
    if not path.is_file():
        return None
    try:  # open the file ourselves: np.load(path) leaks its handle when the zip is bad
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except _CORRUPT:
        return None
    ok = (arrays["x_train"].ndim == 2 and arrays["x_test"].ndim == 2
          and len(arrays["x_train"]) == len(arrays["y_train"])
          and len(arrays["x_test"]) == len(arrays["y_test"]))
    return arrays if ok else None


def write_cache(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temporary file in the same folder, then rename: a crash mid-write
    leaves the old file (or none), never a truncated one (``os.replace`` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


