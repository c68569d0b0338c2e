"""Readers of the user's own data: each test writes tiny files in the real on-disk format
(npz, csv, CIFAR-10 pickles, MNIST IDX) to its own temporary folder and checks shapes,
dtypes, value ranges, label remapping and the pixel layout against values it wrote by hand.
Nothing is downloaded. Every error must be a one-line ValueError starting ``dataset:``.
"""

import gzip
import pickle
import struct
import sys

import numpy as np
import pytest
import torch

from skiplab.datasets import Dataset
from skiplab.datasets import (load_cifar10_folder, load_csv, load_digits_dataset, load_mnist_folder,
                             load_npz, load_path)


def raises(match: str):
    """pytest.raises for this module's errors: ValueError, prefixed, one line."""
    return pytest.raises(ValueError, match=r"^dataset: [^\n]*" + match)


def check_dataset(ds: Dataset, input_shape: tuple, classes: int) -> None:
    assert ds.input_shape == input_shape and ds.classes == classes
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert len(x) == len(y) > 0
        assert int(y.min()) >= 0 and int(y.max()) < classes


# -- digits ---------------------------------------------------------------------------
def test_digits_shapes_range_and_deterministic_split():
    pytest.importorskip("sklearn")
    ds = load_digits_dataset()
    check_dataset(ds, (1, 8, 8), 10)
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert 0.18 < len(ds.y_test) / 1797 < 0.22
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert torch.equal(load_digits_dataset().y_test, ds.y_test)  # same seed, same split
    assert not torch.equal(load_digits_dataset(seed=1).x_test, ds.x_test)


def test_digits_without_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` fail
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ValueError) as e:
        load_digits_dataset()
    assert str(e.value) == "dataset: 'digits' needs scikit-learn: pip install 'skiplab[digits]'"


# -- npz ------------------------------------------------------------------------------
def test_npz_without_test_split_is_stratified_and_remaps_labels(tmp_path):
    x = np.arange(40 * 5, dtype=np.float64).reshape(40, 5)  # row i holds 5i..5i+4
    y = np.repeat(np.array([3, 7, 11, 20], dtype=np.int16), 10)
    np.savez(tmp_path / "my.npz", x=x, y=y)
    ds = load_path(tmp_path / "my.npz")
    check_dataset(ds, (1, 5), 4)  # (N, F) -> (N, 1, F) for the CNN-1D
    assert ds.name == "my.npz"
    assert torch.equal(torch.bincount(ds.y_test), torch.tensor([2, 2, 2, 2]))  # 20% of each class
    # every sample survives the split once, with its label remapped in sorted order
    rows = torch.cat([ds.x_train, ds.x_test])[:, 0, 0].long() // 5
    labels = torch.cat([ds.y_train, ds.y_test])
    assert sorted(rows.tolist()) == list(range(40))
    code = {3: 0, 7: 1, 11: 2, 20: 3}
    assert labels.tolist() == [code[int(y[r])] for r in rows]
    assert torch.equal(load_npz(tmp_path / "my.npz", seed=0).x_test, ds.x_test)
    assert not torch.equal(load_npz(tmp_path / "my.npz", seed=1).x_test, ds.x_test)


def test_npz_with_test_split_keeps_shape_and_counts_classes_over_both(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=rng.random((6, 3, 4, 4)), y=np.array([0.0, 1, 2, 0, 1, 2]),
             x_test=rng.random((2, 3, 4, 4)), y_test=np.array([5.0, 0]))
    ds = load_npz(tmp_path / "img.npz")
    check_dataset(ds, (3, 4, 4), 4)  # labels {0, 1, 2, 5}
    assert ds.y_test.tolist() == [3, 0] and len(ds.y_train) == 6


@pytest.mark.parametrize("arrays, match", [
    (dict(x=np.zeros((4, 2)), y=np.array(["a", "b", "a", "b"])), "labels must be integers"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1.5, 0, 1])), "whole numbers"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, 0])), "x has 4 samples but y has 3"),
    (dict(x=np.zeros((4, 2)), y=np.ones(4, dtype=int)), "at least 2 classes"),
    (dict(x=np.zeros((0, 2)), y=np.zeros(0, dtype=int)), "no samples"),
    (dict(x=np.array([["a", "b"]] * 4), y=np.array([0, 1, 0, 1])), "x must be numeric"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), x_test=np.zeros((2, 3)),
          y_test=np.array([0, 1])), "shape"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), X_test=np.zeros((2, 2))), "has keys"),
])
def test_npz_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with raises(match):
        load_npz(tmp_path / "bad.npz")


def test_npz_that_is_not_a_zip(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with raises("a.npz is not a readable .npz file"):
        load_path(tmp_path / "a.npz")


# -- csv ------------------------------------------------------------------------------
def test_csv_class_names_are_sorted_and_features_read(tmp_path):
    rows = ["sepal,species,petal"] + [f"{i}.5,{name},{-i}" for i, name in
                                      enumerate(["virginica", "setosa", "versicolor"] * 5)]
    (tmp_path / "iris.csv").write_text("\n".join(rows) + "\n\n")  # a trailing blank line is skipped
    ds = load_path(tmp_path / "iris.csv", label="species")
    check_dataset(ds, (1, 2), 3)
    x = torch.cat([ds.x_train, ds.x_test])[:, 0]  # (N, 2)
    y = torch.cat([ds.y_train, ds.y_test])
    order = x[:, 0].argsort()
    assert torch.equal(x[order], torch.tensor([[i + 0.5, -i] for i in range(15)]))
    assert y[order].tolist() == [2, 0, 1] * 5  # setosa 0, versicolor 1, virginica 2


def test_csv_numeric_labels_sort_numerically(tmp_path):
    (tmp_path / "n.csv").write_text("f,label\n" + "".join(f"{i},{[9, 10][i % 2]}\n" for i in range(10)))
    ds = load_csv(tmp_path / "n.csv", test_fraction=0.4)
    y = torch.cat([ds.y_train, ds.y_test])
    x = torch.cat([ds.x_train, ds.x_test])[:, 0, 0].long()
    assert torch.equal(y, x % 2)  # 9 -> 0, 10 -> 1 (as strings "10" < "9")


def test_csv_bad_cell_names_row_and_column(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,x\n3,oops,y\n")
    with raises(r"row 2 \(line 3\), column 'b': 'oops'"):
        load_csv(tmp_path / "d.csv")


def test_csv_missing_label_column_lists_columns(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,kind\n1,2,x\n3,4,y\n")
    with raises(r"no label column 'label'; columns: \['a', 'b', 'kind'\]"):
        load_path(tmp_path / "d.csv")


@pytest.mark.parametrize("text, match", [
    ("", "header row"),
    ("a,label\n", "no data rows"),
    ("a,label\n1,x\n2\n", "line 3: 1 cells"),
    ("a,label\n1,0.5\n2,1\n", "line 2: label '0.5'"),
    ("a,label\n1,x\nnan,y\n", "'nan' is not a finite number"),
])
def test_csv_errors(tmp_path, text, match):
    (tmp_path / "d.csv").write_text(text)
    with raises(match):
        load_csv(tmp_path / "d.csv")


# -- CIFAR-10 -------------------------------------------------------------------------
def write_cifar(folder, per_batch=6):
    """Six tiny batches in the real format; image k of a batch is pure red, green or blue
    (k % 3) with label k % 10 (train) or (k + 1) % 10 (test)."""
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = np.zeros((per_batch, 3, 1024), dtype=np.uint8)  # channel-major: R, G, B planes
        for k in range(per_batch):
            data[k, k % 3] = 255
        shift = int(name == "test_batch")
        batch = {b"batch_label": name.encode(), b"data": data.reshape(per_batch, 3072),
                 b"labels": [(k + shift) % 10 for k in range(per_batch)],
                 b"filenames": [f"{k}.png".encode() for k in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # the protocol of the published files


@pytest.mark.parametrize("as_root", [True, False])
def test_cifar10_folder_layout(tmp_path, as_root):
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    path = tmp_path / "cifar10" if as_root else tmp_path / "cifar10" / "cifar-10-batches-py"
    ds = load_path(path)
    check_dataset(ds, (3, 32, 32), 10)
    assert len(ds.y_train) == 30 and len(ds.y_test) == 6
    assert ds.y_train[:6].tolist() == [0, 1, 2, 3, 4, 5] and ds.y_test.tolist() == [1, 2, 3, 4, 5, 6]
    for k in range(3):  # image k is pure channel k: 1.0 there, 0.0 elsewhere
        expected = torch.zeros(3, 32, 32)
        expected[k] = 1.0
        assert torch.equal(ds.x_train[k], expected)


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump(print, f)  # names a callable (builtins.print) outside the allowed set
    with raises("test_batch is not a CIFAR-10 batch file .*refusing to load builtins.print"):
        load_cifar10_folder(tmp_path)


def test_cifar10_missing_batch(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with raises("data_batch_3 is missing"):
        load_cifar10_folder(tmp_path)


# -- MNIST ----------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's IDX format: magic 0x0000 08 <ndim>, big-endian uint32 sizes, then the bytes."""
    return struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape) + array.tobytes()


def write_mnist(folder, gz: bool, n_train=5, n_test=3):
    folder.mkdir(parents=True)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[np.arange(n), np.arange(n), 0] = 255  # image k: one white pixel at (k, 0)
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(np.arange(n, dtype=np.uint8) * 2 % 10)
    for name, raw in files.items():
        if gz:
            with gzip.open(folder / (name + ".gz"), "wb") as f:
                f.write(raw)
        else:
            (folder / name).write_bytes(raw)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("as_root", [True, False])
def test_mnist_folder(tmp_path, gz, as_root):
    write_mnist(tmp_path / "data" / "MNIST" / "raw", gz)
    ds = load_path(tmp_path / "data" if as_root else tmp_path / "data" / "MNIST" / "raw")
    check_dataset(ds, (1, 28, 28), 10)
    assert ds.name == ("data" if as_root else "MNIST")
    assert ds.y_train.tolist() == [0, 2, 4, 6, 8] and ds.y_test.tolist() == [0, 2, 4]
    assert ds.x_train.sum().item() == 5.0 and ds.x_train[3, 0, 3, 0].item() == 1.0


@pytest.mark.parametrize("damage, match", [
    (lambda raw: raw[:-1], r"t10k-images-idx3-ubyte is truncated: 2367 bytes, expected 2368"),
    (lambda raw: raw[:6], "t10k-images-idx3-ubyte is truncated: 6 bytes"),
    (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "t10k-images-idx3-ubyte has magic number 0x00000801"),
])
def test_mnist_damaged_idx(tmp_path, damage, match):
    write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with raises(match):
        load_mnist_folder(tmp_path)


def test_mnist_truncated_gzip(tmp_path):
    write_mnist(tmp_path / "raw", gz=True)
    path = tmp_path / "raw" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with raises("train-labels-idx1-ubyte.gz could not be read"):
        load_mnist_folder(tmp_path / "raw")


# -- dispatch -------------------------------------------------------------------------
def test_missing_path(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(ValueError) as e:
        load_path(path)
    assert str(e.value) == f"dataset: {path} does not exist"


@pytest.mark.parametrize("name", ["data.json", "empty_folder"])
def test_unknown_format_lists_understood_ones(tmp_path, name):
    path = tmp_path / name
    path.mkdir() if name == "empty_folder" else path.write_text("{}")
    with raises(r"cannot read .*understood: a \.npz file .*\.csv.*CIFAR-10.*MNIST"):
        load_path(path)
