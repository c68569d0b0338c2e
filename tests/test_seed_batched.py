"""The batched engine's fast paths (skiplab/run/seed_batched.py): linear and batch norm layers
run as one kernel over all seeds under the engine's vmap. Each seed's output and batch
norm statistics must equal its own model's, and the fast path must be the one taken."""

import copy

import pytest
import torch
from torch import nn
from torch.func import stack_module_state, vmap

from skiplab import ModelSpec, build_model
from skiplab.run.seed_batched import Binder, install

SEEDS = 3


def _stacked(spec: ModelSpec):
    models = [build_model(spec, seed=s).train() for s in range(SEEDS)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    return models, params, buffers, base


def _forward(base, params, buffers, x, source):
    bind = Binder(base, source)

    def one(p, b, xs):
        bind(p, b)
        return base(xs)
    return vmap(one)(params, buffers, x)


@pytest.mark.parametrize("spec", [ModelSpec(model="mlp", input_shape=(12,), depth=2, width=8, classes=3),
                                  ModelSpec(model="cnn1d", input_shape=(1, 16), depth=2, width=4, classes=3),
                                  ModelSpec(model="cnn2d", input_shape=(1, 8, 8), depth=1, width=4, classes=3),
                                  ModelSpec(model="transformer", input_shape=(6, 4), depth=1, width=8, classes=3)],
                         ids=lambda s: s.model)
def test_each_seed_gets_what_its_own_model_computes(spec, monkeypatch):
    models, params, buffers, base = _stacked(spec)
    changed = install(base)
    expected = sum(type(m) in (nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d) for m in models[0].modules())
    assert changed == expected > 0
    x = torch.randn(SEEDS, 5, *spec.input_shape)
    if any(isinstance(m, nn.BatchNorm1d) for m in models[0].modules()):  # the fast path, not vmap's rule:
        def refuse(self, x):  # the plain forward of the installed classes is never reached in training
            raise AssertionError("batch norm fell back to vmap's rule")
        monkeypatch.setattr(nn.BatchNorm1d, "forward", refuse)
        monkeypatch.setattr(nn.BatchNorm2d, "forward", refuse)
    out = _forward(base, params, buffers, x, models[0])
    monkeypatch.undo()
    for s, model in enumerate(models):
        assert torch.allclose(out[s], model(x[s]), rtol=1e-5, atol=1e-6)
        for name, b in model.named_buffers():  # running statistics moved once, as the model's own did
            assert torch.allclose(buffers[name][s], b, rtol=1e-5, atol=1e-7), name


def test_outside_vmap_an_installed_module_is_the_module():
    spec = ModelSpec(model="mlp", input_shape=(12,), depth=2, width=8, classes=3)
    model, twin = build_model(spec, seed=0), build_model(spec, seed=0)
    install(twin)
    x = torch.randn(5, 12)
    assert torch.equal(model(x), twin(x))
    model.eval(), twin.eval()
    assert torch.equal(model(x), twin(x))


def test_a_subclass_keeps_its_own_forward():
    class Mine(nn.Linear):
        pass
    net = nn.Sequential(Mine(3, 3), nn.Linear(3, 3))
    assert install(net) == 1 and type(net[0]) is Mine


def test_binder_gives_tied_parameters_one_tensor():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))
    models = [Tied() for _ in range(2)]
    params, buffers = stack_module_state(models)
    assert "b.weight" not in params  # stacked under the first name only
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(2, 5, 4)
    out = _forward(base, params, buffers, x, models[0])
    for s in range(2):
        assert torch.allclose(out[s], models[s](x[s]), atol=1e-6)


def test_over_seeds_runs_the_function_once_on_all_seeds():
    from skiplab.run.seed_batched import over_seeds
    seen = []

    def fn(a, b):
        seen.append((a.shape, b.shape))
        return a * b.sum(-1, keepdim=True)
    a, b = torch.randn(3, 4, 2, requires_grad=True), torch.randn(3, 4, 5)
    out = vmap(lambda x, y: over_seeds(fn, x, y))(a, b)
    assert seen == [((3, 4, 2), (3, 4, 5))]  # once, the seeds leading
    assert torch.allclose(out, fn(a, b))
    out.sum().backward()
    assert torch.allclose(a.grad, b.sum(-1, keepdim=True).expand(3, 4, 2))
    seen.clear()
    assert torch.equal(over_seeds(fn, a[0], b[0]), fn(a[0], b[0]))  # outside vmap: fn as it is


def test_the_neutral_marker_batches_through_the_engine_only_once_it_registers(monkeypatch):
    """Strategies call their Functions through skiplab.batching.over_leading_dims; importing
    the engine's fast paths registers over_seeds there; with nothing registered, the call is
    plain (vmap runs it per seed)."""
    from skiplab import batching
    from skiplab.run.seed_batched import over_seeds
    assert batching._batcher is over_seeds
    seen = []

    def fn(a):
        seen.append(a.shape)
        return a * 2
    x = torch.randn(3, 4)
    vmap(lambda t: batching.over_leading_dims(fn, t))(x)
    monkeypatch.setattr(batching, "_batcher", None)
    vmap(lambda t: batching.over_leading_dims(fn, t))(x)
    assert seen == [(3, 4), (4,)]  # the engine's: once, the seeds leading; plain: one seed's shape under vmap


@pytest.mark.parametrize("skip", ["dwa", "mhc"])
def test_stream_functions_take_one_node_for_all_seeds(skip, monkeypatch):
    """DWA's weighted sum and mHC's Sinkhorn-Knopp see the seeds as a leading dimension."""
    from skiplab.skips import dwa, mhc
    fn = dwa._WeightedSum if skip == "dwa" else mhc._SinkhornKnopp
    calls = []
    real = fn.apply
    monkeypatch.setattr(fn, "apply", lambda *a: calls.append(a[0].shape) or real(*a))
    spec = ModelSpec(model="mlp", input_shape=(12,), depth=2, width=8, classes=3, skip=skip)
    models, params, buffers, base = _stacked(spec)
    install(base)
    out = _forward(base, params, buffers, torch.randn(SEEDS, 5, 12), models[0])
    out.sum().backward()
    lifted = (SEEDS, 3) if skip == "dwa" else (SEEDS, 5, 4, 4)  # alpha (S, k); logits (S, B, n, n)
    assert calls and all(shape[0] == SEEDS and len(shape) == len(lifted) for shape in calls), calls


@pytest.mark.slow
def test_study_engines_benchmark_runs_both_studies_and_compares_them(tmp_path):
    """benchmarks/study_engines.py --quick: both quick studies stored whole, one comparison
    line per cell, and the closing count (what docs/engines.md quotes from the full run)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from skiplab.store import Store
    script = Path(__file__).parent.parent / "benchmarks" / "study_engines.py"
    out = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    loop, batched = (Store(tmp_path / e, create=False).runs() for e in ("loop", "batched"))
    assert len(loop) == len(batched) > 0
    assert {r["result"]["trained_by"].split(":")[0] for r in loop} == {"loop"}
    assert "batched" in {r["result"]["trained_by"] for r in batched}
    lines = out.stdout.splitlines()
    assert lines[0].startswith("wall time: loop ")
    cells = len({(r["spec"]["group"], r["spec"]["model"]["skip"], r["spec"]["model"]["depth"]) for r in loop})
    # skiplab.compare_stores' summary line: "N of M configurations differ (Welch's t-test, ..."
    assert re.match(rf"\d+ of {cells} configurations differ \(Welch's t-test, Holm-adjusted", lines[-1]), lines[-1]
