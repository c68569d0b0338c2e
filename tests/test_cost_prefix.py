"""``skiplab.cost.prefix``: a sweep over depths read off one counted forward at the deepest
gives exactly the per-depth count's figures (issue 25, item 7)."""

from __future__ import annotations

import json

import pytest

from skiplab import STRATEGIES, ModelSpec
from skiplab.cli import main
from skiplab.cost import growth_over_depths, prefix
from skiplab.cost.answer import model_costs
from skiplab.cost.count import counted_cost
from skiplab.families import FAMILIES

SHAPES = {"mlp": (3, 4), "cnn1d": (2, 7), "cnn2d": (2, 3, 5), "transformer": (2, 5)}
DEPTHS = (0, 1, 2, 4)


def _slow(monkeypatch, spec, depths, batch):
    with monkeypatch.context() as m:
        m.setenv("SKIPLAB_COST_PREFIX", "0")
        return {d: counted_cost(spec.replace(depth=d), batch) for d in depths}


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _specs(model):
    for skip in STRATEGIES:
        for norm in FAMILIES[model].norms:
            width = 4 if skip == "concat-half" else 3
            yield ModelSpec(model=model, skip=skip, norm=norm, depth=max(DEPTHS), width=width,
                            input_shape=SHAPES[model], classes=3,
                            options={"growth": 2} if skip == "dense" else {},
                            **({"heads": 1} if model == "transformer" else {}))


@pytest.mark.parametrize("model", list(SHAPES))
def test_prefix_equals_the_per_depth_count_on_every_strategy_and_norm(model, monkeypatch):
    for spec in _specs(model):
        assert prefix.applies(spec, DEPTHS), spec
        fast = prefix.sweep(spec, DEPTHS, 2)
        slow = _slow(monkeypatch, spec, DEPTHS, 2)
        for d in DEPTHS:
            assert _same(fast[d], slow[d]), (spec, d)


@pytest.mark.parametrize("model", ["mlp", "cnn1d"])
def test_meta_and_fake_counts_agree(model, monkeypatch):
    # families with counts_on_meta are counted on plain meta tensors; on fake CPU ones
    # (SKIPLAB_COST_META=0) the figures are the same
    for spec in _specs(model):
        fast = prefix.sweep(spec, (1, 3), 2)
        with monkeypatch.context() as m:
            m.setenv("SKIPLAB_COST_META", "0")
            fake = prefix.sweep(spec, (1, 3), 2)
        assert _same(fast, fake), spec


def test_sweep_past_what_builds_equals_the_slow_path(monkeypatch):
    # concat-double at width 8: weights past 2^63 elements from depth 28 on, so the deep
    # end of the sweep is estimated from the growth law of depths that build
    spec = ModelSpec(model="mlp", skip="concat-double", norm="none", width=8, depth=6)
    depths = list(range(20, 36))
    fast = growth_over_depths(spec, depths, 4)
    with monkeypatch.context() as m:
        m.setenv("SKIPLAB_COST_PREFIX", "0")
        slow = growth_over_depths(spec, depths, 4)
    assert any(c.get("estimated") for c in slow["curve"]) and not all(c.get("estimated") for c in slow["curve"])
    assert _same(fast, slow)


def test_families_and_specs_it_does_not_apply_to_take_the_slow_path(monkeypatch):
    resnet = ModelSpec(model="resnet", skip="add", depth=6, stages=2, input_shape=(2, 4, 5), classes=3)
    aux = ModelSpec(skip="add", depth=6, width=3, input_shape=(3,), aux_every=2, classes=3)
    assert not prefix.applies(resnet, [6, 10])
    assert not prefix.applies(aux, [2, 6])
    with monkeypatch.context() as m:
        m.setenv("SKIPLAB_COST_PREFIX", "0")
        assert not prefix.applies(ModelSpec(skip="add"), [1, 2])
        slow = [counted_cost(aux.replace(depth=d), 2) for d in (2, 6)]
    assert _same(model_costs(aux, [2, 6], 2), slow)


def test_cost_cli_depths_json_is_the_same_either_way(capsys, monkeypatch):
    argv = ["cost", "--skip", "add,dense,concat-double,dwa", "--width", "8", "--norm", "batch",
            "--depths", "1..10", "--json"]
    main(argv)
    fast = capsys.readouterr().out
    monkeypatch.setenv("SKIPLAB_COST_PREFIX", "0")
    main(argv)
    assert capsys.readouterr().out == fast
