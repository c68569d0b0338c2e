"""The batched engine against the loop: the same seeds, the same numbers.

Method: each configuration trains S seeds with ``skiplab.run.batched.train_seeds`` (batched:
one vmapped computation) and each seed again alone with ``skiplab.run.loop.train_model`` (the
loop, the reference). A seed's final parameters (all of them, as one vector), its float
buffers (batch norm's running statistics) and its metrics and curves must agree within
1e-4 relative: |a - b| <= 1e-4 |b| (vectors: in L2 norm). The difference is floating-point
reassociation (a batched matmul sums in another order), about 1e-7 here. Tiny models and
a few steps, so that every strategy fits in seconds.

``SKIPLAB_TEST_DEVICE=cuda`` runs both engines on a GPU instead (TF32 off, so that the
GPU's fp32 is fp32): how a lent GPU checks the engine (``benchmarks/cuda_check.sh``); the
tests about the CPU's own choices are then skipped.
"""

import dataclasses
import math
import os

import pytest
import torch

from skiplab import ModelSpec
from skiplab.datasets import Dataset, load_dataset
from skiplab.families import get_family
from skiplab.fit import model_fields_from
from skiplab.run.batched import train_seeds, why_not_batched
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.loop import train_model
from skiplab.run.runner import group_key, run_all
from skiplab.skips import STRATEGIES
from skiplab.store import Store

RTOL = 1e-4
SEEDS = (0, 1, 2)
DEVICE = os.environ.get("SKIPLAB_TEST_DEVICE", "cpu")
cpu_only = pytest.mark.skipif(DEVICE != "cpu", reason="about the CPU: which families batch there")
if DEVICE == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False



def _runs(model: ModelSpec, seeds=SEEDS, **train) -> list[RunSpec]:
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 32, "evals": 2, "lr": 1e-2, "grad_clip": 1.0, "device": DEVICE,
                         **train})
    return [RunSpec(model, cfg, "tiny", seed=s) for s in seeds]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||; NaNs must sit at the same places (a diverged seed's batch norm
    statistics), and the rest is compared."""
    nan = b.isnan()
    if not torch.equal(a.isnan(), nan):
        return float("inf")
    a, b = a[~nan], b[~nan]
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def _close(a: float, b: float) -> bool:
    """Within RTOL of b (an absolute 1e-7 near 0); NaN only where the loop has NaN (a
    training set with a NaN sample scores NaN)."""
    return math.isnan(a) == math.isnan(b) and (math.isnan(b) or abs(a - b) <= RTOL * max(abs(b), 1e-3))


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in tensors]) if tensors else torch.zeros(1)


def assert_same_as_loop(runs: list[RunSpec], data: Dataset, engine: str = "batched") -> None:
    out = train_seeds(runs, data)
    for run, (model, result) in zip(runs, out):
        assert result.trained_by == engine, result.trained_by
        ref_model, ref = train_model(run, data)
        assert (result.status, result.steps, result.message) == (ref.status, ref.steps, ref.message)
        assert _rel(_flat(list(model.parameters())), _flat(list(ref_model.parameters()))) <= RTOL
        floats = lambda m: [b for b in m.buffers() if b.is_floating_point()]  # noqa: E731
        assert _rel(_flat(floats(model)), _flat(floats(ref_model))) <= RTOL
        for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "val_bpc", "train_bpc"):
            a, b = getattr(result, key), getattr(ref, key)
            assert (a is None) == (b is None) and (a is None or _close(a, b)), key
        assert [c[:3] for c in result.curves] == [c[:3] for c in ref.curves]
        for a, b in zip(result.curves, ref.curves):
            assert _close(a[3], b[3]), (a, b)
        assert result.diagnostics.keys() == ref.diagnostics.keys()
        for k, v in ref.diagnostics.items():
            assert _close(result.diagnostics[k], v), k


# Batch norm without a bias before it (torchvision's convention, `--no-bias`): a bias right
# before batch norm has a true gradient of 0, and Adam turns the rounding noise it gets into
# steps of size lr, differently in each engine (and in the loop itself with 1 or 2 threads):
# see test_bias_before_batch_norm_is_noise_in_either_engine.
@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_every_strategy_batched_equals_loop(tiny, skip, norm):
    model = ModelSpec(model="mlp", depth=3, width=8, input_shape=(1, 8), classes=4, skip=skip, norm=norm,
                      bias=norm == "none", aux_every=2)
    assert_same_as_loop(_runs(model), tiny)


# The transformer is compared under SGD rather than Adam: its attention key bias has a true
# gradient of 0 (softmax ignores a constant added to a row of scores; mHC's dynamic mixing
# weights get nearly none either), and Adam turns that rounding noise into lr-sized steps,
# so under Adam the loop disagrees with itself by 1e-4 to 1e-3 on them between 1 and 2
# threads. SGD keeps noise at noise size: the engines then agree to 2e-6.
@pytest.mark.parametrize("family, skip, train", [("cnn1d", "add", {}), ("cnn1d", "dense", {}), ("cnn1d", "hyper", {}),
                                                 ("transformer", "add", {"optimizer": "sgd", "lr": 0.05}),
                                                 ("transformer", "mhc", {"optimizer": "sgd", "lr": 0.05})])
def test_other_families_batched_equal_loop(tiny, family, skip, train, monkeypatch):
    monkeypatch.setattr(get_family(family), "batches_on_cpu", True)  # the CNNs loop on a CPU unless made to batch
    model = ModelSpec(model=family, depth=2, width=8, input_shape=(1, 8), classes=4, skip=skip,
                      **({"norm": "batch", "bias": False} if family == "cnn1d" else {"heads": 2}))
    assert_same_as_loop(_runs(model, seeds=(0, 1), **train), tiny)


def test_a_language_model_batched_equals_loop():
    """The character model on pydoc's text: (B, T) targets, bits per character."""
    data = load_dataset("pydoc")
    model = ModelSpec(model="transformer", depth=1, width=16, heads=2, **model_fields_from(data, {}))
    cfg = TrainConfig(epochs=0.002, batch_size=16, evals=2, optimizer="sgd", lr=0.05, device=DEVICE)
    assert_same_as_loop([RunSpec(model, cfg, "pydoc", seed=s) for s in (0, 1)], data)


@pytest.mark.parametrize("train", [{"optimizer": "adamw", "weight_decay": 0.1},
                                   {"optimizer": "sgd", "weight_decay": 1e-3, "schedule": "constant", "warmup": 3},
                                   {"optimizer": "adam", "grad_clip": 0.05, "epochs": 2}])
def test_optimisers_decay_and_clipping_are_per_seed(tiny, train):
    model = ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 8), classes=4, norm="batch", bias=False)
    assert_same_as_loop(_runs(model, **train), tiny)


def test_one_seed_diverges_the_others_finish(tiny):
    """A NaN sample in the training set: a seed whose first half-epoch draws it diverges at
    that step (its loss is NaN), the others never see it. Each engine stores the same."""
    x = tiny.x_train.clone()
    x[5] = float("nan")
    data = dataclasses.replace(tiny, x_train=x)
    model = ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 8), classes=4, norm="batch", bias=False)
    runs = _runs(model, seeds=tuple(range(6)), epochs=0.5, evals=4)  # 4 steps: 128 of 200 samples
    seen = [(torch.randperm(200, generator=torch.Generator().manual_seed(s)) == 5).nonzero().item() < 128
            for s in range(6)]
    assert any(seen) and not all(seen)
    assert_same_as_loop(runs, data)
    statuses = [r.status for _, r in train_seeds(runs, data)]
    assert statuses == ["diverged" if s else "complete" for s in seen]


def test_bias_before_batch_norm_is_noise_in_either_engine(tiny):
    """With a bias before batch norm the engines agree on every weight; the biases feeding
    batch norm (true gradient 0) and the running means that carry them do not, and the loop
    disagrees with itself by as much when only its thread count changes."""
    model = ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 8), classes=4, norm="batch", bias=True)
    runs = _runs(model, seeds=(0, 1))
    for run, (m, _) in zip(runs, train_seeds(runs, tiny)):
        ref = dict(train_model(run, tiny)[0].named_parameters())
        for name, p in m.named_parameters():
            if not (name.endswith("layer.bias") and "head" not in name):
                assert _rel(p.detach(), ref[name].detach()) <= RTOL, name


def test_seeds_that_would_not_fit_in_memory_train_a_part_at_a_time(tiny, monkeypatch):
    """More seeds than fit in the memory a batch may use train in parts, as even as can be,
    each part batched and each seed as the loop trains it; a seed left over is the loop's,
    and with room for fewer than two the loop trains them all. The memory free is made
    small; what a seed takes is the cost model's count."""
    import skiplab.run.batched as E
    model = ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 8), classes=4, norm="batch", bias=False)
    runs = _runs(model, seeds=tuple(range(5)))
    per_seed = E.seed_bytes(runs[0])
    assert per_seed > 0

    def room_for(seeds: float) -> None:
        monkeypatch.setattr(E, "free_bytes", lambda device: int(seeds * per_seed / E.MEMORY_SHARE))
    room_for(3.5)
    assert E.seeds_at_once(runs) == 3
    assert_same_as_loop(runs, tiny, engine="batched, 3 of 5 seeds at a time (memory)")  # parts of 3 and 2
    room_for(2.5)
    out = train_seeds(runs[:3], tiny)  # parts of 2 and 1
    assert [r.trained_by for _, r in out] == ["batched, 2 of 3 seeds at a time (memory)"] * 2 + [
        "loop: one seed left over (memory)"]
    room_for(1.5)
    assert [r.trained_by for _, r in train_seeds(runs[:2], tiny)] == [
        "loop: two seeds would not fit in the memory a batch may use (skiplab.run.batched.MEMORY_SHARE)"] * 2
    room_for(1e6)
    assert E.seeds_at_once(runs) == 5


@cpu_only
def test_where_batching_does_not_apply_the_loop_trains_and_says_why(tiny):
    model = ModelSpec(model="mlp", depth=1, width=8, input_shape=(1, 8), classes=4)
    assert why_not_batched(_runs(model)) is None
    assert why_not_batched(_runs(model, seeds=(0,))) == "one seed: nothing to batch"
    assert why_not_batched(_runs(model, engine="loop")) == "engine loop was asked for"
    assert why_not_batched(_runs(model, seeds=(0, 0))) == "a seed appears twice"
    other = dataclasses.replace(_runs(model, seeds=(1,))[0], model=model.replace(width=16))
    assert why_not_batched([*_runs(model, seeds=(0,)), other]) == "the runs differ in more than their seed"
    cnn = ModelSpec(model="cnn1d", depth=1, width=8, input_shape=(1, 8), classes=4)
    assert why_not_batched(_runs(cnn)) == "cnn1d trains no faster batched than alone on a CPU (benchmarks/engine_throughput.py)"
    assert [r.trained_by for _, r in train_seeds(_runs(model, seeds=(0,)), tiny)] == ["loop: one seed: nothing to batch"]
    assert [r.trained_by for _, r in train_seeds(_runs(model, engine="loop"), tiny)] == ["loop"] * 3
    # memory-efficient concatenation: its shared-storage autograd Functions are not vmappable
    dense = model.replace(skip="dense", options={"memory": "efficient"})
    runs = _runs(dense, seeds=(0, 1))
    out = train_seeds(runs, tiny)
    assert all(r.trained_by.startswith("loop: vmap cannot run this model (RuntimeError: ") for _, r in out)
    assert [r.test_loss for _, r in out] == [train_model(run, tiny)[1].test_loss for run in runs]


@cpu_only
def test_runs_that_would_loop_anyway_are_tasks_of_their_own():
    """The runner batches a configuration's seeds into one task only where they will train
    batched; else each seed is its own task, and seeds run in parallel as before."""
    mlp = ModelSpec(model="mlp", depth=1, width=8, input_shape=(1, 8), classes=4)
    cnn = ModelSpec(model="cnn1d", depth=1, width=8, input_shape=(1, 8), classes=4)
    assert len({group_key(r) for r in _runs(mlp)}) == 1
    assert len({group_key(r) for r in _runs(mlp, engine="loop")}) == 3
    assert len({group_key(r) for r in _runs(cnn)}) == 3


def test_experiments_models_are_trained_batched_and_returned_per_seed(tmp_path):
    """Context.train_models (equivalence, lesion): a configuration's seeds train as one
    batch, each stored, and each seed's model comes back as the loop would train it."""
    from skiplab.datasets import load_mnist1d
    from skiplab.experiments.context import Context
    model = ModelSpec(model="mlp", depth=2, width=8, input_shape=(40,), classes=10, norm="batch", bias=False)
    runs = [RunSpec(model, TrainConfig(epochs=0.1, evals=1), "mnist1d", seed=s) for s in (0, 1)]
    with Store(tmp_path) as store:
        out = Context(None, False, store, workers=1, name="t").train_models(runs)
        assert sorted(r["seed"] for r in store.runs()) == [0, 1]
    assert [o["result"]["trained_by"] for o, _ in out] == ["batched"] * 2
    for run, (_, m) in zip(runs, out):
        ref = train_model(run, load_mnist1d())[0]
        assert _rel(_flat(list(m.parameters())), _flat(list(ref.parameters()))) <= RTOL


def test_engine_is_not_part_of_a_runs_identity():
    model = ModelSpec(model="mlp", depth=1, width=8, input_shape=(1, 8), classes=4)
    batched, loop = _runs(model)[0], _runs(model, engine="loop")[0]
    assert batched.spec_hash == loop.spec_hash
    assert "engine" not in batched.to_dict()["train"] and loop.to_dict()["train"]["engine"] == "loop"
    assert RunSpec.from_dict(loop.to_dict()) == loop and RunSpec.from_dict(batched.to_dict()) == batched


def test_runner_batches_a_configurations_seeds_and_never_reruns_a_finished_one(tmp_path):
    """run_all in this process: seed 1 stored first (alone: the loop), then seeds 0..2: the
    two left train as one batched task, each stored under its own key, seed 1 reused."""
    model = ModelSpec(model="mlp", depth=1, width=8, input_shape=(40,), classes=10)
    cfg = TrainConfig(epochs=0.05, evals=1)
    runs = [RunSpec(model, cfg, "mnist1d", seed=s) for s in SEEDS]
    with Store(tmp_path) as store:
        assert run_all(runs[1:2], store) == {"skipped": 0, "complete": 1}
        first = store.runs()[0]
        assert run_all(runs, store) == {"skipped": 1, "complete": 2}
        rows = {r["seed"]: r for r in store.runs()}
    assert sorted(rows) == list(SEEDS) and rows[1] == first
    assert rows[1]["result"]["trained_by"] == "loop: one seed: nothing to batch"
    assert rows[0]["result"]["trained_by"] == rows[2]["result"]["trained_by"] == "batched"
    assert len({r["spec_hash"] for r in rows.values()}) == 1


@pytest.mark.parametrize("every", [3, 100])
def test_reading_the_loss_late_stores_the_same_divergence(tiny, monkeypatch, every):
    """On an accelerator the losses are read back every few steps, not every step
    (skiplab.run.step.sync_interval; forced here on the CPU). A seed that diverges between two
    reads is found at the next one, and stored as when found at once: the step at which its
    loss first became NaN, that loss in the message. The seeds that finish are untouched by
    it: their parameters, buffers, curves and metrics are bitwise those of reading every
    step."""
    import skiplab.run.loop
    x = tiny.x_train.clone()
    x[5] = float("nan")
    data = dataclasses.replace(tiny, x_train=x)
    model = ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 8), classes=4, norm="batch", bias=False)
    runs = _runs(model, seeds=tuple(range(10)), epochs=0.5, evals=1)  # 4 steps, one read at the last
    at_once = train_seeds(runs, data)
    monkeypatch.setattr(skiplab.run.step, "_SYNC_EVERY", every)
    calls = []
    late = train_seeds(runs, data, on_step=lambda step, total, loss, seeds: calls.append((step, seeds)))
    steps = [r.steps if r.status == "diverged" else 4 for _, r in at_once]  # a diverged run's steps: before the NaN
    assert 0 in steps and 1 in steps and 4 in steps  # NaN at steps 1 and 2 (found at the read after step 3), some finish
    reads = [3, 4] if every == 3 else [4]  # progress only where the losses were read, with the seeds still going
    assert calls == [(t, sum(k >= t for k in steps)) for t in reads]
    for (m, r), (m1, r1) in zip(late, at_once):
        assert (r.status, r.steps, r.message, r.curves) == (r1.status, r1.steps, r1.message, r1.curves)
        assert r.trained_by == "batched"
        if r.status == "complete":
            assert (r.test_loss, r.train_accuracy, r.tokens_per_second is None) == \
                (r1.test_loss, r1.train_accuracy, r1.tokens_per_second is None)
            assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m1.state_dict().values()))
        else:
            assert r.message == f"loss became nan at step {r.steps + 1}"
