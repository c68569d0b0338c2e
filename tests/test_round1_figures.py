"""The stream redesign (issue 12) changed no number: every parameter count, FLOP figure,
saved-byte figure, initial weight, output and trained result of the nine round-1
strategies equals what round 1 computed for the same spec and seed. The reference figures
were recorded by ``tests/data/record_round1_figures.py`` at commit 192ae2f, before the
change (486 model configurations over 3 families x 3 norms x depths 0, 1, 3, with and
without bias, torch and kaiming init, aux heads; 9 short training runs)."""

import json
from pathlib import Path

import pytest
import torch

from skiplab.cost import analytic_cost
from skiplab.datasets import Dataset
from skiplab.model import build_model
from skiplab.spec import ModelSpec
from skiplab.train import RunSpec, TrainConfig, train_run

REFERENCE = json.loads((Path(__file__).parent / "data" / "round1_figures.json").read_text())
BLOCK_KEYS = ("block", "in_width", "features", "out_width", "params", "flops", "merge_flops", "activation_bytes",
              "concat_bytes")


def _id(case):
    s = case["spec"]
    return f"{s['model']}-{s['skip']}-{s['norm']}-d{s['depth']}-{'bias' if s['bias'] else 'nobias'}"


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=_id)
def test_costs_and_init_unchanged(case):
    spec = ModelSpec.from_dict(case["spec"])  # round-1 dicts carry dense's growth as a field
    c = analytic_cost(spec, batch=5)
    assert c["params"] == case["params"]
    assert {k: c["flops"][k] for k in ("matmul", "merge", "aux_matmul")} == case["flops"]
    assert (c["activation_bytes"], c["concat_bytes"]) == (case["activation_bytes"], case["concat_bytes"])
    assert [{k: b[k] for k in BLOCK_KEYS} for b in c["per_block"]] == case["per_block"]
    x = torch.randn(5, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    model = build_model(spec, seed=3).train()
    params = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
    out = model(x).detach().double()
    assert float(params.sum()) == case["param_sum"] and float(params.pow(2).sum()) == case["param_sq"]
    assert float(out.sum()) == pytest.approx(case["out_sum"], rel=1e-6, abs=1e-6)
    assert float(out.abs().sum()) == pytest.approx(case["out_abs"], rel=1e-6)


def test_training_unchanged():
    # Recorded with torch's default of 2 intra-op threads on this 2-core machine; the
    # thread count changes the order of float reductions, so use the same here.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _train_all()
    finally:
        torch.set_num_threads(threads)


def _train_all():
    g = torch.Generator().manual_seed(7)
    xtr = torch.randn(96, 12, generator=g)
    xte = torch.randn(48, 12, generator=g)
    data = Dataset("tiny", xtr, xtr[:, :4].argmax(1), xte, xte[:, :4].argmax(1), 4)
    for want in REFERENCE["runs"]:
        spec = ModelSpec.from_dict(want["spec"])
        r = train_run(RunSpec(spec, TrainConfig(epochs=2, batch_size=32, evals=1), "tiny", seed=1), data)
        assert r.test_accuracy == pytest.approx(want["test_accuracy"], abs=1.5 / 48), spec.skip
        assert r.train_loss == pytest.approx(want["train_loss"], rel=1e-4), spec.skip
        assert r.test_loss == pytest.approx(want["test_loss"], rel=1e-4), spec.skip
