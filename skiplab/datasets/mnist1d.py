"""MNIST-1D, the embedded default (Greydanus, arXiv 2011.14439): 4,000 train / 1,000 test
sequences of length 40, 10 classes, small enough to train on a laptop CPU yet hard enough
that an MLP (68%) and a CNN (94%) differ. It is *generated* by the ``mnist1d`` package's
``make_dataset`` from one args dict with a seed, never downloaded, and the arrays are
cached on disk so the ~1 s generation happens once."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import random
import warnings

import numpy as np
import torch

from .base import Dataset, read_cache, resolve_cache_dir, write_cache


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
    arrays = read_cache(path)
    if arrays is None:
        arrays = _generate_mnist1d(args)
        try:
            write_cache(path, arrays)
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
