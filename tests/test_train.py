"""Training runs: determinism, divergence, validation."""

import dataclasses

import pytest
import torch

from skiplab import ModelSpec
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.loop import train_run
from skiplab.spec import SpecError



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


# -- learning-rate warm-up --------------------------------------------------------------------
def test_runs_without_warmup_keep_their_identity():
    """Warm-up is left out of a run's identity when it is 0, so every run stored before it
    existed keeps its spec hash. The hashes below were printed by the code before warm-up
    was added (commit 1af4c26: ``RunSpec(...).spec_hash`` of these two specs)."""
    assert RunSpec(ModelSpec()).spec_hash == "b97e7b0b2b66ec3f"
    text = RunSpec(ModelSpec(model="transformer", vocab=103, classes=103, depth=2, width=64),
                   TrainConfig(epochs=1, batch_size=32, lr=1e-3), "pydoc@0123456789abcdef", seed=1, group="g")
    assert text.spec_hash == "1dfb5da8a268404e"
    assert "warmup" not in RunSpec(ModelSpec()).to_dict()["train"]
    warm = RunSpec(ModelSpec(), TrainConfig(warmup=10))
    assert warm.to_dict()["train"]["warmup"] == 10 and warm.spec_hash != RunSpec(ModelSpec()).spec_hash
    assert RunSpec.from_dict(warm.to_dict()) == warm and RunSpec.from_dict(RunSpec(ModelSpec()).to_dict()).train.warmup == 0


def _rates(cfg, total):
    from skiplab.run.loop import make_schedule
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched, rates = make_schedule(opt, cfg, total), []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_warmup_rises_linearly_then_follows_the_schedule():
    cos = _rates(TrainConfig(lr=1.0, warmup=4), 12)
    assert cos[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cos[4] == pytest.approx(1.0) and cos[4:] == sorted(cos[4:], reverse=True) and cos[-1] < 0.05
    assert _rates(TrainConfig(lr=1.0, warmup=3, schedule="constant"), 6) == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])
    # no warm-up: the scheduler runs used before warm-up existed (cosine from the first step)
    assert _rates(TrainConfig(lr=1.0), 8)[0] == 1.0 and _rates(TrainConfig(lr=1.0), 8)[1] < 1.0


def test_warmup_changes_training_and_is_checked(tiny):
    plain, warm = train_run(_spec(), tiny), train_run(_spec(warmup=20), tiny)
    assert warm.status == "complete" and warm.test_loss != plain.test_loss
    with pytest.raises(SpecError, match="^warmup: must be an integer >= 0"):
        TrainConfig(warmup=-1)
    with pytest.raises(SpecError, match=r"^warmup: 175 steps is not shorter than the run \(175 steps"):
        train_run(_spec(warmup=175), tiny)


def test_cli_warmup_flag_and_a_warmup_too_long_for_the_run(tmp_path, capsys):
    from skiplab.cli import main
    from skiplab.store import Store
    args = ["train", "--model", "mlp", "--dataset", "digits", "--skip", "add", "--depth", "1", "--width", "8",
            "--epochs", "1", "--seeds", "1", "--workers", "1", "--out", str(tmp_path)]
    assert main(args + ["--warmup", "1000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skiplab: error: warmup: 1000 steps is not shorter than the run") and err.count("\n") == 1
    assert main(args + ["--warmup", "3"]) == 0
    with Store(tmp_path) as s:
        assert [r["spec"]["train"]["warmup"] for r in s.runs()] == [3]


def test_stream_mixing_runs_store_their_gain_at_each_evaluation(tiny):
    r = train_run(dataclasses.replace(_spec(epochs=2, evals=2), model=ModelSpec(
        model="mlp", depth=3, width=16, skip="hyper", input_shape=(1, 8), classes=4)), tiny)
    gains = [(step, name, v) for step, split, name, v in r.curves if name.startswith("gain_")]
    assert [(step, name) for step, name, _ in gains] == [(7, "gain_forward"), (7, "gain_backward"),
                                                         (14, "gain_forward"), (14, "gain_backward")]
    assert gains[-2][2] == r.diagnostics["composite_gain_forward"] and gains[-1][2] == r.diagnostics["composite_gain_backward"]
    assert not any(name.startswith("gain_") for _, _, name, _ in train_run(_spec(epochs=1), tiny).curves)


@pytest.mark.parametrize("every", [3, 100])
def test_reading_the_loss_late_stores_the_step_it_diverged(tiny, monkeypatch, every):
    """The loop engine reads its loss back every few steps on an accelerator
    (skiplab.run.step.sync_interval; forced here on the CPU): a run whose loss turns NaN
    between two reads is stored as when read every step, at the step the NaN appeared."""
    import skiplab.run.loop
    x = tiny.x_train.clone()
    x[5] = float("nan")
    data = dataclasses.replace(tiny, x_train=x)
    model = ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 8), classes=4)
    runs = [RunSpec(model, TrainConfig(epochs=1, batch_size=32, evals=1, lr=1e-2), "tiny", seed=s) for s in range(5)]
    at_once = [train_run(r, data) for r in runs]
    assert {r.steps for r in at_once} >= {0, 1, 3} and {r.status for r in at_once} == {"diverged"}
    monkeypatch.setattr(skiplab.run.step, "_SYNC_EVERY", every)
    for run, r1 in zip(runs, at_once):
        calls = []
        r = train_run(run, data, on_step=lambda step, total, loss: calls.append(step))
        assert (r.status, r.steps, r.message, r.curves) == (r1.status, r1.steps, r1.message, r1.curves)
        assert r.message == f"loss became nan at step {r.steps + 1}"
        assert calls == [t for t in (3, 6) if every == 3 and t <= r.steps]  # progress only at reads
    clean = runs[0]
    monkeypatch.setattr(skiplab.run.step, "_SYNC_EVERY", None)
    a = train_run(clean, tiny)
    monkeypatch.setattr(skiplab.run.step, "_SYNC_EVERY", every)
    b = train_run(clean, tiny)
    assert (a.status, a.steps, a.curves, a.test_loss) == (b.status, b.steps, b.curves, b.test_loss)
