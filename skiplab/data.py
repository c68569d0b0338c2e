"""Datasets behind one interface: a frozen ``Dataset`` of train/test tensors.

The embedded default is MNIST-1D (Greydanus, arXiv 2011.14439): 4,000 train / 1,000
test sequences of length 40, 10 classes, small enough to train on a laptop CPU yet hard
enough that an MLP (68%) and a CNN (94%) differ. It is *generated* by the ``mnist1d``
package's ``make_dataset`` from one args dict with a seed, never downloaded, and the
arrays are cached on disk so the ~1 s generation happens once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pathlib
import random
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from typing import Callable

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

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train):,}, test={len(self.y_test):,}, "
                f"input_shape={self.input_shape}, classes={self.classes})")


def resolve_cache_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Where datasets are cached: ``path``, else ``$SKIPLAB_CACHE``, else ``~/.cache/skiplab``."""
    if path is not None:
        return pathlib.Path(path)
    env = os.environ.get("SKIPLAB_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "skiplab"


# -- MNIST-1D -----------------------------------------------------------------------------
def _mnist1d_args() -> dict:
    """The package's own default arguments (5,000 samples, 80% train, seed 42)."""
    from mnist1d.data import get_dataset_args

    return get_dataset_args(as_dict=True)


def _generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    """Run ``make_dataset``. It seeds Python's and NumPy's global RNGs (mnist1d's
    ``set_seed``); their states are restored so that loading data never changes a
    caller's random stream."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {"x_train": d["x"], "y_train": d["y"], "x_test": d["x_test"], "y_test": d["y_test"]}


def _read_cache(path: pathlib.Path) -> dict[str, np.ndarray] | None:
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


def _write_cache(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
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


def load_mnist1d(cache_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST-1D: 4,000 train / 1,000 test, x of shape (N, 1, 40), 10 classes.

    Generated with the package's default arguments (seed 42), so every machine gets the
    same arrays. Cached as ``mnist1d-<hash of arguments and package version>.npz`` under
    :func:`resolve_cache_dir`; a missing or corrupt cache file is regenerated.
    """
    args = _mnist1d_args()
    recipe = {k: v for k, v in args.items() if k != "url"} | {"mnist1d": _package_version("mnist1d")}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    path = resolve_cache_dir(cache_dir) / f"mnist1d-{key}.npz"
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate_mnist1d(args)
        try:
            _write_cache(path, arrays)
        except OSError as e:  # a read-only cache costs a regeneration next time, not a failure
            warnings.warn(f"could not write the dataset cache {path} ({e}); it is regenerated next time",
                          stacklevel=2)
    return Dataset("mnist1d", _features(arrays["x_train"]), _labels(arrays["y_train"]),
                   _features(arrays["x_test"]), _labels(arrays["y_test"]), classes=10)


def _features(a: np.ndarray) -> torch.Tensor:
    """(N, 40) float64 -> (N, 1, 40) float32: one channel, so the CNN-1D takes it as is."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1)


def _labels(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _load_digits() -> Dataset:
    from .formats import load_digits_dataset

    return load_digits_dataset()


# The one map from names to loaders; the CLI's --dataset looks names up here.
DATASETS: dict[str, Callable[[], Dataset]] = {"mnist1d": load_mnist1d, "digits": _load_digits}


def load_dataset(name: str, label: str = "label") -> Dataset:
    """The dataset called ``name`` (see DATASETS), or the file/folder at path ``name``
    (``.npz``, ``.csv`` with label column ``label``, CIFAR-10 or MNIST folders in
    torchvision's on-disk format: :func:`skiplab.formats.load_path`)."""
    if name in DATASETS:
        return DATASETS[name]()
    path = pathlib.Path(name).expanduser()
    if not path.exists() and not any(c in name for c in "/\\.~"):
        raise ValueError(f"dataset: unknown dataset {name!r}; known: {', '.join(DATASETS)}, or a path to "
                         f"a .npz, .csv, CIFAR-10 or MNIST folder")
    from .formats import load_path  # formats imports Dataset from here

    return load_path(path, label=label)
