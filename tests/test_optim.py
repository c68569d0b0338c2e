"""The optimisers (skiplab.run.optim): which implementation each name gets, the flat parameter
view the training loop steps (FlatParameters), and benchmarks/loop_optimizer.py's quick
form (its output, not its speed)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import skiplab.run.loop
from skiplab import ModelSpec
from skiplab.model import build_model
from skiplab.objective import loss_and_logits
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.loop import train_model
from skiplab.run.optim import FlatParameters, make_optimizer
from skiplab.skips import STRATEGIES


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g)) for shape in ((5, 3), (3,), (7,), (2, 2, 2))]


def _on(p: torch.Tensor, flat: torch.Tensor) -> bool:
    """Does ``p`` live in ``flat``'s storage?"""
    return p.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_each_optimizer_is_fused_on_the_cpu_unless_asked_otherwise(name):
    assert make_optimizer(name, _params(), 1e-3).defaults["fused"] is True  # torch 2.4+ has CPU kernels for all three
    foreach = make_optimizer(name, _params(), 1e-3, implementation="foreach").defaults
    per_tensor = make_optimizer(name, _params(), 1e-3, implementation="per-tensor").defaults
    assert (foreach["foreach"], foreach["fused"]) == (True, None)
    assert (per_tensor["foreach"], per_tensor["fused"]) == (False, None)
    with pytest.raises(ValueError, match="^implementation: 'fast'"):
        make_optimizer(name, _params(), 1e-3, implementation="fast")


def test_a_device_without_fused_kernels_gets_the_multi_tensor_one(monkeypatch):
    real = torch.optim.Adam

    def no_fused(*args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(*args, **kwargs)
    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    assert make_optimizer("adam", _params(), 1e-3).defaults["foreach"] is True


@pytest.mark.parametrize("name, kwargs", [("adam", {}), ("adamw", {"weight_decay": 0.1}),
                                          ("sgd", {"weight_decay": 1e-3})])
def test_stepping_the_flat_tensor_steps_each_parameter(name, kwargs):
    """Five steps over the flat view against the same optimiser over the parameters
    themselves, each step's gradients made by a backward (autograd adds them into the
    views in place): the same values (the update is element-wise; the kernels' vector and
    scalar paths may round an element's last bit differently, hence 1e-6, about 8 float32
    ulps, not equality); each parameter still its own object, in the flat tensor."""
    a, b = _params(), _params()
    flat = FlatParameters(b)
    (f,) = flat.tensors
    assert f.numel() == sum(p.numel() for p in a)
    assert all(_on(p, f) and _on(p.grad, f.grad) for p in b)
    opt_a, opt_b = make_optimizer(name, a, 1e-2, **kwargs), make_optimizer(name, flat.tensors, 1e-2, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        weights = [torch.randn(p.shape, generator=g) for p in a]
        opt_a.zero_grad(set_to_none=True)
        flat.zero_grad()
        assert torch.count_nonzero(f.grad) == 0
        for params in (a, b):
            sum((p * w).sum() + (p ** 2).sum() for p, w in zip(params, weights)).backward()
        flat.check()
        torch.testing.assert_close(f.grad, torch.cat([p.grad.reshape(-1) for p in a]), rtol=0, atol=0)
        opt_a.step()
        opt_b.step()
    moved = [(p - q).abs().max().item() for p, q in zip(a, _params())]
    assert min(moved) > 1e-3  # they trained
    for p, q in zip(a, b):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-6, atol=1e-6)
    kept = [q.detach().clone() for q in b]
    flat.release()
    assert not any(_on(q, f) for q in b) and all(q.grad is None and torch.equal(q.detach(), k) for q, k in zip(b, kept))
    opt_b.step()  # the released parameters are the flat tensor's no more
    assert all(torch.equal(q.detach(), k) for q, k in zip(b, kept))


def test_a_gradient_that_left_the_flat_tensor_is_caught():
    params = _params()
    flat = FlatParameters(params)
    flat.check()
    params[2].grad = None  # what an optimiser's zero_grad(set_to_none=True) does to each parameter
    with pytest.raises(RuntimeError, match="no longer a view into the flat gradient"):
        flat.check()


def test_ties_hold_and_what_cannot_be_flattened_stays_as_it_is():
    shared = torch.nn.Linear(3, 3)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)  # one Linear twice: its parameters once
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    strided = torch.nn.Parameter(torch.randn(4, 3).t())  # not contiguous
    flat = FlatParameters([*model.parameters(), frozen, strided])
    assert flat.rest == [frozen, strided] and len(flat.tensors) == 3
    assert model[0].weight is model[2].weight and _on(model[0].weight, flat.tensors[0])
    assert not _on(strided, flat.tensors[0])
    model(torch.randn(2, 3)).sum().backward()
    flat.check()
    assert torch.count_nonzero(flat.tensors[0].grad) > 0
    strided.grad = torch.ones_like(strided)
    flat.zero_grad()
    assert strided.grad is None and torch.count_nonzero(flat.tensors[0].grad) == 0


@pytest.mark.parametrize("family", ["mlp", "cnn1d", "cnn2d", "transformer"])
def test_every_parameter_of_every_model_gets_a_gradient(family):
    """What FlatParameters relies on to step the flat tensor as the parameters would be
    stepped: no skiplab model leaves a parameter without a gradient (one would be stepped
    with a zero gradient, and decayed, where torch skips it)."""
    shape = {"mlp": (1, 8), "cnn1d": (1, 8), "cnn2d": (1, 4, 4), "transformer": (1, 8)}[family]
    for skip in STRATEGIES:
        for aux in (0, 1):
            try:
                spec = ModelSpec(model=family, depth=3, width=8, input_shape=shape, classes=4, skip=skip,
                                 aux_every=aux, **({"heads": 2} if family == "transformer" else {}))
            except ValueError:  # a strategy the family does not take
                continue
            model = build_model(spec, seed=0).train()
            loss, _ = loss_and_logits(model, torch.randn(5, *shape), torch.randint(0, 4, (5,)))
            loss.backward()
            assert [n for n, p in model.named_parameters() if p.grad is None] == [], (skip, aux)


def test_the_loop_trains_the_same_over_the_flat_tensor_and_gives_its_modules_back(tiny, monkeypatch):
    """The loop engine with the flat view (the default) against fused Adam over each
    parameter: the same training within rounding; the trained module's parameters have
    storage of their own again."""
    run = RunSpec(ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 8), classes=4, norm="batch"),
                  TrainConfig(epochs=2, batch_size=32, evals=2, lr=1e-2, grad_clip=1.0), "tiny", seed=0)
    model, r = train_model(run, tiny)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(storages) == len(list(model.parameters()))
    monkeypatch.setattr(skiplab.run.loop, "_FLAT_PARAMETERS", False)
    ref_model, ref = train_model(run, tiny)
    assert r.test_loss == pytest.approx(ref.test_loss, rel=1e-5)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_loop_optimizer_benchmark_quick_form_prints_its_table():
    script = Path(__file__).parent.parent / "benchmarks" / "loop_optimizer.py"
    out = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("cpu: ") and "torch thread(s); torch " in lines[0]
    assert lines[1].startswith("model: the study's MLP (add, width 64, norm batch), depth 2, ")
    rate = r"[\d.]+ steps/s"
    ways = ("fused+flat", "fused", "foreach", "per-tensor")
    assert re.fullmatch(r"repeat 1: " + ", ".join(rf"{re.escape(w)} {rate}" for w in ways)
                        + r"; test loss " + ", ".join(rf"{re.escape(w)} [\d.]+" for w in ways), lines[2]), lines[2]
    assert re.fullmatch(r"medians: " + ", ".join(rf"{re.escape(w)} {rate}" for w in ways), lines[3]), lines[3]
    for line, way in zip(lines[4:6], ("fused", "foreach")):
        assert re.fullmatch(rf"ratio {way} / per-tensor: [\d.]+x of medians, [\d.]+x per repeat", line), line
    assert re.fullmatch(r"ratio fused\+flat / per-tensor \(the loop now / before\): [\d.]+x of medians, "
                        r"[\d.]+x per repeat \(target 1\.4x: (met|NOT met)\)", lines[6]), lines[6]
    assert len(lines) == 7
