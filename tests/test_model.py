"""Every strategy x model kind x norm: shapes, gradients, determinism; parameter counts
against closed forms written here independently of the library; edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from skiplab import STRATEGIES, ModelSpec, SpecError, build_model
from skiplab.families import FAMILIES
from skiplab.layers import NORMS

MODELS = tuple(FAMILIES)
# The one-transform-per-block families, whose closed forms are written below; the
# transformer's own are in tests/test_transformer.py.
CLASSIC = ("mlp", "cnn1d", "cnn2d")

INPUT = {"mlp": (12,), "cnn1d": (2, 9), "cnn2d": (2, 5, 7), "transformer": (2, 9),  # cnn2d deliberately non-square
         "resnet": (2, 5, 7)}  # odd sizes: 5 x 7 -> 3 x 4 -> 2 x 2 (strides), -> 2 x 3 -> 1 x 1 (pools)


def resnet_depth(skip, n, stages=3):
    """The depth of a resnet of n blocks per stage, counted as its papers count layers:
    He et al.'s 6n + 2 (2 convs per block, stem, Linear), DenseNet-BC's 6n + 4 (+ the
    transitions' convs) for a strategy that restarts its stream at each transition."""
    return 2 * stages * n + 2 + (stages - 1 if STRATEGIES[skip].reshape == "transition" else 0)


def _spec(skip, model, norm, **kw):
    # Bias before batch norm is redundant (BN removes any per-channel constant, Ioffe &
    # Szegedy arXiv 1502.03167), so its gradient is zero; torchvision drops it. Tested below.
    kw.setdefault("bias", norm != "batch")
    depth, width = 3, 8
    if model == "resnet":
        depth = resnet_depth(skip, 1)  # 3 blocks too
        # concat-half's state does not grow, so each transition halves it: 16 -> 8 -> 4 keeps
        # 2 new channels in stage 3 (at 8, its single one can die at every sample of a batch)
        width = 16 if skip == "concat-half" else 8
    return ModelSpec(model=model, skip=skip, norm=norm, depth=depth, width=width, aux_every=2,
                     input_shape=INPUT[model], classes=5, **kw)


def _loss(model, x, y):
    logits, aux = model(x, return_aux=True)
    return F.cross_entropy(logits, y) + sum(model.spec.aux_weight * F.cross_entropy(a, y) for a in aux)


def _open_zero_gates(net):
    """Parameters that start at exactly 0 and multiply something (ReZero's a, the dynamic
    weights W of hyper-connections, mHC's phi) pass exactly zero gradient to what they
    multiply, and get none where their partner is 0 too (test_skips, test_streams): give
    every all-zero parameter small seeded noise so that every route is open."""
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("norm", sorted(set(NORMS) | {"rms"}))
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_forward_backward_contract(skip, model, norm):
    if norm not in FAMILIES[model].norms:
        pytest.skip(f"{model} has no {norm} norm")
    if model == "resnet" and not STRATEGIES[skip].reshape:  # tests/test_resnet.py says why
        with pytest.raises(SpecError, match=f"^skip: {skip!r} cannot cross the stride-2 transitions"):
            _spec(skip, model, norm)
        return
    spec = _spec(skip, model, norm)
    net = build_model(spec, seed=1)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(32, *spec.input_shape, generator=g), torch.randint(0, 5, (32,), generator=g)
    _open_zero_gates(net)
    logits, aux = net(x, return_aux=True)
    assert logits.shape == (32, 5) and len(aux) == 1 and aux[0].shape == (32, 5)
    _loss(net, x, y).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
    assert torch.isfinite(logits).all()
    # Same seed, same model, same output.
    again = build_model(spec, seed=1)
    _open_zero_gates(again)
    assert torch.equal(again(x), net(x))


def test_seed_does_not_touch_global_rng():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    build_model(ModelSpec(), seed=7)
    assert torch.equal(torch.rand(3), want)


def test_different_seeds_differ():
    a, b = build_model(ModelSpec(), seed=0), build_model(ModelSpec(), seed=1)
    assert not torch.equal(a.stem.layer.weight, b.stem.layer.weight)


def test_bias_before_batch_norm_gets_no_gradient():
    spec = ModelSpec(model="cnn1d", depth=2, width=6, skip="add", norm="batch", bias=True, input_shape=(1, 10))
    net = build_model(spec, seed=0)
    x = torch.randn(16, 1, 10)
    F.cross_entropy(net(x), torch.randint(0, 10, (16,))).backward()
    ref = net.blocks[0].branch.layer.weight.grad.abs().max()
    assert net.blocks[0].branch.layer.bias.grad.abs().max() < 1e-5 * ref


# -- parameter counts ------------------------------------------------------------------
def closed_form(skip, model, norm, bias, depth, w, k, kernel, fan_in, classes, aux_every):
    """Parameters per part, from docs/design.md's table; written independently of skiplab."""
    K = {"mlp": 1, "cnn1d": kernel, "cnn2d": kernel ** 2}[model]
    b = int(bias)

    def layer(i, o, with_bias=b):
        return i * o * K + o * with_bias

    def norm_p(c):
        return 0 if norm == "none" else 2 * c

    def t(i, o):  # a transform: layer + norm
        return layer(i, o) + norm_p(o)

    if skip in ("plain", "add"):
        blocks = [t(w, w)] * depth
        widths = [w] * depth
    elif skip == "rezero":
        blocks, widths = [t(w, w) + 1] * depth, [w] * depth
    elif skip == "layerscale":
        blocks, widths = [t(w, w) + w] * depth, [w] * depth
    elif skip == "highway":
        blocks, widths = [t(w, w) + layer(w, w, with_bias=1)] * depth, [w] * depth
    elif skip == "dense":
        blocks = [t(w + (l - 1) * k, k) for l in range(1, depth + 1)]
        widths = [w + l * k for l in range(1, depth + 1)]
    elif skip == "concat-prev":
        blocks = [t(w if l == 1 else 2 * w, w) for l in range(1, depth + 1)]
        widths = [2 * w] * depth
    elif skip == "concat-double":
        blocks = [t(2 ** (l - 1) * w, 2 ** (l - 1) * w) for l in range(1, depth + 1)]
        widths = [2 ** l * w for l in range(1, depth + 1)]
    elif skip == "concat-half":
        blocks, widths = [t(w, w // 2)] * depth, [w] * depth
    elif skip == "dwa":  # DenseFormer: block i owns alpha_{i,0..i}, i + 1 scalars
        blocks, widths = [t(w, w) + l + 1 for l in range(1, depth + 1)], [w] * depth
    elif skip == "hyper":  # n = 4 copies: A_m (n), A_r (n x n), B (n); dynamic W (C x (n + 2)), s_a, s_b
        n = 4
        blocks, widths = [t(w, w) + n + n * n + n + w * (n + 2) + 2] * depth, [w] * depth
    elif skip == "mhc":  # phi (nC x (2n + n^2)), a (3), b_pre (n), b_post (n), b_res (n x n)
        n = 4
        blocks, widths = [t(w, w) + n * w * (2 * n + n * n) + 3 + 2 * n + n * n] * depth, [w] * depth
    elif skip == "mhc-lite":  # phi (nC x (2n + n!)), a (3), b_pre (n), b_post (n), b_res (n!): 24 permutations
        n, perms = 4, 24
        blocks, widths = [t(w, w) + n * w * (2 * n + perms) + 3 + 2 * n + perms] * depth, [w] * depth
    state = widths[-1] if depth else w

    def head(c):
        return c * classes + classes * b

    aux = [head(widths[l - 1]) for l in range(aux_every, depth, aux_every)] if aux_every else []
    return {"stem": t(fan_in, w), "blocks": sum(blocks), "head": head(state), "aux": sum(aux),
            "per_block": blocks}


@pytest.mark.parametrize("model", CLASSIC)
@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_parameter_counts_match_closed_form(skip, model):
    shape = {"mlp": (3, 5), "cnn1d": (3, 11), "cnn2d": (3, 4, 6)}[model]
    fan_in = 15 if model == "mlp" else 3
    for norm in NORMS:
        for bias in (True, False):
            for depth in (0, 1, 2, 5):
                for w in ((2, 6) if skip == "concat-half" else (1, 5)):
                    k = 3 if skip == "dense" else w
                    spec = ModelSpec(model=model, skip=skip, norm=norm, bias=bias, depth=depth, width=w,
                                     options={"growth": k} if skip == "dense" else {}, kernel_size=5,
                                     input_shape=shape, classes=7, aux_every=2)
                    got = build_model(spec).structure()
                    want = closed_form(skip, model, norm, bias, depth, w, k, 5, fan_in, 7, 2)
                    where = f"{skip} {model} {norm} bias={bias} depth={depth} w={w}"
                    assert [b["params"] for b in got["per_block"]] == want["per_block"], where
                    for part in ("stem", "blocks", "head", "aux"):
                        assert got["params"][part] == want[part], f"{part}: {where}"
                    assert got["params"]["total"] == sum(p.numel() for p in build_model(spec).parameters())


def test_the_questions_ten_layer_example():
    """Seed answer 2: 9 weight matrices of 100x100 = 90,000 with or without additive
    skips; with every earlier layer concatenated in, 100x100 ... 900x100 = 450,000."""
    blocks = {}
    for skip in ("plain", "add", "dense"):
        spec = ModelSpec(model="mlp", depth=9, width=100, skip=skip, norm="none", bias=False, input_shape=(100,))
        blocks[skip] = build_model(spec).structure()["params"]["blocks"]
    assert blocks == {"plain": 90_000, "add": 90_000, "dense": 450_000}


# -- edge cases ------------------------------------------------------------------------
@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_depth_zero_is_stem_plus_head(skip):
    w = 4
    net = build_model(ModelSpec(depth=0, width=w, skip=skip), seed=0)
    assert len(net.blocks) == 0 and net(torch.randn(2, 40)).shape == (2, 10)
    assert net.structure()["params"]["blocks"] == 0


@pytest.mark.parametrize("skip", [s for s in STRATEGIES if s != "concat-half"])
def test_width_one(skip):
    net = build_model(ModelSpec(model="cnn1d", depth=3, width=1, skip=skip), seed=0)
    assert net(torch.randn(2, 1, 40)).shape == (2, 10)


def test_cnn2d_non_square_input():
    net = build_model(ModelSpec(model="cnn2d", depth=2, width=4, skip="dense", input_shape=(3, 5, 11)), seed=0)
    assert net(torch.randn(2, 3, 5, 11)).shape == (2, 10)


def test_kaiming_init_std_and_gate_bias():
    spec = ModelSpec(depth=2, width=400, skip="highway", init="kaiming")
    net = build_model(spec, seed=0)
    w = net.blocks[0].branch.layer.weight
    assert math.isclose(w.std().item(), math.sqrt(2 / 400), rel_tol=0.05)
    assert torch.all(net.blocks[0].branch.layer.bias == 0)
    assert torch.all(net.blocks[0].gate.bias == -2.0)


def test_wrong_input_shape_is_a_clear_error():
    net = build_model(ModelSpec(), seed=0)
    with pytest.raises(ValueError, match=r"expected \(batch, 40\)"):
        net(torch.randn(2, 41))
    assert net(torch.randn(2, 1, 40)).shape == (2, 10)  # any per-sample shape of 40 features


@pytest.mark.parametrize("fields, field_named", [
    (dict(skip="residual"), "skip"),
    (dict(depth=-1), "depth"),
    (dict(depth=2.5), "depth"),
    (dict(depth=True), "depth"),
    (dict(width=0), "width"),
    (dict(model="rnn"), "model"),
    (dict(norm="group"), "norm"),
    (dict(activation="swish"), "activation"),
    (dict(init="xavier"), "init"),
    (dict(skip="concat-half", width=7), "width"),
    (dict(skip="add", options={"growth": 4}), "growth"),
    (dict(skip="dense", options={"growth": 0}), "growth"),
    (dict(model="cnn1d", kernel_size=4), "kernel_size"),
    (dict(model="cnn1d", input_shape=(40,)), "input_shape"),
    (dict(model="cnn2d", input_shape=(1, 8)), "input_shape"),
    (dict(input_shape=(0,)), "input_shape"),
    (dict(aux_every=-1), "aux_every"),
    (dict(aux_weight=float("nan")), "aux_weight"),
    (dict(bias="yes"), "bias"),
])
def test_invalid_specs_name_the_field(fields, field_named):
    with pytest.raises(SpecError, match=f"^{field_named}:"):
        ModelSpec(**fields)


def test_concat_double_over_the_cap_refuses_to_build_but_spec_exists():
    spec = ModelSpec(skip="concat-double", depth=40, width=64)  # analysable ...
    assert spec.state_width == 64 * 2 ** 40
    with pytest.raises(SpecError, match="max_state_width"):  # ... but not buildable
        build_model(spec)


def test_from_dict_round_trip_and_unknown_key():
    spec = ModelSpec(model="cnn1d", skip="dense", options={"growth": 4}, input_shape=(1, 40))
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(SpecError, match="^widht: unknown field"):
        ModelSpec.from_dict({"widht": 3})


def test_family_options_left_the_fields_and_every_identity_stayed():
    """The transformer's heads, context, mlp_ratio, placement and vocab are its family's
    declared options now (Family.options), no longer ModelSpec fields; a spec's identity
    is the dict and hash printed by the code before the move (commit d1cc2b3)."""
    import dataclasses
    from skiplab.run.config import RunSpec
    assert not {"heads", "context", "vocab"} & {f.name for f in dataclasses.fields(ModelSpec)}
    t = ModelSpec(model="transformer", skip="dense", depth=3, width=8, heads=2, mlp_ratio=2, options={"growth": 4})
    assert t.to_dict() == {
        "model": "transformer", "depth": 3, "width": 8, "skip": "dense", "options": {"growth": 4}, "norm": "layer",
        "activation": "gelu", "bias": True, "init": "torch", "aux_every": 0, "aux_weight": 0.3, "kernel_size": 5,
        "input_shape": [1, 40], "classes": 10, "max_state_width": 16384,
        "heads": 2, "context": 40, "mlp_ratio": 2, "placement": "pre", "vocab": 0}
    assert RunSpec(t).spec_hash == "8a9dd75a97a9065f"
    m = ModelSpec(model="cnn1d", skip="hyper", depth=3, width=8, options={"streams": 2})
    assert m.to_dict() == {
        "model": "cnn1d", "depth": 3, "width": 8, "skip": "hyper", "options": {"streams": 2}, "norm": "batch",
        "activation": "relu", "bias": True, "init": "torch", "aux_every": 0, "aux_weight": 0.3, "kernel_size": 5,
        "input_shape": [1, 40], "classes": 10, "max_state_width": 16384}
    assert RunSpec(m).spec_hash == "6956a3047049012c"
    # read as attributes; another family's option reads as its default; replace and
    # from_dict take them by name
    assert (t.heads, t.context, t.placement, m.vocab, m.heads) == (2, 40, "pre", 0, 4)
    assert t.replace(heads=4).heads == 4 and ModelSpec.from_dict(t.to_dict()) == t
    # a stored spec of before the options left the identity holds the defaults: still read
    assert ModelSpec.from_dict({**m.to_dict(), "heads": 4, "vocab": 0}) == m
    with pytest.raises(SpecError, match="^heads: only the transformer family takes it; model 'cnn1d' does not$"):
        ModelSpec.from_dict({**m.to_dict(), "heads": 2})
