"""The multi-tensor streams: DenseFormer's DWA, hyper-connections and mHC.

Method: each is checked against a direct transcription of its paper's equations written
here, loop by loop, with the same weights (perturbed away from their init, so that every
term matters), to 1e-5; at init each model equals the residual net of the same seed;
the constraints mHC promises hold (doubly stochastic H_res, non-negative H_pre/H_post,
n = 1 is the identity); the drop-in modules work around a user's own branch; the
composite-gain diagnostic is checked against a hand product of matrices.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skiplab import ModelSpec, build_model
from skiplab.gradients import GradientConfig, composite_gains, measure_gradients
from skiplab.skips import DWA, MHC, HyperConnection
from skiplab.skips.hyper import expand, reduce
from skiplab.skips.mhc import sinkhorn_knopp

FAMILIES = {"mlp": (12,), "cnn1d": (2, 9), "cnn2d": (2, 5, 4)}


def _spec(skip, model="mlp", **options):
    return ModelSpec(model=model, skip=skip, depth=4, width=6, norm="layer", input_shape=FAMILIES[model],
                     classes=5, kernel_size=3, options=options)


def _perturb(model, seed=0):
    """Move every strategy parameter (not the branches') away from its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            for name, p in block.named_parameters(recurse=False):
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def _x(spec, n=7):
    return torch.randn(n, *spec.input_shape, generator=torch.Generator().manual_seed(1))


# -- at init: the residual net ------------------------------------------------------------
@pytest.mark.parametrize("model", list(FAMILIES))
@pytest.mark.parametrize("skip, options, tol", [("dwa", {}, 0.0), ("hyper", {}, 0.0), ("hyper", {"static": True}, 0.0),
                                                ("mhc", {}, 2e-6), ("mhc", {"streams": 3}, 2e-6)])
def test_equals_the_residual_net_at_init(model, skip, options, tol):
    # DenseFormer alpha_ii = 1 (Sec. 3.1); HC A_m = e_k, A_r = I, B = 1, W = 0 (Sec. 2.3);
    # mHC: equal copies and rows of H_res summing to 1 keep the copies equal.
    spec = _spec(skip, model, **options)
    x = _x(spec)
    want = build_model(spec.replace(skip="add", options={}), seed=5)(x)
    got = build_model(spec, seed=5)(x)
    assert (got - want).abs().max().item() <= tol


# -- DenseFormer ----------------------------------------------------------------------------
def test_dwa_matches_the_papers_equations():
    spec = _spec("dwa")
    model = build_model(spec, seed=2).eval()
    _perturb(model)
    x = _x(spec)
    with torch.no_grad():
        X = [model.stem(x)]  # X_0
        Y = X[0]  # Y_0 = X_0
        for i, block in enumerate(model.blocks, start=1):
            X.append(Y + block.branch(Y))  # X_i = B_i(Y_{i-1}), a residual block
            alpha = block.alpha
            assert alpha.shape == (i + 1,)
            Y = sum(alpha[j] * X[j] for j in range(i + 1))  # Y_i = sum_j alpha_{i,j} X_j
        want = model.head(Y)
        assert torch.allclose(model(x), want, atol=1e-5, rtol=1e-5)


def test_dwa_parameters_are_d_times_d_plus_3_over_2():
    # Pagliardini et al.: sum_{i=1..d} (i + 1) = d (d + 3) / 2 extra scalars
    for d in (1, 4, 10):
        extra = sum(p.numel() for b in build_model(_spec("dwa").replace(depth=d)).blocks for n, p in
                    b.named_parameters(recurse=False))
        assert extra == d * (d + 3) // 2


# -- hyper-connections --------------------------------------------------------------------
def _hc_reference(model, x, n, dynamic, channel_dim):
    """Zhu et al. Eq. 3-5 (static) and 10-13 (dynamic), copy by copy, token by token."""
    h0 = model.stem(model.description.family.prepare_input(x, model.spec))
    H = [h0.clone() for _ in range(n)]  # n copies
    for block in model.blocks:
        C = h0.shape[channel_dim]

        def per_token(t):  # (B, C, *S) -> (tokens, C)
            return t.movedim(channel_dim, -1).reshape(-1, C)
        rows = [per_token(h) for h in H]  # n x (tokens, C)
        T = rows[0].shape[0]
        a_m = block.a_m.expand(T, n)
        a_r = block.a_r.expand(T, n, n)
        b = block.b.expand(T, n)
        if dynamic:
            bar = [F.layer_norm(r, (C,)) for r in rows]
            w = block.w  # rows: W_m, W_r (n of them), W_b
            a_m = torch.stack([block.s_a * torch.tanh(bar[k] @ w[0]) for k in range(n)], 1) + block.a_m
            a_r = torch.stack([torch.stack([block.s_a * torch.tanh(bar[k] @ w[1 + j]) for j in range(n)], 1)
                               for k in range(n)], 1) + block.a_r  # [t, k, j] = (H_bar W_r)[k, j]
            b = torch.stack([block.s_b * torch.tanh(bar[k] @ w[n + 1]) for k in range(n)], 1) + block.b
        h_in = sum(a_m[:, k:k + 1] * rows[k] for k in range(n))  # A_m^T H
        shape = h0.movedim(channel_dim, -1).shape
        f = per_token(block.branch(h_in.reshape(shape).movedim(-1, channel_dim)))
        new = [sum(a_r[:, k, j:j + 1] * rows[k] for k in range(n)) + b[:, j:j + 1] * f for j in range(n)]
        H = [r.reshape(shape).movedim(-1, channel_dim) for r in new]  # A_r^T H + B^T T(h_in)
    return model.head(sum(H) / n)


@pytest.mark.parametrize("model", list(FAMILIES))
@pytest.mark.parametrize("static", [True, False])
def test_hyper_matches_the_papers_equations(model, static):
    spec = _spec("hyper", model, static=static, streams=3)
    net = build_model(spec, seed=3).eval()
    _perturb(net)
    x = _x(spec)
    with torch.no_grad():
        want = _hc_reference(net, x, 3, not static, 1)
        assert torch.allclose(net(x), want, atol=1e-5, rtol=1e-5)


def test_hyper_reads_copy_k_mod_n_at_init():
    net = build_model(_spec("hyper", streams=3).replace(depth=5))
    assert [int(b.a_m.argmax()) for b in net.blocks] == [0, 1, 2, 0, 1]
    assert all(torch.equal(b.a_r, torch.eye(3)) and torch.equal(b.b, torch.ones(3)) for b in net.blocks)


# -- mHC --------------------------------------------------------------------------------
def _sinkhorn_reference(logits, iterations):
    """Sinkhorn-Knopp as the paper states it: M_0 = exp(.), then columns and rows to 1."""
    m = logits.exp()
    for _ in range(iterations):
        n = m.shape[-1]
        m = torch.stack([m[..., :, j] / m[..., :, j].sum(-1, keepdim=True) for j in range(n)], -1)
        m = torch.stack([m[..., i, :] / m[..., i, :].sum(-1, keepdim=True) for i in range(n)], -2)
    return m


def _mhc_reference(model, x, n, iterations, channel_dim):
    """Xie et al. Eq. 3 and 5-8, token by token: x_{l+1} = H_res x_l + H_post^T F(H_pre x_l)."""
    h0 = model.stem(model.description.family.prepare_input(x, model.spec))
    shape = h0.movedim(channel_dim, -1).shape
    C = shape[-1]
    xs = torch.stack([h0.movedim(channel_dim, -1).reshape(-1, C)] * n, 1)  # (tokens, n, C)
    for block in model.blocks:
        v = xs.reshape(xs.shape[0], n * C)  # vec(x_l)
        v = v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)  # RMSNorm
        phi = block.phi  # rows: phi_pre (n), phi_post (n), phi_res (n^2)
        pre = block.a[0] * (v @ phi[:n].T) + block.b_pre
        post = block.a[1] * (v @ phi[n:2 * n].T) + block.b_post
        res = block.a[2] * (v @ phi[2 * n:].T).reshape(-1, n, n) + block.b_res
        h_pre, h_post, h_res = torch.sigmoid(pre), 2 * torch.sigmoid(post), _sinkhorn_reference(res, iterations)
        h_in = torch.einsum("tk,tkc->tc", h_pre, xs)
        f = block.branch(h_in.reshape(shape).movedim(-1, channel_dim)).movedim(channel_dim, -1).reshape(-1, C)
        xs = torch.einsum("tij,tjc->tic", h_res, xs) + h_post[:, :, None] * f[:, None, :]
    out = xs.mean(1).reshape(shape).movedim(-1, channel_dim)
    return model.head(out)


@pytest.mark.parametrize("model", list(FAMILIES))
def test_mhc_matches_the_papers_equations(model):
    spec = _spec("mhc", model, streams=3, iterations=7)
    net = build_model(spec, seed=4).eval()
    _perturb(net)
    x = _x(spec)
    with torch.no_grad():
        want = _mhc_reference(net, x, 3, 7, 1)
        assert torch.allclose(net(x), want, atol=1e-5, rtol=1e-5)


def test_mhc_maps_obey_their_constraints():
    spec = _spec("mhc", streams=4)
    net = build_model(spec, seed=1)
    _perturb(net, seed=3)
    block = net.blocks[1]
    H = expand(net.stem(_x(spec)), 4) + 0.1 * torch.randn(4, 7, 6)
    m = block.maps(H)
    res = m["res"]
    assert (res >= 0).all() and (m["pre"] >= 0).all() and (m["post"] >= 0).all() and (m["post"] <= 2).all()
    assert torch.allclose(res.sum(-1), torch.ones(7, 4), atol=1e-6)  # rows: exact after the last step
    # Columns: to Sinkhorn's convergence, which is slow for near-diagonal matrices (the
    # reason the paper's composite gain reaches ~1.6 rather than 1): within 5% at t_max = 20,
    # and closer with more iterations.
    col = (res.sum(-2) - 1).abs().max()
    block.iterations = 200
    assert col < 0.05 and (block.maps(H)["res"].sum(-2) - 1).abs().max() < col / 2
    assert torch.linalg.matrix_norm(res, ord=2).max() <= 1 + col  # doubly stochastic => spectral norm <= 1
    one = sinkhorn_knopp(torch.randn(5, 1, 1), 20)
    assert torch.allclose(one, torch.ones(5, 1, 1))  # n = 1: the identity


# -- drop-in use --------------------------------------------------------------------------
def test_drop_in_modules_wrap_a_users_branch():
    x = torch.randn(2, 5, 8)  # (B, T, C): channels last, as a transformer holds them
    hc = HyperConnection(nn.Linear(8, 8), streams=4, layer=0, channels=8, channel_dim=-1)
    mhc = MHC(nn.Linear(8, 8), streams=4, channels=8, channel_dim=-1)
    H = expand(x, 4)
    out = reduce(mhc(hc(H)))
    assert out.shape == x.shape
    out.sum().backward()
    assert hc.a_r.grad is not None and mhc.phi.grad is not None
    dwa = DWA(nn.Linear(8, 8), block=1)
    outputs, y = dwa(DWA.expand(x))
    assert len(outputs) == 2 and torch.allclose(y, x + dwa.branch(x))  # alpha = (0, 1) at init


# -- the composite-gain diagnostic --------------------------------------------------------
def test_composite_gains_against_a_hand_product():
    a = torch.tensor([[[2.0, -1.0], [0.5, 0.5]]])
    b = torch.tensor([[[1.0, 3.0], [0.0, 1.0]]])
    forward, backward = composite_gains([a, b])
    prod = b[0] @ a[0]  # H_2 H_1
    assert forward == [3.0, float(prod.abs().sum(1).max())]
    assert backward == [2.5, float(prod.abs().sum(0).max())]


def test_gradients_report_composite_gain_for_hyper_and_mhc():
    from skiplab.datasets import Dataset
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=g)
    data = Dataset("tiny", x, x[:, :5].argmax(1), x, x[:, :5].argmax(1), classes=5)
    config = GradientConfig(seeds=1, batches=1, batch_size=32, steps=6, checkpoints=2, lr=0.05)
    for skip in ("hyper", "mhc"):
        d = measure_gradients(_spec(skip).replace(norm="batch"), data, config).to_dict()
        assert d["composite_gain_forward"] == pytest.approx([1.0] * 4)  # A_r = I; H_res ~ I at init
        after = d["trajectory"][-1]["composite_gain_forward"]
        assert len(after) == 4 and all(math.isfinite(v) for v in after)
        if skip == "mhc":  # doubly stochastic products: every row sums to 1, whatever training did
            assert after == pytest.approx([1.0] * 4, abs=1e-3)
    d = measure_gradients(_spec("add").replace(norm="batch"), data, config).to_dict()
    assert d["composite_gain_forward"] is None


def test_a_trained_hyper_run_stores_its_composite_gain():
    from skiplab.datasets import Dataset
    from skiplab.train import RunSpec, TrainConfig, train_run
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=g)
    data = Dataset("tiny", x, x[:, :5].argmax(1), x, x[:, :5].argmax(1), classes=5)
    r = train_run(RunSpec(_spec("hyper"), TrainConfig(epochs=2, batch_size=32, evals=1), "tiny", seed=0), data)
    gain = r.diagnostics["composite_gain_forward"]
    assert math.isfinite(gain) and gain != 1.0  # A_r moved off the identity in training
    assert train_run(RunSpec(_spec("add"), TrainConfig(epochs=1, batch_size=32, evals=1), "tiny", seed=0),
                     data).diagnostics == {}


def test_options_have_one_canonical_form():
    # A default spelled out names the same model (same spec, same run identity) as none.
    assert _spec("hyper", streams=4, static=False) == _spec("hyper") and _spec("hyper").options == ()
    assert _spec("mhc", streams=3).options == (("streams", 3),)
    assert ModelSpec(skip="dense", width=8, options=(("growth", 8),)).options == (("growth", 8),)  # kept: tied to width


@pytest.mark.parametrize("make, message", [
    (lambda: HyperConnection(nn.Linear(8, 8), channels=8, streams=0), "streams: must be an integer >= 1, got 0"),
    (lambda: MHC(nn.Linear(8, 8), channels=8, iterations=0), "iterations: must be an integer >= 1, got 0"),
    (lambda: MHC(nn.Linear(8, 8), channels=0), "channels: must be an integer >= 1, got 0"),
])
def test_drop_in_modules_check_their_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
