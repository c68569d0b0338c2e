"""Gradient and signal-flow diagnostics.

Method: the per-block statistics are checked against a reference computed by hand with
plain autograd (``retain_grad`` on every state, then ``torch.autograd.grad`` through one
block at a time), with a stated tolerance; the physics claims of the seed answers are
checked at the sizes the issue names, with fixed seeds, each with the reason it must
hold; the command line is checked for its JSON schema, its one-line errors and its plot.
"""

import json
import math
import struct

import pytest
import torch
import torch.nn.functional as F

from skiplab import STRATEGIES, ModelSpec, build_model
from skiplab.cli import main
from skiplab.datasets import Dataset, load_mnist1d
from skiplab.gradients import GradientConfig, check_inputs, measure_gradients

ADDITIVE = ("add", "rezero", "layerscale", "highway")


@pytest.fixture(scope="module")
def mnist1d() -> Dataset:
    return load_mnist1d()


@pytest.fixture(scope="module")
def tiny(mnist1d) -> Dataset:
    """32 samples: one batch of 32 is then the whole set (in a seeded order)."""
    x, y = mnist1d.x_train[:32], mnist1d.y_train[:32]
    return Dataset("tiny", x, y, x, y, classes=10)


def one_batch(seeds: int = 1) -> GradientConfig:
    return GradientConfig(seeds=seeds, batches=1, batch_size=32)


# -- against a hand computation ---------------------------------------------------------
def reference(spec: ModelSpec, data: Dataset) -> dict[str, list[float]]:
    """Every statistic of seed 0 on the whole of ``data`` as one batch, by hand."""
    model = build_model(spec, seed=0).train()
    x, y = data.x_train, data.y_train
    states = [model.stem(x.flatten(1) if spec.model == "mlp" else x)]
    states[0].retain_grad()
    for block in model.blocks:
        s = block(states[-1])
        s.retain_grad()
        states.append(s)
    F.cross_entropy(model.head(states[-1]), y).backward()
    out = {"weight": [], "rms": [], "share": []}
    for l, block in enumerate(model.blocks, start=1):
        out["weight"].append(float(block.branch.layer.weight.grad.norm()))
        out["rms"].append(float(states[l].detach().pow(2).mean().sqrt()))
        g_out = states[l].grad  # dL/ds_l
        s_in = states[l - 1].detach().requires_grad_()
        (total,) = torch.autograd.grad(block(s_in), s_in, g_out)  # this block's part of dL/ds_{l-1}
        # The merge's own route: write(s, f) with the branch's output held fixed (the
        # identity of add, highway's carry and gate, the carried channels of dense; none for plain)
        f = block.branch(block.read(s_in)).detach()
        direct = block.write(s_in, f)
        identity = (torch.autograd.grad(direct, s_in, g_out, allow_unused=True)[0] if direct.requires_grad
                    else None)
        identity = torch.zeros_like(total) if identity is None else identity
        branch = total - identity
        out["share"].append(float((branch.norm() / (identity.norm() + branch.norm())).detach()))
    return out


@pytest.mark.parametrize("skip", ["plain", "add", "layerscale", "highway", "dense"])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_statistics_match_a_hand_computation(tiny, skip, norm):
    spec = ModelSpec(model="mlp", depth=4, width=16, skip=skip, norm=norm)
    got = measure_gradients(spec, tiny, one_batch()).to_dict()
    ref = reference(spec, tiny)
    # float32 sums in another order (the batch is permuted): agree to 1e-4 relative
    assert got["weight_grad_norm"] == pytest.approx(ref["weight"], rel=1e-4)
    assert got["activation_rms"] == pytest.approx(ref["rms"], rel=1e-4)
    assert got["branch_share"] == pytest.approx(ref["share"], rel=1e-4, abs=1e-7)
    if skip == "plain":  # no route but the branch
        assert got["branch_share"] == [1.0] * 4


def test_feature_gradient_is_dl_df(tiny):
    # For plain, f_l is the state itself, so ||dL/df_l|| = ||dL/ds_l||; for add, the block
    # output is s + f, so dL/df_l = dL/ds_l as well: both checked against retain_grad.
    for skip in ("plain", "add"):
        spec = ModelSpec(model="mlp", depth=3, width=8, skip=skip)
        got = measure_gradients(spec, tiny, one_batch()).to_dict()["feature_grad_norm"]
        model = build_model(spec, seed=0)
        s = model.stem(tiny.x_train.flatten(1))
        states = []
        for block in model.blocks:
            s = block(s)
            s.retain_grad()
            states.append(s)
        F.cross_entropy(model.head(s), tiny.y_train).backward()
        assert got == pytest.approx([float(t.grad.norm()) for t in states], rel=1e-4)


# -- the physics the seed answers claim -------------------------------------------------
@pytest.fixture(scope="module")
def depth50(mnist1d):
    """PyTorch's default init, ReLU, width 100, depth 50, MLP on MNIST-1D; 3 seeds."""
    config = GradientConfig(seeds=3, batches=1, batch_size=128)
    spec = ModelSpec(model="mlp", depth=50, width=100, init="torch")
    return {(skip, norm): measure_gradients(spec.replace(skip=skip, norm=norm), mnist1d, config).to_dict()
            for skip, norm in [("plain", "none"), ("add", "none"), ("dense", "none"), ("plain", "batch")]}


def test_plain_vanishes_add_and_dense_do_not(depth50):
    # PyTorch's default Linear init draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)): weight
    # variance 1/(3 fan_in), so with ReLU halving the second moment each plain layer scales
    # the backward signal's variance by about 1/6. Over 50 layers that is ~6^-25 in norm
    # (measured: ~7e-19). An additive skip adds the identity to each layer's Jacobian
    # (dL/ds_{l-1} = dL/ds_l (1 + dF/ds)), so the gradient cannot shrink; and the growth of
    # the backward signal toward the input is matched by the growth of the forward state
    # the weight gradient is multiplied with, so block 1 and block 50 stay within one or two
    # orders (measured: ~0.15). Dense hands every block's features straight to the head,
    # a path of length one (measured: ~0.92). Per seed (min..max), not just on average.
    plain, add, dense = depth50[("plain", "none")], depth50[("add", "none")], depth50[("dense", "none")]
    assert plain["first_last_ratio"] < 1e-6 and plain["first_last_ratio_max"] < 1e-6
    assert plain["vanishing_block"] is not None and plain["vanishing_block"] < 25
    for d in (add, dense):
        assert 1e-2 <= d["first_last_ratio"] <= 1e2
        assert 1e-2 <= d["first_last_ratio_min"] and d["first_last_ratio_max"] <= 1e2
        assert d["vanishing_block"] is None


def test_batch_norm_turns_vanishing_into_explosion(depth50):
    # Batch norm at init rescales every layer's pre-activations to unit variance, which
    # undoes the forward shrinkage, but its backward pass makes the gradient *grow* toward
    # the input by a constant factor per layer (about sqrt(pi / (pi - 1)) ~ 1.21 for ReLU;
    # Yang et al., "A mean field theory of batch normalization", arXiv 1902.08129), so the
    # ratio goes from ~1e-18 to far above 1 (measured: ~9e3).
    without, with_bn = depth50[("plain", "none")], depth50[("plain", "batch")]
    assert with_bn["first_last_ratio"] > 1 and with_bn["first_last_ratio_min"] > 1
    assert with_bn["first_last_ratio"] / without["first_last_ratio"] > 1e12


def test_rezero_branch_share_is_exactly_zero_at_init(mnist1d):
    # ReZero multiplies every branch by a_l = 0 at init (Bachlechner et al., arXiv
    # 2003.04887): dL/df_l = a_l dL/ds_l = 0 exactly, so nothing flows through the branch,
    # all of dL/ds_{l-1} is the identity's, and the branch weights get exactly no gradient.
    spec = ModelSpec(model="mlp", depth=20, width=32, skip="rezero", norm="none")
    d = measure_gradients(spec, mnist1d, GradientConfig(seeds=2, batches=2, batch_size=64)).to_dict()
    assert d["branch_share"] == [0.0] * 20 and d["branch_share_max"] == [0.0] * 20
    assert d["weight_grad_norm_max"] == [0.0] * 20 and d["feature_grad_norm_max"] == [0.0] * 20
    assert d["first_last_ratio"] is None and d["vanishing_block"] is None  # 0 / 0: undefined


def test_rezero_branch_opens_once_alpha_has_learned(tiny):
    # After one optimizer step a_l != 0 (its gradient is <f_l, dL/ds_l>, not zero), so the
    # branch starts to receive gradient: the share leaves 0.
    spec = ModelSpec(model="mlp", depth=6, width=16, skip="rezero")
    config = GradientConfig(seeds=1, batches=1, batch_size=32, steps=2, checkpoints=2)
    traj = measure_gradients(spec, tiny, config).to_dict()["trajectory"]
    assert [t["step"] for t in traj] == [0, 1, 2]
    assert max(traj[0]["branch_share"]) == 0.0
    assert min(traj[1]["branch_share"]) > 0 and min(traj[1]["weight_grad_norm"]) > 0


# -- contract, edge cases, validation ---------------------------------------------------
@pytest.mark.parametrize("model", ["mlp", "cnn1d"])
@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_every_strategy_gives_finite_statistics(tiny, model, skip):
    spec = ModelSpec(model=model, depth=3, width=8, skip=skip, norm="batch", init="kaiming")
    d = measure_gradients(spec, tiny, one_batch(seeds=2)).to_dict()
    for key in ("weight_grad_norm", "feature_grad_norm", "activation_rms"):
        assert len(d[key]) == 3 and all(v is not None and v >= 0 for v in d[key]), key
        assert all(lo <= m <= hi for lo, m, hi in zip(d[key + "_min"], d[key], d[key + "_max"]))
    assert len(d["branch_share"]) == 3 and all(0 <= v <= 1 for v in d["branch_share"])
    assert (d["composite_gain_forward"] is not None) == STRATEGIES[skip].mixes_streams
    json.dumps(d, allow_nan=False)


def test_depth_zero_and_trajectory_shape(tiny):
    d = measure_gradients(ModelSpec(depth=0, skip="add"), tiny, one_batch()).to_dict()
    assert d["weight_grad_norm"] == [] and d["first_last_ratio"] is None and d["vanishing_block"] is None
    config = GradientConfig(seeds=1, batches=1, batch_size=32, steps=10, checkpoints=4)
    assert config.checkpoint_steps() == [0, 2, 5, 8, 10]
    d = measure_gradients(ModelSpec(depth=2, width=8, skip="plain"), tiny, config).to_dict()
    assert [t["step"] for t in d["trajectory"]] == [0, 2, 5, 8, 10]
    assert d["trajectory"][0]["weight_grad_norm"] == d["weight_grad_norm"]  # step 0 is the init


def test_deterministic_and_global_rng_untouched(tiny):
    spec = ModelSpec(depth=3, width=8, skip="highway")
    state = torch.get_rng_state()
    a = measure_gradients(spec, tiny, one_batch(seeds=2)).to_dict()
    b = measure_gradients(spec, tiny, one_batch(seeds=2)).to_dict()
    assert a == b and torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("field, value", [("seeds", 0), ("batches", -1), ("batch_size", 0), ("steps", -1),
                                          ("checkpoints", 0), ("optimizer", "rmsprop"), ("lr", 0.0),
                                          ("lr", math.nan), ("seeds", 1.5), ("vanish_threshold", -1)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"^{field}: "):
        GradientConfig(**{field: value})


@pytest.mark.parametrize("spec, config, field", [
    (ModelSpec(model="cnn2d"), GradientConfig(), "input_shape"),
    (ModelSpec(model="mlp", input_shape=(30,)), GradientConfig(), "input_shape"),
    (ModelSpec(classes=5), GradientConfig(), "classes"),
    (ModelSpec(), GradientConfig(batches=40, batch_size=128), "batches"),
    (ModelSpec(norm="batch"), GradientConfig(batch_size=1), "batch_size"),
    (ModelSpec(skip="concat-double", depth=20), GradientConfig(), "max_state_width"),
])
def test_inputs_that_cannot_be_measured(mnist1d, spec, config, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        check_inputs(spec, mnist1d, config)


# -- command line -----------------------------------------------------------------------
SMALL = ["gradients", "--depth", "4", "--width", "8", "--seeds", "2", "--batches", "1", "--batch-size", "32"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_cli_json_schema(capsys):
    code, out, err = run(capsys, *SMALL, "--skip", "plain,add,rezero,dense", "--json")
    assert code == 0 and err == ""  # no progress lines under --json
    data = strict_json(out)
    assert [d["skip"] for d in data] == ["plain", "add", "rezero", "dense"]
    for d in data:
        assert d["depth"] == 4 and d["width"] == 8 and "trajectory" not in d
        for key in ("weight_grad_norm", "weight_grad_norm_min", "weight_grad_norm_max",
                    "feature_grad_norm", "activation_rms"):
            assert isinstance(d[key], list) and len(d[key]) == 4, key
        assert {"first_last_ratio", "vanishing_block", "branch_share"} <= set(d)
    by = {d["skip"]: d for d in data}
    assert by["plain"]["branch_share"] == [1.0] * 4 and len(by["dense"]["branch_share"]) == 4
    assert len(by["add"]["branch_share"]) == 4 and by["rezero"]["branch_share"] == [0.0] * 4
    assert isinstance(by["add"]["first_last_ratio"], float) and by["rezero"]["first_last_ratio"] is None


def test_cli_steps_give_a_trajectory(capsys):
    code, out, _ = run(capsys, *SMALL, "--skip", "add", "--steps", "4", "--checkpoints", "2",
                       "--optimizer", "sgd", "--lr", "0.01", "--json")
    (d,) = strict_json(out)
    assert code == 0 and d["optimizer"] == "sgd" and d["lr"] == 0.01
    assert [t["step"] for t in d["trajectory"]] == [0, 2, 4]
    assert all(len(t["weight_grad_norm"]) == 4 and "loss" in t for t in d["trajectory"])


def test_cli_table(capsys):
    code, out, _ = run(capsys, *SMALL, "--skip", "plain,add", "--steps", "2", "--checkpoints", "1")
    assert code == 0
    assert "first/last" in out and "weight-gradient norm" in out and "branch share" in out
    assert "add: through 2 steps of adam" in out


def test_cli_progress_only_without_json(capsys, monkeypatch):
    from skiplab.cli import gradients as command

    monkeypatch.setattr(command, "QUIET_SECONDS", 0.0)  # as if the run were long
    code, out, err = run(capsys, *SMALL, "--skip", "add", "--json")
    assert code == 0 and err == "" and strict_json(out)
    code, out, err = run(capsys, *SMALL, "--skip", "add")
    assert code == 0 and "gradients [" in err and "add, seed 2/2" in err


def png_size(path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR", "not a PNG"
    assert raw[-8:-4] == b"IEND", "PNG truncated"
    return struct.unpack(">II", raw[16:24])


@pytest.mark.parametrize("steps", ["0", "2"])
def test_cli_plot_is_a_png(capsys, tmp_path, steps):
    import matplotlib.image

    path = tmp_path / "grad.png"
    code, _, _ = run(capsys, *SMALL, "--skip", "plain,add,rezero", "--steps", steps, "--checkpoints", "1",
                     "--plot", str(path))
    assert code == 0
    width, height = png_size(path)
    assert width > 600 and height > 400
    assert matplotlib.image.imread(path).shape[:2] == (height, width)  # decodes


@pytest.mark.parametrize("extra", [
    ["--dataset", "mnist2d"],
    ["--plot", "/nonexistent-folder/grad.png"],
    ["--plot", "grad.txt"],
    ["--seeds", "0"],
    ["--batches", "0"],
    ["--batch-size", "0"],
    ["--batches", "40", "--batch-size", "128"],
    ["--steps", "-1"],
    ["--lr", "-0.1"],
    ["--lr", "fast"],
    ["--optimizer", "rmsprop"],
    ["--model", "cnn2d"],
    ["--classes", "5"],
    ["--skip", "concat-double", "--depth", "20"],
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, extra):
    code, out, err = run(capsys, *SMALL, *extra)
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("skiplab: error: "), err


@pytest.mark.slow
def test_plain_does_not_recover_in_training(mnist1d):
    # Adam rescales each weight's step by its own gradient's running RMS, which could in
    # principle revive blocks whose gradients are 1e-18 of the last's. It does not: the
    # plain net at depth 50 learns nothing (its loss stays at ln 10 = 2.303, chance) and
    # its ratio stays below 1e-6, while a highway net of the same size trains (measured
    # over 250 steps: plain 2.303 with ratio ~1e-19, highway 1.21, on 1 and 2 threads).
    # (add is not used here: from its initial loss of ~4e4 its path depends on the
    # floating-point summation order, 1.93 on two threads but 2.38 on one.)
    config = GradientConfig(seeds=2, batches=1, batch_size=128, steps=250, checkpoints=2)
    spec = ModelSpec(model="mlp", depth=50, width=100, norm="none", init="torch")
    plain = measure_gradients(spec.replace(skip="plain"), mnist1d, config).to_dict()["trajectory"]
    highway = measure_gradients(spec.replace(skip="highway"), mnist1d, config).to_dict()["trajectory"]
    assert all(t["first_last_ratio"] < 1e-6 for t in plain)
    assert plain[-1]["loss"] > 2.29
    assert highway[-1]["loss"] < 1.6
