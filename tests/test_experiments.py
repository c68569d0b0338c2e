"""Named experiments: the equivalence construction is exact; quick forms run end to end."""

import pytest
import torch

from skiplab import ModelSpec, build_model
from skiplab.experiments import EXPERIMENTS, run_experiment
from skiplab.experiments.equivalence import dense_from_add, max_abs_diff, reverse_gap


@pytest.mark.parametrize("model, shape", [("mlp", (1, 40)), ("cnn1d", (2, 12))])
@pytest.mark.parametrize("depth, width", [(1, 3), (4, 8), (9, 16)])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_dense_emulates_random_add_networks_exactly(model, shape, depth, width, norm):
    add = build_model(ModelSpec(model=model, depth=depth, width=width, skip="add", norm=norm, input_shape=shape,
                                aux_every=2), seed=depth)
    if norm == "batch":  # non-trivial running statistics, as after training
        add.train()
        with torch.no_grad():
            for _ in range(3):
                add(torch.randn(64, *shape))
    dense = dense_from_add(add)
    x = torch.randn(50, *shape, generator=torch.Generator().manual_seed(1))
    assert max_abs_diff(add, dense, x) < 1e-5
    # Concatenation pays for it: the dense copy has more parameters from block 2 on.
    if depth > 1:
        assert sum(p.numel() for p in dense.parameters()) > sum(p.numel() for p in add.parameters())


def test_reverse_does_not_hold_at_equal_width():
    dense = build_model(ModelSpec(model="mlp", depth=3, width=16, skip="dense", norm="none"), seed=0)
    assert reverse_gap(dense, torch.randn(200, 40)) > 0.1  # a random [A, B] is no W (s_0 + f_1)
    emulation = dense_from_add(build_model(ModelSpec(model="mlp", depth=3, width=16, skip="add", norm="none"), seed=0))
    assert reverse_gap(emulation, torch.randn(200, 40)) < 1e-5  # ... unless A = B, i.e. it came from add


def test_equivalence_needs_add():
    with pytest.raises(ValueError, match="^skip:"):
        dense_from_add(build_model(ModelSpec(skip="plain")))


def test_seed_costs_outcome_is_built_from_numbers(tmp_path):
    r = run_experiment("seed-costs", str(tmp_path), quick=True)
    assert r["ten_layer_blocks"] == {"plain": 90_000, "add": 90_000, "dense": 450_000}
    assert set(r["per_block_ratio"]["concat-double"]) == {4.0} and set(r["per_block_ratio"]["concat-half"]) == {1.0}
    assert "450,000" in r["outcome"] and r["flops_laws"]["concat-double"]["law"] == "exponential"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_quick_form_runs_and_is_stored(tmp_path, name):
    r = run_experiment(name, str(tmp_path), quick=True, workers=2)
    assert r["outcome"] and r["claim"]
    if name == "equivalence":
        assert r["max_abs_diff"] < 1e-5
    from skiplab.store import Store
    with Store(tmp_path) as s:
        assert [e["name"] for e in s.experiments()] == [name]
    from skiplab.experiments.figures import write_experiment_figure
    png, svg = write_experiment_figure(name, r, tmp_path / "figures")  # the real result's shape draws
    assert png.stat().st_size > 0 and svg.stat().st_size > 0


def test_unknown_experiment(tmp_path, capsys):
    from skiplab.cli import main
    assert main(["experiment", "nope", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("skiplab: error: ")
