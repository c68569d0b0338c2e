"""Training runs: determinism, divergence, validation."""

import dataclasses

import pytest
import torch

from skiplab import ModelSpec
from skiplab.datasets import Dataset
from skiplab.spec import SpecError
from skiplab.train import RunSpec, TrainConfig, train_run


@pytest.fixture(scope="module")
def tiny():
    """A separable toy problem: the class is the sign pattern of two features."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 8, generator=g)
    y = ((x[:, 0, 0] > 0).long() + 2 * (x[:, 0, 1] > 0).long())
    return Dataset("tiny", x[:200], y[:200], x[200:], y[200:], classes=4)


def _spec(**train):
    return RunSpec(ModelSpec(model="mlp", depth=2, width=16, input_shape=(1, 8), classes=4),
                   TrainConfig(**{"epochs": 25, "batch_size": 32, "evals": 2, "lr": 1e-2, **train}),
                   dataset="tiny", seed=3)


def test_learns_and_records_curves(tiny):
    r = train_run(_spec(), tiny)
    assert r.status == "complete" and r.steps == 25 * 7
    assert r.test_accuracy > 0.8  # chance is 0.25
    assert {(split, name) for _, split, name, _ in r.curves} == {
        ("train", "loss"), ("train", "accuracy"), ("test", "loss"), ("test", "accuracy")}


def test_same_seed_same_result(tiny):
    a, b = train_run(_spec(), tiny), train_run(_spec(), tiny)
    assert (a.test_accuracy, a.test_loss, a.curves) == (b.test_accuracy, b.test_loss, b.curves)
    c = train_run(dataclasses.replace(_spec(), seed=4), tiny)
    assert c.test_loss != a.test_loss


def test_divergence_is_a_status_not_a_crash(tiny):
    r = train_run(_spec(lr=1e6, optimizer="sgd"), tiny)
    assert r.status == "diverged" and "loss became" in r.message and r.test_accuracy is None


def test_spec_hash_ignores_seed_and_device():
    a = _spec()
    assert dataclasses.replace(a, seed=9).spec_hash == a.spec_hash
    assert dataclasses.replace(a, train=dataclasses.replace(a.train, device="auto")).spec_hash == a.spec_hash
    assert dataclasses.replace(a, train=dataclasses.replace(a.train, lr=0.1)).spec_hash != a.spec_hash
    assert RunSpec.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("field, value", [("optimizer", "lion"), ("lr", 0), ("lr", float("inf")),
                                           ("epochs", 0), ("batch_size", -1), ("schedule", "step"),
                                           ("device", "tpu"), ("weight_decay", -1.0)])
def test_bad_train_config(field, value):
    with pytest.raises(SpecError, match=f"^{field}:"):
        TrainConfig(**{field: value})


def test_shape_mismatch_is_clear(tiny):
    spec = dataclasses.replace(_spec(), model=ModelSpec(model="cnn1d", input_shape=(2, 8), classes=4))
    with pytest.raises(ValueError, match="^input_shape:"):
        train_run(spec, tiny)


def test_cli_train_stores_a_relative_dataset_path_as_absolute(tmp_path, monkeypatch, capsys):
    import numpy as np

    from skiplab.cli import main
    from skiplab.store import Store
    (tmp_path / "sub").mkdir()
    g = np.random.default_rng(0)
    x = g.normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "sub" / "my.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "sub/my.npz", "--skip", "add", "--depth", "1", "--width", "4",
                 "--seeds", "1", "--epochs", "1", "--workers", "1", "--out", "out", "--classes", "2"]) == 0
    capsys.readouterr()
    with Store(tmp_path / "out") as store:
        (run,) = store.runs()
    assert run["status"] == "complete" and run["spec"]["dataset"] == str(tmp_path / "sub" / "my.npz")
