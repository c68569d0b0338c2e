"""Datasets: MNIST-1D is generated offline with the package's defaults, has the documented
shapes, and its on-disk cache survives a round trip and repairs itself when corrupt.

Every test points ``SKIPLAB_CACHE`` at its own temporary folder, so none touches the
user's cache; the arrays are generated once per module and copied where needed.
"""

import random
import shutil

import numpy as np
import pytest
import torch

import skiplab.datasets.mnist1d as data_mod
from skiplab.datasets import Dataset, load_dataset, load_mnist1d, resolve_cache_dir


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A folder holding a valid cache file, and the dataset it gave."""
    folder = tmp_path_factory.mktemp("cache")
    ds = load_mnist1d(cache_dir=folder)
    (path,) = folder.glob("mnist1d-*.npz")
    return path, ds


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path))
    return tmp_path


def _no_generation(monkeypatch):
    def fail(args):
        raise AssertionError("generated although a valid cache file was there")
    monkeypatch.setattr(data_mod, "_generate_mnist1d", fail)


@pytest.fixture
def generations(cached, monkeypatch):
    """Replace the (1-2 s) generation by the arrays of the valid cache file; count calls."""
    path, _ = cached
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    calls = []

    def generate(args):
        calls.append(args)
        return arrays
    monkeypatch.setattr(data_mod, "_generate_mnist1d", generate)
    return calls


def test_mnist1d_shapes_and_dtypes(cached):
    _, ds = cached
    assert isinstance(ds, Dataset) and ds.name == "mnist1d" and ds.classes == 10
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.y_test.shape == (1000,) and ds.input_shape == (1, 40)
    assert set(ds.y_train.tolist()) == set(range(10))
    # make_dataset centres the whole set and scales it to unit standard deviation.
    x = torch.cat([ds.x_train, ds.x_test])
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


def test_generation_matches_the_package_and_leaves_global_rngs_alone(cached):
    from mnist1d.data import get_dataset_args, make_dataset

    _, ds = cached
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    arrays = data_mod._generate_mnist1d(data_mod._mnist1d_args())
    assert (random.random(), np.random.rand()) == before  # make_dataset reseeds; we restore
    reference = make_dataset(get_dataset_args())  # the package's own call, default args
    assert np.array_equal(arrays["x_train"], reference["x"]) and np.array_equal(arrays["y_test"], reference["y_test"])
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(reference["x"]).float())


def test_cache_round_trip(cache, cached, monkeypatch):
    path, ds = cached
    shutil.copy(path, cache / path.name)
    _no_generation(monkeypatch)
    again = load_mnist1d()  # from $SKIPLAB_CACHE
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)


def test_cache_is_written_atomically_where_asked(cache, generations):
    ds = load_mnist1d()
    assert len(generations) == 1
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("mnist1d-") and files[0].endswith(".npz"), files  # no temp left
    assert ds.x_train.shape == (4000, 1, 40)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong keys"])
def test_corrupt_cache_is_regenerated(cache, cached, generations, damage):
    path, ds = cached
    target = cache / path.name
    good = path.read_bytes()
    if damage == "garbage":
        target.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        target.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        np.savez(target, x=np.zeros(3))
    again = load_mnist1d()
    assert len(generations) == 1
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_train, ds.y_train)
    with np.load(target) as repaired:  # repaired on disk, not just in memory
        assert torch.equal(torch.from_numpy(repaired["x_train"]).float(), ds.x_train[:, 0])


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch, generations):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("SKIPLAB_CACHE", str(blocker / "cache"))  # a folder under a file: mkdir fails
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        ds = load_mnist1d()
    assert ds.x_test.shape == (1000, 1, 40)


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path))
    assert resolve_cache_dir() == tmp_path
    assert resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("SKIPLAB_CACHE")
    assert resolve_cache_dir().parts[-2:] == (".cache", "skiplab")


def test_load_dataset_by_name(cache, cached):
    path, _ = cached
    shutil.copy(path, cache / path.name)
    assert load_dataset("mnist1d").name == "mnist1d"
    with pytest.raises(ValueError, match="dataset: unknown dataset 'mnist2d'; known: mnist1d"):
        load_dataset("mnist2d")
