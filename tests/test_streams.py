"""The multi-tensor streams: DenseFormer's DWA, hyper-connections, mHC and mHC-lite.

Method: each is checked against a direct transcription of its paper's equations written
here, loop by loop, with the same weights (perturbed away from their init, so that every
term matters), to 1e-5; at init each model equals the residual net of the same seed;
the constraints mHC and mHC-lite promise hold (doubly stochastic H_res, non-negative
H_pre/H_post, n = 1 is the identity; mHC-lite's exactly, to 1e-6, where mHC's 20
Sinkhorn-Knopp iterations leave a gap); Sinkhorn-Knopp stays finite for logits of 1e3 and
for half-precision input; the drop-in modules work around a user's own branch; the
composite-gain diagnostic is checked against a hand product of matrices.
"""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skiplab import ModelSpec, build_model
from skiplab.gradients import GradientConfig, composite_gains, measure_gradients
from skiplab.skips import DWA, MHC, HyperConnection
from skiplab.skips import hyper as hyper_module
from skiplab.skips import mhc as mhc_module
from skiplab.skips.hyper import expand, reduce
from skiplab.skips.mhc import sinkhorn_knopp
from skiplab.skips.mhc_lite import MHCLite

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
                                                ("mhc", {}, 2e-6), ("mhc", {"streams": 3}, 2e-6),
                                                ("mhc-lite", {}, 2e-6), ("mhc-lite", {"streams": 3}, 2e-6)])
def test_equals_the_residual_net_at_init(model, skip, options, tol):
    # DenseFormer alpha_ii = 1 (Sec. 3.1); HC A_m = e_k, A_r = I, B = 1, W = 0 (Sec. 2.3);
    # mHC and mHC-lite: equal copies and rows of H_res summing to 1 keep the copies equal.
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
@pytest.mark.parametrize("elementwise", [False, True])  # eager's products, or the form taken under torch.compile
def test_hyper_matches_the_papers_equations(model, static, elementwise, monkeypatch):
    monkeypatch.setattr(hyper_module, "compiling", lambda: elementwise)
    spec = _spec("hyper", model, static=static, streams=3)
    net = build_model(spec, seed=3).eval()
    _perturb(net)
    x = _x(spec)
    with torch.no_grad():
        want = _hc_reference(net, x, 3, not static, 1)
        assert torch.allclose(net(x), want, atol=1e-5, rtol=1e-5)


def _eager_and_compiled_forms(net, x, module, monkeypatch):
    """``net(x)`` and the gradients of ``sum(net(x)^2)`` with the strategy module's eager
    forms, then with the forms it takes under torch.compile (``module.compiling`` patched)."""
    results = []
    for compiled_form in (False, True):
        monkeypatch.setattr(module, "compiling", lambda: compiled_form)
        y = net(x)
        results.append((y, torch.autograd.grad(y.square().sum(), list(net.parameters()))))
    return results


@pytest.mark.parametrize("model", list(FAMILIES))
@pytest.mark.parametrize("static", [True, False])
def test_hyper_elementwise_form_has_the_eager_gradients(model, static, monkeypatch):
    """The form taken under torch.compile (sums of copies times weights) and the eager form
    (one mm or bmm per mixing) give the same outputs and gradients, to rounding (float64)."""
    spec = _spec("hyper", model, static=static)
    net = build_model(spec, seed=3).double()
    _perturb(net)
    x = _x(spec).double()
    (y0, g0), (y1, g1) = _eager_and_compiled_forms(net, x, hyper_module, monkeypatch)
    assert torch.allclose(y1, y0, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g0):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max() + 1e-12


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # Inductor's, as test_train_options
@pytest.mark.parametrize("skip,options", [("hyper", {"static": True}), ("hyper", {}), ("mhc", {"iterations": 5}),
                                          ("mhc-lite", {})])
def test_compiled_streams_agree_with_eager(skip, options):
    """torch.compile (Inductor on the CPU) of a hyper, mHC or mHC-lite transformer, which
    takes the element-wise forms (and mHC's Sinkhorn-Knopp by scalings), against eager:
    logits and gradients to 1e-4 relative."""
    spec = ModelSpec(model="transformer", skip=skip, depth=2, width=8, heads=2, context=6, vocab=11, classes=11,
                     options=options)
    net = build_model(spec, seed=0)
    _perturb(net)
    x = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0))
    outs = []
    for fn in (net, torch.compile(net)):
        y = fn(x)
        outs.append((y, torch.autograd.grad(y.square().mean(), list(net.parameters()))))
    (y0, g0), (y1, g1) = outs
    assert (y1 - y0).abs().max() <= 1e-4 * y0.abs().max()
    for a, b in zip(g1, g0):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-7


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
@pytest.mark.parametrize("compiled_form", [False, True])  # eager's, or the forms taken under torch.compile
def test_mhc_matches_the_papers_equations(model, compiled_form, monkeypatch):
    monkeypatch.setattr(mhc_module, "compiling", lambda: compiled_form)
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


@pytest.mark.parametrize("skip", ["mhc", "mhc-lite"])
@pytest.mark.parametrize("model", list(FAMILIES))
def test_mhc_compiled_forms_have_the_eager_gradients(skip, model, monkeypatch):
    """The forms taken under torch.compile (element-wise mixing; for mhc, Sinkhorn-Knopp
    carried as row and column scalings) and the eager forms (one bmm per read, the
    matrices normalised in turn with a hand-written backward) give the same outputs and
    gradients, to rounding (float64)."""
    spec = _spec(skip, model)
    net = build_model(spec, seed=3).double()
    _perturb(net)
    with torch.no_grad():
        for block in net.blocks:
            block.a.fill_(2.0)  # mixing matrices far from the identity: Sinkhorn-Knopp's iterations matter
    x = _x(spec).double()
    (y0, g0), (y1, g1) = _eager_and_compiled_forms(net, x, mhc_module, monkeypatch)
    assert torch.allclose(y1, y0, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g0):
        assert (a - b).abs().max() <= 1e-9 * b.abs().max() + 1e-12


@pytest.mark.parametrize("scalings", [False, True])  # the matrix form (eager) or the scalings (compiled)
def test_sinkhorn_knopp_is_finite_for_large_logits_and_half_precision(scalings, monkeypatch):
    monkeypatch.setattr(mhc_module, "compiling", lambda: scalings)
    # exp(logits) overflows float32 above ~88 and float16 above ~11: a maximum is
    # subtracted before exp (the first iteration runs as log_softmax, softmax)
    g = torch.Generator().manual_seed(0)
    big = 1e3 * torch.randn(64, 4, 4, generator=g)
    big[0] = torch.tensor([[1e3, 1e3, -1e3, 0.0], [-1e3, -1e3, -1e3, -1e3], [1e3, -1e3, 1e3, -1e3], [0.0, 0.0, 0.0, 1e3]])
    big.requires_grad_()
    m = sinkhorn_knopp(big, 20)
    assert torch.isfinite(m).all() and (m >= 0).all()
    assert torch.allclose(m.sum(-1), torch.ones(64, 4), atol=1e-5)  # rows: the last normalisation
    m.pow(2).sum().backward()
    assert torch.isfinite(big.grad).all()
    # the stable first iteration changes no value where the plain one is finite (1e-6)
    small = torch.randn(5, 3, 3, generator=g)
    assert torch.allclose(sinkhorn_knopp(small, 7), _sinkhorn_reference(small, 7), atol=1e-6)
    for dtype in (torch.float16, torch.bfloat16):  # float32 inside, the result in the input's dtype
        half = (20 * torch.randn(8, 4, 4, generator=g)).to(dtype)
        out = sinkhorn_knopp(half, 20)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert torch.allclose(out.float(), sinkhorn_knopp(half.float(), 20), atol=1e-2)  # the dtype's rounding
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a model under autocast: finite, doubly stochastic rows
        spec = _spec("mhc", "mlp")
        net = build_model(spec, seed=0)
        _perturb(net)
        with torch.no_grad():
            net.blocks[0].a.mul_(1e4)  # logits in the thousands
        out = net(_x(spec))
    assert torch.isfinite(out).all()


def _permutations(n):
    """The n x n permutation matrices in itertools' order, P[i, sigma(i)] = 1, built from
    the identity's rows."""
    return [torch.eye(n)[list(sigma)] for sigma in itertools.permutations(range(n))]


def _mhc_lite_reference(model, x, n, channel_dim):
    """Yang and Gao (arXiv 2601.05732): mHC's Eq. 3 and 5-7, token by token, with
    H_res = sum_k softmax(a_res x' phi_res + b_res)_k P_k over the n! permutations."""
    h0 = model.stem(model.description.family.prepare_input(x, model.spec))
    shape = h0.movedim(channel_dim, -1).shape
    C = shape[-1]
    perms = _permutations(n)
    xs = torch.stack([h0.movedim(channel_dim, -1).reshape(-1, C)] * n, 1)  # (tokens, n, C)
    for block in model.blocks:
        v = xs.reshape(xs.shape[0], n * C)  # vec(x_l)
        v = v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)  # RMSNorm
        phi = block.phi  # rows: phi_pre (n), phi_post (n), phi_res (n!)
        pre = torch.sigmoid(block.a[0] * (v @ phi[:n].T) + block.b_pre)
        post = 2 * torch.sigmoid(block.a[1] * (v @ phi[n:2 * n].T) + block.b_post)
        weights = torch.softmax(block.a[2] * (v @ phi[2 * n:].T) + block.b_res, -1)  # (tokens, n!)
        h_res = sum(weights[:, k, None, None] * P for k, P in enumerate(perms))
        h_in = torch.einsum("tk,tkc->tc", pre, xs)
        f = block.branch(h_in.reshape(shape).movedim(-1, channel_dim)).movedim(channel_dim, -1).reshape(-1, C)
        xs = torch.einsum("tij,tjc->tic", h_res, xs) + post[:, :, None] * f[:, None, :]
    return model.head(xs.mean(1).reshape(shape).movedim(-1, channel_dim))


@pytest.mark.parametrize("model", list(FAMILIES))
@pytest.mark.parametrize("streams", [3, 4])
@pytest.mark.parametrize("compiled_form", [False, True])
def test_mhc_lite_matches_the_papers_equations(model, streams, compiled_form, monkeypatch):
    monkeypatch.setattr(mhc_module, "compiling", lambda: compiled_form)
    spec = _spec("mhc-lite", model, streams=streams)
    net = build_model(spec, seed=4).eval()
    _perturb(net)
    assert net.blocks[0].phi.shape == (2 * streams + math.factorial(streams), streams * 6)
    x = _x(spec)
    with torch.no_grad():
        want = _mhc_lite_reference(net, x, streams, 1)
        assert torch.allclose(net(x), want, atol=1e-5, rtol=1e-5)


def test_mhc_lite_is_doubly_stochastic_by_construction_where_mhc_is_not():
    # the same stream through one mHC-lite and one mHC layer with weights far from init
    # (large logits: the mixing matrices far from the identity)
    g = torch.Generator().manual_seed(2)
    lite = MHCLite(nn.Identity(), channels=6, streams=4, channel_dim=-1)
    mhc = MHC(nn.Identity(), channels=6, streams=4, channel_dim=-1)
    with torch.no_grad():
        for layer in (lite, mhc):
            layer.phi.copy_(torch.randn(layer.phi.shape, generator=g))
            layer.a.fill_(3.0)
    H = expand(torch.randn(50, 6, generator=g), 4) + torch.randn(4, 50, 6, generator=g)
    res = lite.maps(H)["res"]
    assert (res >= 0).all()
    rows, cols = (res.sum(-1) - 1).abs().max(), (res.sum(-2) - 1).abs().max()
    assert rows < 1e-6 and cols < 1e-6  # exact to float32 rounding
    sk = mhc.maps(H)["res"]  # Sinkhorn-Knopp at the paper's t_max = 20
    gap = (sk.sum(-2) - 1).abs().max()
    assert gap > 1e-4 > 100 * cols  # its columns are left off
    one = MHCLite(nn.Identity(), channels=6, streams=1, channel_dim=-1).maps(H[:1])["res"]
    assert torch.equal(one, torch.ones_like(one))  # n = 1: the identity


def test_mhc_lite_starts_where_mhc_starts():
    spec = _spec("mhc-lite")
    lite, mhc = build_model(spec, seed=0), build_model(spec.replace(skip="mhc"), seed=0)
    H = expand(lite.stem(_x(spec)), 4)
    assert torch.allclose(lite.blocks[0].maps(H)["res"], mhc.blocks[0].maps(H)["res"], atol=1e-6)
    with pytest.raises(ValueError, match="n <= 6"):
        spec.replace(options={"streams": 7}).describe()


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


@pytest.mark.parametrize("make", [
    lambda: HyperConnection(nn.Linear(8, 8), channels=8, streams=3, channel_dim=-1, dynamic=False),
    lambda: HyperConnection(nn.Linear(8, 8), channels=8, streams=3, channel_dim=-1),
    lambda: MHC(nn.Linear(8, 8), channels=8, streams=3, channel_dim=-1),
    lambda: MHCLite(nn.Linear(8, 8), channels=8, streams=3, channel_dim=-1),
], ids=["static", "dynamic", "mhc", "mhc-lite"])
def test_connections_read_any_memory_layout_of_the_stream(make):
    # each writes the layout its own products read fastest (stream-major for static
    # hyper, token-major for the others); given the other one it must compute the same
    g = torch.Generator().manual_seed(3)
    conn = make()
    _perturb(SimpleNamespace(blocks=[conn]))  # the strategy's own parameters off their init
    H = torch.randn(3, 2, 5, 8, generator=g)  # (n, B, T, C), stream-major
    tokens_major = H.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)  # same values, (B, T, n, C) memory
    with torch.no_grad():
        assert torch.allclose(conn(H), conn(tokens_major), atol=1e-6)


# -- the composite-gain diagnostic --------------------------------------------------------
def test_composite_gains_against_a_hand_product():
    a = torch.tensor([[[2.0, -1.0], [0.5, 0.5]]])
    b = torch.tensor([[[1.0, 3.0], [0.0, 1.0]]])
    forward, backward = composite_gains([a, b])
    prod = b[0] @ a[0]  # H_2 H_1
    assert forward == [3.0, float(prod.abs().sum(1).max())]
    assert backward == [2.5, float(prod.abs().sum(0).max())]


def test_gradients_report_composite_gain_for_hyper_mhc_and_mhc_lite():
    from skiplab.datasets import Dataset
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=g)
    data = Dataset("tiny", x, x[:, :5].argmax(1), x, x[:, :5].argmax(1), classes=5)
    config = GradientConfig(seeds=1, batches=1, batch_size=32, steps=6, checkpoints=2, lr=0.05)
    for skip in ("hyper", "mhc", "mhc-lite"):
        d = measure_gradients(_spec(skip).replace(norm="batch"), data, config).to_dict()
        assert d["composite_gain_forward"] == pytest.approx([1.0] * 4)  # A_r = I; H_res ~ I at init
        after = d["trajectory"][-1]["composite_gain_forward"]
        assert len(after) == 4 and all(math.isfinite(v) for v in after)
        if skip != "hyper":  # doubly stochastic products: every row sums to 1, whatever training did
            assert after == pytest.approx([1.0] * 4, abs=1e-3)
        if skip == "mhc-lite":  # and every column, exactly: the backward gain too
            assert d["trajectory"][-1]["composite_gain_backward"] == pytest.approx([1.0] * 4, abs=1e-5)
    d = measure_gradients(_spec("add").replace(norm="batch"), data, config).to_dict()
    assert d["composite_gain_forward"] is None


def test_a_trained_hyper_run_stores_its_composite_gain():
    from skiplab.datasets import Dataset
    from skiplab.run.config import RunSpec, TrainConfig
    from skiplab.run.loop import train_run
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


def test_a_dwa_given_another_block_index_than_its_place_raises_not_averages_wrongly():
    """DWA(block=i) averages X_0..X_i: given a stream with another number of outputs, the sum
    once dropped the block's own output (too few weights: every DWA left at block=1) or
    weighted zeros alone (too many), in silence. The right indices average as the paper's Y_i."""
    x = torch.randn(2, 4)
    first, second = DWA(nn.Linear(4, 4)), DWA(nn.Linear(4, 4))  # both left at block=1
    with pytest.raises(ValueError, match=r"DWA\(block=1\) averages X_0..X_1, but its stream holds 3 outputs"):
        second(first(DWA.expand(x)))
    with pytest.raises(ValueError, match=r"DWA\(block=3\) .* holds 2 outputs"):
        DWA(nn.Linear(4, 4), block=3)(DWA.expand(x))
    with pytest.raises(ValueError, match="block: must be an integer >= 1, got 0"):
        DWA(nn.Linear(4, 4), block=0)
    first, second = DWA(nn.Linear(4, 4), block=1), DWA(nn.Linear(4, 4), block=2)
    outputs, y = second(first(DWA.expand(x)))
    torch.testing.assert_close(y, outputs[-1], rtol=0, atol=0)  # alpha_ii = 1, the rest 0 at init: Y_2 = X_2


def _stream_benchmark(monkeypatch):
    """benchmarks/stream_overhead.py as a module."""
    import importlib.util
    import sys
    from pathlib import Path
    path = Path(__file__).parent.parent / "benchmarks" / "stream_overhead.py"
    spec = importlib.util.spec_from_file_location("stream_overhead", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "stream_overhead", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("argv, message", [
    (["--width", "30"], "--width: must be a positive multiple of the 4 heads, got 30"),
    (["--threads", "1,x"], "--threads: expected positive integers"),
    (["--depths", "0"], "--depths: expected positive integers"),
    (["--rows", "hyper,foo"], "--rows: foo not among the rows"),
    (["--warmup", "0"], "--warmup must be >= 1"),
    (["--profile", "foo"], "--profile: foo not among the rows"),
])
def test_stream_overhead_benchmark_refuses_bad_flags(monkeypatch, capsys, argv, message):
    """Each bad flag: one error line and exit code 2, before any model is built."""
    bench = _stream_benchmark(monkeypatch)
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]


def test_stream_overhead_benchmark_quick(monkeypatch, capsys):
    """benchmarks/stream_overhead.py --quick: one row per skiplab strategy, and the peer
    package's rows only when it imports (here made absent, as on a machine without it).
    The shape of the output only: no timing is checked."""
    bench = _stream_benchmark(monkeypatch)
    monkeypatch.setattr(bench, "peer_package", lambda: None)
    result = bench.main(["--quick", "--threads", "1", "--json"])
    assert result["peer"] is None and [run["threads"] for run in result["runs"]] == [1]
    rows = result["runs"][0]["rows"]
    assert [r["row"] for r in rows] == ["add", "dwa", "hyper", "hyper static", "mhc", "mhc-lite", "copies floor"]
    assert rows[0]["x_add"] == 1.0 and all(r["ms_per_step"] > 0 and r["x_add_cpu"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert '"row": "mhc-lite"' in printed
    assert all(r["x_add_same_mode"] == r["x_add"] for r in rows)  # eager rows: their mode's add is add
    # one repeat (--quick): the per-repeat ratio range is that repeat's ratio, add's exactly 1
    assert rows[0]["x_add_same_mode_range"] == [1.0, 1.0]
    assert all(lo == hi == r["x_add"] for r in rows for lo, hi in [r["x_add_same_mode_range"]])
    # the arithmetic column: exact counts (skiplab.profile), so no tolerance; the dynamic
    # weights' projection is work the static form does not do
    flops = {r["row"]: r["x_add_flops"] for r in rows}
    assert flops["add"] == 1.0 and flops["hyper"] > flops["hyper static"] > 1.0
    assert flops["mhc"] > flops["hyper"] and flops["mhc-lite"] > 1.0
    # --compile adds each skiplab row again, its loss function under torch.compile (here a
    # stand-in that records what it was given: the wiring, not the compiler, is tested)
    given = []
    monkeypatch.setattr(torch, "compile", lambda fn: given.append(fn) or fn)
    labels = [label for label, _ in bench.rows_for(1, bench.QUICK, None, {"hyper"}, compiled=True)]
    assert labels == ["add", "hyper", "add compiled", "hyper compiled"] and len(given) == 2


def test_stream_overhead_times_mhc_at_one_iteration_only_when_named(monkeypatch):
    """The decomposition row (mhc, 1 Sinkhorn-Knopp iteration) is not in a default run; named
    in --rows, it is mhc's model with iterations=1, and nothing else differs from mhc."""
    bench = _stream_benchmark(monkeypatch)
    assert "mhc one iteration" not in [label for label, _ in bench.rows_for(1, bench.QUICK, None)]
    rows = dict(bench.rows_for(1, bench.QUICK, None, {"mhc", "mhc one iteration"}))
    assert list(rows) == ["add", "mhc", "mhc one iteration"]
    one, twenty = rows["mhc one iteration"].model, rows["mhc"].model
    assert [m.iterations for m in one.modules() if isinstance(m, MHC)] == [1, 1]  # each sublayer of the 1 block
    assert [m.iterations for m in twenty.modules() if isinstance(m, MHC)] == [20, 20]
    for a, b in zip(one.state_dict().values(), twenty.state_dict().values()):
        assert torch.equal(a, b)  # the same weights: seed 0, the same spec but for the option


def test_stream_overhead_floor_row_computes_what_add_computes(monkeypatch):
    """The benchmark's reference row carries n copies with no mixing: every copy receives
    every f, so each copy is add's stream and the model computes add's function; its time
    is the branches' work plus the copies' alone (a floor, not a strategy)."""
    bench = _stream_benchmark(monkeypatch)
    spec = bench.spec_for("add", {}, 2, bench.QUICK)
    add, floor = build_model(spec, seed=0), bench.CopiesFloor(build_model(spec, seed=0))
    x = torch.randint(0, bench.VOCAB, (3, bench.QUICK.context), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(floor(x), add(x), rtol=1e-5, atol=1e-6)  # the copies' mean rounds
    assert sum(p.numel() for p in floor.parameters()) == sum(p.numel() for p in add.parameters())


# Per sample, transformer depth 6, width 64, vocab 103 (the README's cost table). Stream
# mixing is a merge (skiplab.profiling.merge_rule, products_are_merges): hyper's figures are
# what they were when the mixing was written element-wise (before issue 27's one contraction
# per layer). mHC's merge was 3,620,608 then; 3,005,440 now, because the rewrite itself does
# less merge arithmetic: its RMSNorm is one vector_norm (not a merge: 513 per token and
# sublayer fewer), the norm's scale comes after the projection (24 products instead of 256:
# 232 fewer), Sinkhorn-Knopp's first iteration is log_softmax/softmax (56 fewer):
# (513 + 232 + 56) x 64 tokens x 12 sublayers = 615,168.
STREAM_COSTS = {"hyper": (47_243_264, 2_166_784), "mhc": (54_321_152, 3_005_440), "mhc-lite": (57_466_880, 2_784_256)}


@pytest.mark.parametrize("skip", list(STREAM_COSTS))
def test_stream_mixing_is_counted_as_merge_flops(skip):
    from skiplab.cost import model_cost
    c = model_cost(ModelSpec(model="transformer", skip=skip, depth=6, width=64, vocab=103, classes=103))
    assert (c["flops"]["matmul"], c["flops"]["merge"]) == STREAM_COSTS[skip]
    assert c["concat_bytes"] == 0  # stacking the mixing's operands is no concatenation


def _fused_read_benchmark(monkeypatch):
    """benchmarks/fused_read.py as a module (it imports stream_overhead.py beside it)."""
    import importlib.util
    import sys
    from pathlib import Path
    _stream_benchmark(monkeypatch)
    path = Path(__file__).parent.parent / "benchmarks" / "fused_read.py"
    spec = importlib.util.spec_from_file_location("fused_read", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fused_read", bench)
    spec.loader.exec_module(bench)
    return bench


def test_fused_read_benchmark_agrees_with_skiplab(monkeypatch, capsys):
    """benchmarks/fused_read.py --quick: its C kernel gives HyperConnection's read, values
    and every gradient, away from init, and the model with fused reads trains as hyper
    does. Skipped where no C compiler builds it (the benchmark then exits 2, tested below)."""
    import tempfile
    from pathlib import Path
    bench = _fused_read_benchmark(monkeypatch)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            bench.compile_kernel(Path(tmp))
        except bench.Unavailable as e:  # a machine without a C compiler (or one that fails)
            pytest.skip(str(e))
    result = bench.main(["--quick"])
    assert result["largest_relative_error"] < 1e-5
    assert result["loss_difference"] < 1e-5
    assert set(result["x_add"]) == {"add", "hyper", "hyper, read fused in C"}
    assert "values and gradients agree" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--depth", "0"], "--threads, --repeats and --depth must be >= 1"),
    (["--width", "5000"], "--width in 1..4096"),
    (["--width", "30"], "--width: must be a multiple of the model's 4 heads, got 30"),
])
def test_fused_read_benchmark_refuses_bad_flags(monkeypatch, capsys, argv, message):
    """Each bad flag: one error line and exit code 2, before anything is compiled."""
    bench = _fused_read_benchmark(monkeypatch)
    monkeypatch.setattr(bench, "compile_kernel", lambda workdir: pytest.fail("compiled before the flags were checked"))
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]


def test_fused_read_benchmark_without_compiler_exits_2(monkeypatch, capsys):
    bench = _fused_read_benchmark(monkeypatch)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as e:
        bench.main(["--quick"])
    assert e.value.code == 2 and "no C compiler found" in capsys.readouterr().err
