"""Readers that turn data the user already has into a :class:`~skiplab.datasets.Dataset`.

Formats, one reader each, and :func:`load_path` to pick the reader from a path:

==========================  =====================================================  ==============
source                      what it must hold                                       x shape
==========================  =====================================================  ==============
scikit-learn's digits       nothing: bundled with scikit-learn (optional extra)     (N, 1, 8, 8)
``.npz`` file               ``x``, ``y`` and optionally ``x_test``, ``y_test``      see below
``.csv`` file               a header row, one label column, numeric features        (N, 1, F)
CIFAR-10 folder             torchvision's ``cifar-10-batches-py`` pickles           (N, 3, 32, 32)
MNIST folder                torchvision's ``MNIST/raw`` IDX files (gzipped or not)  (N, 1, 28, 28)
==========================  =====================================================  ==============

Nothing here downloads. Every error is a one-line ``ValueError`` starting ``dataset:``.

Labels are remapped to ``0..C-1`` in sorted order of the distinct values found in train and
test together, so ``{1, 2, 3}`` become ``{0, 1, 2}`` and ``{0, 5}`` become ``{0, 1}``;
``classes`` is that number C. When a source has no test set, one is split off: each class
gives ``round(test_fraction * its count)`` samples, chosen by a NumPy generator seeded with
``seed``, so a split is a function of (data, ``test_fraction``, ``seed``) alone; both parts
keep the file's sample order.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import math
import os
import pathlib
import pickle
import zipfile

import numpy as np
import torch

from .base import Dataset
from ..errors import UserError

PathLike = str | os.PathLike


# -- Shared checks: split, labels, the Dataset itself ----------------------------------
def _fail(message: str) -> UserError:
    """The one error type of this module: one line, prefixed ``dataset:``."""
    return UserError("dataset: " + " ".join(message.splitlines()))


def _split(y: np.ndarray, test_fraction: float, seed: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices of ``y`` (codes 0..C-1), each sorted ascending."""
    if not 0.0 < test_fraction < 1.0:
        raise _fail(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        test.append(rng.permutation(members)[: int(round(test_fraction * len(members)))])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test)] = True
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise _fail(f"{source}: {len(y)} samples with test_fraction={test_fraction} leave an empty "
                    f"{'train' if len(train_idx) == 0 else 'test'} set; give more samples or "
                    f"another test_fraction")
    return train_idx, test_idx


def _is_whole(a: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))


def _encode_labels(source: str, *parts: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Integer labels (any int dtype, or whole floats) -> int64 codes 0..C-1 in sorted
    order of the distinct values over all ``parts``; also returns C."""
    for y in parts:
        if y.ndim != 1:
            raise _fail(f"{source}: labels must be 1-D of shape (N,), got shape {y.shape} "
                        f"(one-hot labels? store y.argmax(1))")
        if y.dtype.kind not in "biuf":
            raise _fail(f"{source}: labels must be integers, got dtype {y.dtype} "
                        f"(save class indices; a .csv label column may hold class names)")
        if y.dtype.kind == "f" and not _is_whole(y):
            bad = y[~(np.isfinite(y) & (y == np.round(y)))][0]
            raise _fail(f"{source}: labels must be whole numbers (class indices), got {bad}")
    values = np.unique(np.concatenate(parts))
    return [np.searchsorted(values, y).astype(np.int64) for y in parts], len(values)


def _features(source: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise _fail(f"{source}: x must be numeric, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise _fail(f"{source}: x holds NaN or infinite values")
    return x


def _make_dataset(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, classes: int) -> Dataset:
    """Check the invariants of :class:`Dataset` and convert to tensors."""
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise _fail(f"{name}: {part} x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise _fail(f"{name}: the {part} set is empty")
        if y.min() < 0 or y.max() >= classes:
            raise _fail(f"{name}: {part} labels must lie in [0, {classes}), "
                        f"got {int(y.min())}..{int(y.max())}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise _fail(f"{name}: train samples have shape {x_train.shape[1:]} "
                    f"but test samples {x_test.shape[1:]}")
    if classes < 2:
        raise _fail(f"{name}: {classes} distinct label(s); classification needs at least 2 classes")

    def tensor(a: np.ndarray, dtype: type) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))

    return Dataset(name, tensor(x_train, np.float32), tensor(y_train, np.int64),
                   tensor(x_test, np.float32), tensor(y_test, np.int64), classes=classes)


def _from_arrays(name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray | None,
                 y_test: np.ndarray | None, test_fraction: float, seed: int) -> Dataset:
    """Encode labels over train and test, then split when no test set was given."""
    if len(x) != len(y):
        raise _fail(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise _fail(f"{name} holds no samples")
    if x_test is None:
        (codes,), classes = _encode_labels(name, y)
        if classes < 2:  # checked before splitting: one class gives a confusing split error
            raise _fail(f"{name}: all labels are equal; classification needs at least 2 classes")
        tr, te = _split(codes, test_fraction, seed, name)
        return _make_dataset(name, x[tr], codes[tr], x[te], codes[te], classes)
    (codes, codes_test), classes = _encode_labels(name, y, y_test)
    return _make_dataset(name, x, codes, x_test, codes_test, classes)


# -- scikit-learn's digits --------------------------------------------------------------
def load_digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), offline.

    x: (N, 1, 8, 8) float32 in [0, 1] (pixel counts 0..16 divided by 16); the test set is
    a stratified ``test_fraction`` split seeded by ``seed``. Needs the optional extra
    ``skiplab[digits]`` (scikit-learn).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _fail("'digits' needs scikit-learn: pip install 'skiplab[digits]'") from None
    bunch = load_digits()
    x = bunch.data.reshape(-1, 1, 8, 8) / 16.0  # (N, 1, 8, 8)
    return _from_arrays("digits", _features("digits", x), bunch.target, None, None, test_fraction, seed)


# -- .npz -----------------------------------------------------------------------------
_NPZ_KEYS = ("x", "y", "x_test", "y_test")


def load_npz(path: PathLike, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A NumPy ``.npz`` with keys ``x``, ``y`` and optionally ``x_test``, ``y_test``.

    x keeps its per-sample shape, except that feature vectors, shape (N, F), become
    (N, 1, F): one channel, so the CNN-1D takes them as they are. Images must carry their
    channel axis, (N, C, H, W); an (N, H, W) array is read as H channels of length W.
    Labels are integers (any int dtype, or floats that are whole numbers), remapped to
    0..C-1 (see the module docstring); without ``x_test``/``y_test`` a stratified
    ``test_fraction`` split seeded by ``seed`` is made. Read with ``allow_pickle=False``.
    """
    path = pathlib.Path(path)
    source = path.name
    try:  # open the file ourselves: np.load(path) leaks its handle when the zip is bad
        with open(path, "rb") as fh:
            if not zipfile.is_zipfile(fh):  # else np.load would take it for a .npy or a pickle
                raise zipfile.BadZipFile("not a zip archive")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise _fail(f"{source} is not a readable .npz file ({e})") from None
    except ValueError as e:  # object arrays, which would need pickle
        raise _fail(f"{source}: {e}") from None
    keys = sorted(arrays)
    if (any(k not in _NPZ_KEYS for k in keys) or "x" not in keys or "y" not in keys
            or ("x_test" in keys) != ("y_test" in keys)):
        raise _fail(f"{source} has keys {keys}; expected x, y and optionally x_test with y_test")

    def features(x: np.ndarray, key: str) -> np.ndarray:
        if x.ndim < 2:
            raise _fail(f"{source}: {key} must have shape (N, ...) with at least 2 axes, got {x.shape}")
        x = _features(f"{source} {key}", x)
        return x[:, None, :] if x.ndim == 2 else x  # (N, F) -> (N, 1, F)

    x_test = arrays.get("x_test")
    return _from_arrays(source, features(arrays["x"], "x"), arrays["y"],
                        None if x_test is None else features(x_test, "x_test"),
                        arrays.get("y_test"), test_fraction, seed)


# -- .csv -----------------------------------------------------------------------------
def _csv_labels(source: str, cells: list[str], lines: list[int]) -> np.ndarray:
    """Label cells -> integer codes. All numbers: they must be whole, and are sorted
    numerically (so 10 follows 9); otherwise they are class names, sorted as strings."""
    for cell, line in zip(cells, lines):
        if cell == "":
            raise _fail(f"{source} line {line}: empty label")
    try:
        numbers = np.array([float(c) for c in cells])
    except ValueError:
        return np.unique(cells, return_inverse=True)[1].astype(np.int64)
    if not _is_whole(numbers):
        bad = next(i for i, v in enumerate(numbers) if not (math.isfinite(v) and v == round(v)))
        raise _fail(f"{source} line {lines[bad]}: label {cells[bad]!r} is a number but not a "
                    f"whole one; labels are class indices or class names")
    return numbers.astype(np.int64)


def _bad_cell(cell: str) -> bool:
    try:
        return not math.isfinite(float(cell))
    except ValueError:
        return True


def load_csv(path: PathLike, label: str = "label", test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A comma-separated file with a header row: the column named ``label`` holds the
    labels, every other column is a numeric feature; x: (N, 1, F).

    Labels may be class indices or class names. Numeric labels must be whole and are
    ordered numerically; if any label is not a number, all are class names ordered as
    strings (``"setosa" < "versicolor" < "virginica"``). Either way the i-th value in that
    order becomes class i. The test set is a stratified ``test_fraction`` split seeded by
    ``seed``. Blank lines are skipped; a UTF-8 byte-order mark is ignored.
    """
    path = pathlib.Path(path)
    source = path.name
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if row:
                    rows.append(row)
                    lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _fail(f"{source} is not a readable UTF-8 .csv file ({e})") from None
    if not header:
        raise _fail(f"{source} is empty; a header row naming the columns is required")
    columns = [c.strip() for c in header]
    if label not in columns:
        raise _fail(f"{source} has no label column {label!r}; columns: {columns} "
                    f"(pick one with --label-column)")
    if columns.count(label) > 1:
        raise _fail(f"{source} has {columns.count(label)} columns named {label!r}")
    if len(columns) < 2:
        raise _fail(f"{source} has only the label column {label!r}; no features")
    if not rows:
        raise _fail(f"{source} has a header but no data rows")
    for row, line in zip(rows, lines):
        if len(row) != len(columns):
            raise _fail(f"{source} line {line}: {len(row)} cells, but the header has {len(columns)}")

    at = columns.index(label)
    features = [c for i, c in enumerate(columns) if i != at]
    cells = [row[:at] + row[at + 1:] for row in rows]
    try:  # fast path; on failure find the first offending cell to name it
        x = np.array(cells, dtype=np.float64)
        ok = bool(np.all(np.isfinite(x)))
    except ValueError:
        ok = False
    if not ok:
        r, c = next((r, c) for r, row in enumerate(cells) for c, cell in enumerate(row) if _bad_cell(cell))
        raise _fail(f"{source} row {r + 1} (line {lines[r]}), column {features[c]!r}: "
                    f"{cells[r][c]!r} is not a finite number")
    y = _csv_labels(source, [row[at].strip() for row in rows], lines)
    return _from_arrays(source, x[:, None, :].astype(np.float32), y, None, None, test_fraction, seed)


# -- CIFAR-10 (torchvision's cifar-10-batches-py) -------------------------------------
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"

# The only callables a CIFAR batch needs: numpy's array constructors (under their NumPy 1
# and 2 module paths) and codecs.encode, which Python 3's protocol-2 pickles use for bytes.
_ARRAY = np.zeros(1, dtype=np.uint8)
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY.__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY.__reduce__()[0],
    ("numpy.core.numeric", "_frombuffer"): _ARRAY.__reduce_ex__(5)[0],
    ("numpy._core.numeric", "_frombuffer"): _ARRAY.__reduce_ex__(5)[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_PICKLE_ALLOWED`: a pickle that names any
    other callable (which is how a pickle runs code) is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _cifar_dir(root: pathlib.Path) -> pathlib.Path | None:
    """The batch folder: ``root/cifar-10-batches-py``, or ``root`` if it is one."""
    for folder in (root / _CIFAR_DIR, root):
        if folder.is_dir() and (folder.name == _CIFAR_DIR or (folder / _CIFAR_TEST).is_file()):
            return folder
    return None


def _read_cifar_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (N, 3072) uint8 pixels, (N,) labels."""
    if not path.is_file():
        raise _fail(f"CIFAR-10 file {path} is missing")
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # unpickling can fail in many ways; all mean "not a batch file"
        raise _fail(f"{path} is not a CIFAR-10 batch file ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise _fail(f"{path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels'")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _fail(f"{path}: b'data' must be (N, 3072) uint8, got {data.shape} {data.dtype}")
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        raise _fail(f"{path}: b'labels' must be {len(data)} integers, got shape {labels.shape} "
                    f"dtype {labels.dtype}")
    return data, labels


def load_cifar10_folder(root: PathLike) -> Dataset:
    """CIFAR-10 as torchvision stores it: ``root/cifar-10-batches-py/{data_batch_1..5,
    test_batch}`` (``root`` may also be that folder). 50,000 train / 10,000 test,
    x: (N, 3, 32, 32) float32 in [0, 1], 10 classes.

    The batch files are pickles, and unpickling can run arbitrary code: only point this at
    files you trust. As a second guard the reader resolves nothing but NumPy's array
    constructors and refuses any pickle that names another callable.
    """
    root = pathlib.Path(root)
    folder = _cifar_dir(root) or root / _CIFAR_DIR

    def read(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        batches = [_read_cifar_batch(folder / n) for n in names]
        pixels = np.concatenate([b[0] for b in batches])  # (N, 3072): 1024 R, 1024 G, 1024 B
        x = pixels.reshape(-1, 3, 32, 32).astype(np.float32)
        x /= 255.0
        return x, np.concatenate([b[1] for b in batches]).astype(np.int64)

    x_train, y_train = read(_CIFAR_TRAIN)
    x_test, y_test = read((_CIFAR_TEST,))
    return _make_dataset(root.name, x_train, y_train, x_test, y_test, classes=10)


# -- MNIST (torchvision's MNIST/raw IDX files) ----------------------------------------
_MNIST_FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic: 0x0000 then type code 0x08 (unsigned byte), then the number of dimensions.
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}


def _idx_file(folder: pathlib.Path, name: str) -> pathlib.Path | None:
    """``name`` in ``folder``, else ``name.gz``; torchvision keeps both after extracting."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _mnist_dir(root: pathlib.Path) -> pathlib.Path | None:
    """The folder holding all four IDX files: ``root/MNIST/raw``, or ``root`` itself."""
    for folder in (root / "MNIST" / "raw", root):
        if all(_idx_file(folder, n) for pair in _MNIST_FILES.values() for n in pair):
            return folder
    return None


def _read_idx(path: pathlib.Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format): a big-endian uint32 magic
    ``0x0000 08 <ndim>``, ``ndim`` big-endian uint32 sizes, then the bytes, row-major."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise _fail(f"{path} could not be read ({e})") from None
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise _fail(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    magic, *dims = np.frombuffer(raw, dtype=">u4", count=1 + ndim).tolist()
    if magic != _IDX_MAGIC[ndim]:
        raise _fail(f"{path} has magic number {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x} "
                    f"(an IDX file of {ndim}-D unsigned bytes)")
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise _fail(f"{path} is {'truncated' if len(raw) < expected else 'too long'}: "
                    f"{len(raw)} bytes, expected {expected} for sizes {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist_folder(root: PathLike) -> Dataset:
    """MNIST as torchvision stores it: ``root/MNIST/raw/`` (``root`` may also be that raw
    folder) with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or ``.gz``.
    60,000 train / 10,000 test, x: (N, 1, 28, 28) float32 in [0, 1], 10 classes.

    Any folder of these four files with 10 classes works, e.g. ``FashionMNIST/raw``.
    """
    root = pathlib.Path(root)
    folder = _mnist_dir(root)
    if folder is None:  # name the files missing where the user most likely meant them to be
        folder = root / "MNIST" / "raw" if (root / "MNIST").is_dir() else root
    arrays = []
    for images_name, labels_name in _MNIST_FILES.values():
        paths = []
        for name in (images_name, labels_name):
            path = _idx_file(folder, name)
            if path is None:
                raise _fail(f"MNIST file {folder / name} (or {name}.gz) is missing")
            paths.append(path)
        images, labels = _read_idx(paths[0], 3), _read_idx(paths[1], 1)
        if len(images) != len(labels):
            raise _fail(f"{paths[0].name} has {len(images)} images but {paths[1].name} "
                        f"{len(labels)} labels")
        x = images[:, None].astype(np.float32)  # (N, 1, 28, 28)
        x /= 255.0
        arrays += [x, labels.astype(np.int64)]
    name = root.parent.name if root.name == "raw" else root.name  # .../MNIST/raw -> "MNIST"
    return _make_dataset(name, *arrays, classes=10)


# -- Dispatch -------------------------------------------------------------------------
_UNDERSTOOD = ("a .npz file (x, y[, x_test, y_test]), a .csv file with a header row, "
               f"a CIFAR-10 folder ({_CIFAR_DIR}), an MNIST folder (MNIST/raw with IDX files) "
               "or a .txt file (UTF-8 text, for a language model)")


def load_path(path: PathLike, label: str = "label", *, test_fraction: float = 0.2,
              seed: int = 0) -> Dataset:
    """Read ``path`` with the reader its form calls for: ``.npz`` -> :func:`load_npz`,
    ``.csv`` -> :func:`load_csv` (``label`` names the label column), a folder holding or
    being ``cifar-10-batches-py`` -> :func:`load_cifar10_folder`, a folder holding
    ``MNIST/raw`` or being a folder of the four IDX files -> :func:`load_mnist_folder`.
    ``test_fraction`` and ``seed`` apply to files without a test set. ``~`` is expanded.
    """
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise _fail(f"{path} does not exist")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".npz":
            return load_npz(p, test_fraction, seed)
        if suffix == ".csv":
            return load_csv(p, label, test_fraction, seed)
    elif p.is_dir():
        if _cifar_dir(p) is not None:
            return load_cifar10_folder(p)
        if _mnist_dir(p) is not None:
            return load_mnist_folder(p)
    raise _fail(f"cannot read {path}; understood: {_UNDERSTOOD}")
