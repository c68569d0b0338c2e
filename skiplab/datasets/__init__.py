"""Datasets behind one interface: a frozen ``Dataset`` of train/test tensors, one file per
source (the embedded MNIST-1D, scikit-learn's digits, the user's files and folders), and
the one registry the command line's ``--dataset`` looks names up in."""

from __future__ import annotations

import pathlib
from typing import Callable

from .base import Dataset, resolve_cache_dir
from .files import (load_cifar10_folder, load_csv, load_digits_dataset, load_mnist_folder, load_npz,
                    load_path)
from .mnist1d import load_mnist1d
from .text import TextDataset, display_name, is_text_ref, load_pydoc, load_text, load_text_ref, text_ref
from ..errors import UserError

# The one map from names to loaders; the CLI's --dataset looks names up here.
DATASETS: dict[str, Callable[[], Dataset | TextDataset]] = {"mnist1d": load_mnist1d, "digits": load_digits_dataset,
                                                            "pydoc": load_pydoc}


def dataset_ref(name: str) -> str:
    """What a run's spec names: a registry name as is, a path made absolute once (``~``
    expanded), so that worker processes and later resumes from another working
    directory open the same file. A text (``pydoc``, a ``.txt`` file) also carries the
    first 16 hex digits of its sha256, ``pydoc@37d06970fc926e60``: the text is part of a
    run's identity (:mod:`skiplab.datasets.text`)."""
    if is_text_ref(name):
        return text_ref(name)
    if name in DATASETS:
        return name
    return str(pathlib.Path(name).expanduser().resolve())


def load_dataset(name: str, label: str = "label") -> Dataset | TextDataset:
    """The dataset called ``name`` (see DATASETS), or the file/folder at path ``name``
    (``.npz``, ``.csv`` with label column ``label``, CIFAR-10 or MNIST folders in
    torchvision's on-disk format: :func:`skiplab.datasets.files.load_path`; a ``.txt``
    file: :func:`skiplab.datasets.text.load_text`). A text named with ``@hash`` must
    still have that hash."""
    if is_text_ref(name):
        return load_text_ref(name)
    if name in DATASETS:
        return DATASETS[name]()
    path = pathlib.Path(name).expanduser()
    if not path.exists() and not any(c in name for c in "/\\.~"):
        raise UserError(f"dataset: unknown dataset {name!r}; known: {', '.join(DATASETS)}, or a path to "
                         f"a .txt, .npz, .csv, CIFAR-10 or MNIST folder")
    return load_path(path, label=label)


__all__ = ["Dataset", "TextDataset", "display_name", "load_pydoc", "load_text", "DATASETS", "dataset_ref", "load_dataset", "load_mnist1d", "resolve_cache_dir", "load_npz", "load_csv",
           "load_cifar10_folder", "load_mnist_folder", "load_digits_dataset", "load_path"]
