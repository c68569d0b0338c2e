"""The cost model: figures counted on the meta device against the same count on the model
built on the CPU with real tensors (the meta kernels must save and compute what the real
ones do), the seed answers' claims computed by the tool, growth laws, estimates beyond
what can be built, matched budgets and the command line."""

import json
import math

import pytest

from skiplab import STRATEGIES, ModelSpec
from skiplab.cli import main
from skiplab.cost import (model_cost, classify, growth_over_depths, match_budget, measure_cost,
                          parse_depths, why_not_measurable)
from skiplab.families import FAMILIES
from skiplab.layers import ACTIVATIONS, NORMS

MODELS = tuple(FAMILIES)

SHAPES = {"mlp": (3, 4), "cnn1d": (2, 7), "cnn2d": (2, 3, 5), "transformer": (2, 5), "resnet": (2, 4, 5)}
# Family options for the grid: one attention head, so that every width (3 and 4) divides;
# two resnet stages (one transition of each kind per model).
EXTRA = {"transformer": {"heads": 1}, "resnet": {"stages": 2}}


def _depths(model, skip, depths):
    """The grid's depths; resnet's count layers (tests/test_resnet.py): 1 and 2 blocks per
    stage, with He et al.'s 2 S n + 2 or, where the stream restarts, DenseNet's 2 S n + S + 1."""
    if model != "resnet":
        return depths
    stages = EXTRA["resnet"]["stages"]
    return [2 * stages * n + 2 + (stages - 1 if STRATEGIES[skip].reshape == "transition" else 0) for n in (1, 2)]


def _check(spec, batch=3):
    """Counted on meta vs on the CPU: every figure exactly (one counter, two devices)."""
    a, m = model_cost(spec, batch), measure_cost(spec, batch, repeats=0, backward=False)
    where = f"{spec}"
    assert a["params"] == m["params"], where
    assert a["flops"]["matmul"] == m["flops"]["matmul"], where  # torch.utils.flop_counter
    assert [b["flops"] for b in a["per_block"]] == [b["flops"] for b in m["per_block"]], where
    assert a["flops"]["merge"] == m["flops"]["merge"], where
    assert a["concat_bytes"] == m["concat_bytes"], where
    # a meta kernel that saved other tensors than the CPU's would show here
    assert a["activation_bytes"] == m["activation_bytes"], where
    assert a["per_block"] == m["per_block"], where


def _grid(depths, models=MODELS):
    for skip in STRATEGIES:
        for model in models:
            if model == "resnet" and not STRATEGIES[skip].reshape:
                continue  # refused: it cannot cross a stride-2 transition (tests/test_resnet.py)
            for norm in FAMILIES[model].norms:
                for bias in (True, False):
                    # odd and even; resnet's transitions halve concat-half's state (4 -> 2)
                    widths = (3, 4) if skip != "concat-half" else (4, 8) if model == "resnet" else (2, 4)
                    for width in widths:
                        for depth in _depths(model, skip, depths):
                            if skip == "concat-double" and depth > 6 and model != "resnet":
                                continue  # 4 x 2^12 channels of 3x3 conv: too big to build in a test
                            yield ModelSpec(model=model, skip=skip, norm=norm, bias=bias, depth=depth,
                                            width=width, input_shape=SHAPES[model], classes=3,
                                            aux_every=3, options={"growth": 2} if skip == "dense" else {},
                                            **EXTRA.get(model, {}))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_analytic_equals_measured(skip, model):
    if model == "resnet" and not STRATEGIES[skip].reshape:
        pytest.skip(f"resnet refuses {skip}: it cannot cross a stride-2 transition (tests/test_resnet.py)")
    # the transformer's twelve-block grid is in its own file (tests/test_transformer.py)
    for spec in _grid([0, 1, 4] if model == "transformer" else [0, 1, 4, 12], models=(model,)):
        if spec.skip == skip and spec.model == model and (spec.bias == (spec.width % 2 == 1)):
            _check(spec)


@pytest.mark.slow
def test_analytic_equals_measured_full_grid():
    """Every strategy x kind x norm x bias x odd/even width at depths 2, 5 and 9, the ones
    the quick grid (0, 1, 4, 12, one bias per width) leaves out. Counting twice per spec
    (fake tensors and the CPU) made depths 0..6, 9 and 12 an estimated 18-47 min of CPU
    here, so the slow step takes the depths between the quick ones."""
    for spec in _grid((2, 5, 9), models=tuple(m for m in MODELS if m != "transformer")):
        _check(spec)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("norm", NORMS)
def test_activation_rules_for_every_activation(activation, norm):
    # GELU/SiLU keep their input, ReLU/tanh/sigmoid their output, identity nothing; the
    # sharing with the next layer's saved input differs accordingly.
    for skip in ("plain", "rezero", "highway", "concat-prev"):
        _check(ModelSpec(model="cnn1d", skip=skip, norm=norm, activation=activation, depth=3, width=4,
                         input_shape=(2, 6)))


# -- the seed answers' claims, computed --------------------------------------------------
def test_ten_layer_example_from_the_tool():
    blocks = {s: model_cost(ModelSpec(depth=9, width=100, skip=s, norm="none", bias=False,
                                           input_shape=(100,)))
              ["params"]["blocks"] for s in ("plain", "add", "dense")}
    assert blocks == {"plain": 90_000, "add": 90_000, "dense": 450_000}


@pytest.mark.parametrize("model", ["cnn1d", "cnn2d"])
def test_concat_double_block_flops_grow_4x_and_concat_half_stays_constant(model):
    shape = (1, 40) if model == "cnn1d" else (1, 8, 8)
    double = model_cost(ModelSpec(model=model, depth=10, width=8, skip="concat-double", input_shape=shape))
    half = model_cost(ModelSpec(model=model, depth=10, width=8, skip="concat-half", input_shape=shape))
    assert double["block_flops_ratio"] == [4.0] * 9
    assert half["block_flops_ratio"] == [1.0] * 9
    assert len({b["params"] for b in half["per_block"]}) == 1


def test_growth_laws_of_dense_add_and_concat_double():
    depths = list(range(1, 17))
    laws = {s: growth_over_depths(ModelSpec(model="cnn1d", width=16, skip=s), depths)
            for s in ("add", "dense", "concat-double", "concat-half")}
    assert laws["dense"]["params"]["law"] == "quadratic"
    assert laws["add"]["params"]["law"] == "linear"
    assert laws["concat-half"]["flops"]["law"] == "linear"  # constant per block
    g = laws["concat-double"]
    assert g["params"]["law"] == g["flops"]["law"] == "exponential"
    assert math.isclose(g["flops"]["coefficients"]["base"], 4.0, rel_tol=1e-3)
    assert math.isclose(g["activation_bytes"]["coefficients"]["base"], 2.0, rel_tol=1e-3)


def test_estimate_beyond_what_can_be_built_even_on_meta():
    # Depth 40 would need 2^39 x 64 channels: a conv weight past 2^63 elements, which not
    # even the meta device can describe. The answer is the growth law of the deepest depths
    # that build, and says so.
    spec = ModelSpec(model="cnn1d", depth=40, width=64, skip="concat-double", norm="none", kernel_size=3)
    c = model_cost(spec)
    assert "extrapolated from depths" in c["estimated"] and "exponential" in c["estimated"]
    # Block l has 2^(l-1) 64 in and out channels, kernel 3, + bias; the stem 1 -> 64 and the
    # head (2^40 64 -> 10) add a 2^d term the exponential law's dominant term leaves out.
    stem, head = 3 * 64 + 64, 2 ** 40 * 64 * 10 + 10
    want = stem + head + sum((2 ** (l - 1) * 64) ** 2 * 3 + 2 ** (l - 1) * 64 for l in range(1, 41))
    assert abs(c["params"]["total"] / want - 1) < 1e-3  # growth.NEAR: the fit's stated accuracy
    assert "max_state_width" in why_not_measurable(spec.replace(depth=12), 32)
    buildable = model_cost(spec.replace(depth=12))
    assert "estimated" not in buildable and buildable["per_block"]


def test_memory_guard_names_what_it_would_need():
    spec = ModelSpec(model="cnn2d", depth=12, width=4, skip="concat-double", max_state_width=10 ** 9,
                     input_shape=(3, 64, 64))
    reason = why_not_measurable(spec, 256)
    assert reason.startswith("not measured: it would need about") and "GiB is available" in reason


# -- growth-law classification -------------------------------------------------------------
@pytest.mark.parametrize("f, law", [
    (lambda d: 7, "constant"),
    (lambda d: 3 + 5 * d, "linear"),
    (lambda d: 1 + 2 * d + 3 * d * d, "quadratic"),
    (lambda d: 10 + 2 * 3 ** d, "exponential"),
    (lambda d: math.sqrt(d), "unclassified"),
])
def test_classify(f, law):
    depths = list(range(1, 13))
    assert classify(depths, [f(d) for d in depths])["law"] == law


def test_classify_needs_four_depths():
    with pytest.raises(ValueError, match="at least 4"):
        classify([1, 2, 3], [1, 2, 3])


@pytest.mark.parametrize("text, want", [("1..4", [1, 2, 3, 4]), ("2..10:4", [2, 6, 10]), ("1,2,8", [1, 2, 8])])
def test_parse_depths(text, want):
    assert parse_depths(text) == want


@pytest.mark.parametrize("text", ["x", "1..", "-1..3", "", "4..2"])
def test_parse_depths_rejects(text):
    with pytest.raises(ValueError, match="^depths:"):
        parse_depths(text)


# -- matched budgets --------------------------------------------------------------------
@pytest.mark.parametrize("skip", ["plain", "add", "rezero", "highway", "dense", "concat-prev", "concat-half"])
@pytest.mark.parametrize("metric", ["params", "flops"])
def test_budget_is_met_within_2_percent(skip, metric):
    target = 400_000 if metric == "params" else 20_000_000
    m = match_budget(ModelSpec(model="cnn1d", depth=6, skip=skip), **{metric: target})
    c = model_cost(m.spec)
    got = c["params"]["total"] if metric == "params" else c["flops"]["total"]
    assert got == m.achieved and abs(got / target - 1) <= 0.02, (m.spec.width, got)
    assert m.within_tolerance


def test_budget_by_growth_and_impossible_budgets():
    m = match_budget(ModelSpec(model="mlp", depth=6, width=32, skip="dense"), params=200_000, vary="growth")
    assert m.spec.width == 32 and m.within_tolerance
    with pytest.raises(ValueError, match="below the smallest"):
        match_budget(ModelSpec(depth=30, skip="concat-double"), params=1000)
    with pytest.raises(ValueError, match="skip 'add' can vary width, not 'growth'"):
        match_budget(ModelSpec(skip="add"), params=1000, vary="growth")


# -- command line ---------------------------------------------------------------------------
def test_cost_cli_json_schema(capsys):
    code = main(["cost", "--model", "cnn1d", "--depth", "3", "--width", "8", "--skip", "add,dense",
                 "--measure", "--depths", "1..6", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and [d["skip"] for d in data] == ["add", "dense"]
    for d in data:
        assert set(d["params"]) == {"stem", "blocks", "head", "aux", "total"}
        assert {"matmul", "merge", "total"} <= set(d["flops"])
        assert {"params", "flops", "merge_flops", "in_width", "out_width"} <= set(d["per_block"][0])
        assert d["measured"]["params"] == d["params"] and d["ratios"]["params"] == 1.0
        assert d["ratios"]["activation_bytes"] == 1.0
        assert set(d["growth"]) >= {"params", "flops", "activation_bytes"}
    assert data[1]["growth"]["params"]["law"] == "quadratic"


def test_cost_cli_measure_too_big_says_so(capsys):
    code = main(["cost", "--skip", "add,concat-double", "--depth", "30", "--measure"])
    out = capsys.readouterr().out
    assert code == 0 and "concat-double: not measured" in out and "would need about" in out


def test_cost_cli_budget_and_plot(capsys, tmp_path):
    png = tmp_path / "growth.png"
    code = main(["cost", "--model", "cnn1d", "--depth", "4", "--skip", "add,dense,concat-half",
                 "--params", "100000", "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0 and "matched budget: params = 100,000" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [
    ["cost", "--depths", "x"],
    ["cost", "--depths", "1..2"],
    ["cost", "--batch", "0"],
    ["cost", "--params", "10", "--flops", "10"],
    ["cost", "--params", "-5"],
    ["cost", "--skip", "add", "--vary", "growth", "--params", "1000"],
    ["cost", "--skip", "concat-double", "--depth", "30", "--params", "1000"],
    ["cost", "--plot", "/nonexistent-dir/x.png"],
])
def test_cost_cli_bad_input(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("skiplab: error: "), err


@pytest.mark.parametrize("depth", [2, 24, 50])
def test_dense_budget_by_growth_refines_width_when_growth_is_too_coarse(depth):
    # At depth 50 one more channel of growth adds ~10% of the parameters: growth alone
    # cannot land within 2%, so the width is refined around the best growth.
    spec = ModelSpec(model="mlp", width=64, depth=depth, skip="dense", options={"growth": 16}, input_shape=(1, 40))
    m = match_budget(spec, params=100_000, vary="growth")
    assert m.within_tolerance and model_cost(m.spec)["params"]["total"] == m.achieved


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("skip, options", [("hyper", {"static": True}), ("hyper", {"streams": 3}),
                                           ("hyper", {"streams": 1}), ("mhc", {"streams": 2, "iterations": 3}),
                                           ("mhc", {"streams": 1})])
def test_analytic_equals_measured_with_strategy_options(skip, model, options):
    if model == "resnet":
        pytest.skip("resnet refuses hyper and mhc: their copies cannot cross a stride-2 transition")
    for norm in FAMILIES[model].norms:
        for depth in (0, 1, 4):
            _check(ModelSpec(model=model, skip=skip, norm=norm, depth=depth, width=3, input_shape=SHAPES[model],
                             classes=3, aux_every=3, options=options, **EXTRA.get(model, {})))


def test_cost_of_a_batch_norm_model_at_batch_1_is_one_line_exit_2(capsys):
    # counted on the model itself, the cost meets the model's own rule: batch norm in
    # training mode needs two samples per channel
    assert main(["cost", "--model", "mlp", "--norm", "batch", "--skip", "add", "--depth", "2", "--batch", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch" in err[0] and "Traceback" not in err[0]
