"""mHC: hyper-connections whose residual mixing is kept on the doubly-stochastic manifold.

Xie et al. (DeepSeek), "mHC: Manifold-Constrained Hyper-Connections", arXiv 2512.24880,
Sec. 3. The stream is n copies x_l (n x C per token), as in hyper-connections, with

    x_{l+1} = H_res x_l + H_post^T F(H_pre x_l)                              (Eq. 3)

and the three maps computed per token from the flattened stream x' = RMSNorm(vec(x_l)):

    H~_pre = a_pre (x' phi_pre) + b_pre,   H~_post = a_post (x' phi_post) + b_post,
    H~_res = a_res mat(x' phi_res) + b_res,                                  (Eq. 5)
    H_pre = sigmoid(H~_pre),  H_post = 2 sigmoid(H~_post),  H_res = SK(H~_res)  (Eq. 6-8)

where SK is Sinkhorn-Knopp: M_0 = exp(H~_res), then columns and rows normalised to sum 1
in turn, ``iterations`` times (the paper's t_max = 20; computed with a maximum subtracted
before exp, in at least float32, see :class:`_SinkhornKnopp`). A doubly-stochastic H_res has
spectral norm <= 1 and products of such matrices stay doubly stochastic, so the composite
residual mapping over depth cannot blow up (their Fig. 3: HC's gain reaches ~3000 in a
27B model, mHC's stays ~1.6).

Init (the paper does not restate its biases' values here; these are skiplab's choice, so
that the model starts as the residual net): phi = 0 and a = 0.01, so each map starts at
its bias; b_pre = logit(1/n), so H_pre averages the copies; b_post = 0, so H_post = 1 and
every copy receives F; b_res = 0 on the diagonal and -6 off it, so H_res starts near the
identity (off-diagonal entries ~0.0025). All copies start equal and H_res's rows sum to
1, so they stay equal: the model equals the residual net at init up to float rounding
(for n = 1, H_pre = sigmoid(10) = 0.99995 rather than 1: a sigmoid cannot reach 1).
The RMSNorm has no learned scale (phi absorbs it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import compiling, over_leading_dims
from ..validate import integer
from .base import Option
from .hyper import (STREAMS, _CopiesConnection, _weighted, CopiesStrategy, layout_of_rows, read_and_mix,
                    rows_of_layout, stream_of_rows, token_rows, write_rows)

GATE_INIT = 0.01  # a_pre, a_post, a_res at init
OFF_DIAGONAL = -6.0  # b_res off the diagonal: exp(-6) ~ 0.0025 of the diagonal's weight
RMS_EPS = 1e-6


class _SinkhornKnopp(torch.autograd.Function):
    """Sinkhorn-Knopp on ``(..., n, n, T)``: T matrices with their rows at dim -3 and columns
    at -2, the tokens last, so that every normalisation sums n vectors of T numbers (in the
    tokens-first layout each sum reduced 4 contiguous numbers: 20 iterations took 5.5 ms
    against 0.6 ms here, 2,048 tokens, n = 4, one thread; issue 27).

    Stable for any finite logits (issue 27: exp(logits) overflowed float32 above about 88).
    The first iteration runs in the log domain: the columns as ``log_softmax`` (a maximum
    subtracted before ``exp``), the rows as ``softmax`` of that, which is the first
    iteration's exp -> columns -> rows exactly. After it the rows sum to 1 and every column
    to at least 1/n; each later normalisation then divides by a sum in [1/n, n] (a column
    normalisation leaves row sums in [1/n, n] when the rows summed to 1, and the other way
    round), so nothing later overflows or divides by 0.

    The backward is written by hand: the arithmetic autograd would do without its
    per-operation bookkeeping, which is most of the time for matrices this small (a training
    step of the study's depth-50 mHC MLP went from 358 to 190 ms on one thread,
    ``benchmarks/stream_step_time.py`` before and after). It keeps what autograd would keep:
    the first iteration's two results, then each normalisation's result and the sums it
    divided by. Written with ``setup_context`` so that torch.func's vmap can run it (the
    batched engine); what backward needs is returned by forward as extra outputs, as the
    torch.func docs ask (https://pytorch.org/docs/stable/notes/extending.func.html)."""

    generate_vmap_rule = True  # forward and backward are plain tensor code: vmap runs them as they are

    @staticmethod
    def forward(logits: torch.Tensor, iterations: int):
        log_cols = torch.log_softmax(logits, -3)  # columns to 1, in the log domain
        cols = log_cols.exp()
        m = torch.softmax(log_cols, -2)  # then rows to 1: iteration 1 done
        kept, sums = [cols, m], []
        for _ in range(iterations - 1):
            for dim in (-3, -2):  # columns, then rows
                s = m.sum(dim, keepdim=True)
                m = m / s
                kept.append(m)
                sums.append(s)
        return (m, *kept[:-1], *sums)  # the result, then what backward reads (kept[-1] is m)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        steps = ctx.steps = 2 * (inputs[1] - 1)
        ctx.save_for_backward(*output[1:steps + 2], output[0], *output[steps + 2:])  # kept, then sums
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)  # no zero gradients made for the 4 t_max extra outputs

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, *_):  # the extra outputs carry no gradient
        if grad is None:
            return None, None
        saved = ctx.saved_tensors
        kept, sums = saved[:ctx.steps + 2], saved[ctx.steps + 2:]
        # in the layout of the saved tensors: a gradient that arrives tokens-first (the
        # matrices are permuted after this function) made every operation below strided,
        # 8x slower than the forward (issue 27's profile)
        grad = grad.contiguous()
        for k in range(ctx.steps - 1, -1, -1):
            dim = -3 if k % 2 == 0 else -2
            out = kept[k + 2]  # out = m / s, s = m.sum(dim): dm = (g - sum(g * out, dim)) / s
            grad = (grad - (grad * out).sum(dim, keepdim=True)).div_(sums[k])
        cols, m = kept[0], kept[1]
        grad = m * (grad - (grad * m).sum(-2, keepdim=True))  # through the rows' softmax
        return grad - cols * grad.sum(-3, keepdim=True), None  # through the columns' log_softmax


def sinkhorn_by_scalings(logits: torch.Tensor, iterations: int) -> torch.Tensor:
    """:class:`_SinkhornKnopp`'s iterations on ``(..., n, n, T)`` carried as scalings, for
    torch.compile: after the first iteration (the same log-domain step, M_1), every later
    matrix is ``diag(r) M_1 diag(c)`` (a column normalisation rescales columns, a row
    normalisation rows), so each iteration computes the column scalings
    ``c = 1 / sum_i r_i M_1[i, :]`` and then the row scalings ``r = 1 / sum_j M_1[:, j] c_j``,
    vectors of n numbers per token, and the result is ``M_1 diag(c)`` with its rows divided
    by their sums, as the last row normalisation divides them. The same matrices to rounding
    (tests/test_streams.py), with plain autograd, which Inductor fuses into loops over the
    tokens where the matrix form's 2 t_max saved matrices and hand-written backward did not
    (compiled, they cost more than eager). Bounds: M_1's rows sum to 1 and its columns to at
    least 1/n, so each normalisation's sums lie in [1/n, n] as in the matrix form; after t
    iterations the scalings are within n^(2t) of 1 (4^40 ~ 1e24 for the paper's n = 4 and
    t_max = 20, inside float32's range), so nothing overflows."""
    m1 = torch.softmax(torch.log_softmax(logits, -3), -2)  # iteration 1, as _SinkhornKnopp.forward
    if iterations == 1:
        return m1
    scaled = m1  # diag(r) M_1, r = 1 after iteration 1
    for _ in range(iterations - 1):
        c = 1 / scaled.sum(-3, keepdim=True)  # the columns of diag(r) M_1 diag(c) sum to 1: (..., 1, n, T)
        mc = m1 * c
        s = mc.sum(-2, keepdim=True)  # then its rows: r = 1 / s, (..., n, 1, T)
        scaled = m1 / s
    return mc / s  # diag(r) M_1 diag(c), its rows divided by their sums as the matrix form's last step


def sinkhorn_tokens_last(logits: torch.Tensor, iterations: int) -> torch.Tensor:
    """Doubly-stochastic matrices from ``logits`` ``(..., n, n, T)`` (rows at -3, columns at
    -2, T tokens last): columns and rows normalised in turn, ``iterations`` times, rows last
    (so rows sum to 1 to rounding). At least float32 inside (float16 or bfloat16 under
    autocast computed in float32, float64 in float64); the result in the input's dtype."""
    dtype = logits.dtype
    logits = logits.to(torch.promote_types(dtype, torch.float32))  # float64 stays float64
    if compiling():
        # compiled mhc, one training step of the transformer study's model (depth 6, one
        # thread, benchmarks/stream_overhead.py --compile): see docs/streams.md, "Under --compile"
        return sinkhorn_by_scalings(logits, iterations).to(dtype)
    # Under the batched engine the seeds are one more leading dimension: one node for all
    out = over_leading_dims(lambda t: _SinkhornKnopp.apply(t, iterations)[0], logits)
    return out.to(dtype)


def sinkhorn_knopp(logits: torch.Tensor, iterations: int) -> torch.Tensor:
    """A doubly-stochastic matrix from ``logits`` (..., n, n): exp, then columns and rows
    normalised in turn, ``iterations`` times (rows last, so rows sum to 1 to rounding)."""
    n = logits.shape[-1]
    flat = logits.reshape(-1, n, n).permute(1, 2, 0)  # (n, n, T)
    return sinkhorn_tokens_last(flat.contiguous(), iterations).permute(2, 0, 1).reshape(logits.shape)


class MHC(_CopiesConnection):
    """One layer's manifold-constrained hyper-connection around ``branch``; the stream is
    ``(n, B, *layout)`` as for :class:`~skiplab.skips.hyper.HyperConnection`, channels at
    ``channel_dim`` of the layout, stored token-major. ``read`` computes the three maps once
    for all tokens (one projection, one Sinkhorn-Knopp), then ``H_pre x`` and ``H_res x`` in
    one contraction per token; ``write`` adds ``H_post^T f``."""

    # H_pre x and H_res x are one matrix product: merge FLOPs in the cost model, as for
    # hyper-connections (profiling.merge_rule); the projection x phi stays matmul (a parameter)
    products_are_merges = True

    def __init__(self, branch: nn.Module | None = None, *, channels: int, streams: int = 4,
                 channel_dim: int = 1, iterations: int = 20):
        super().__init__(branch)
        n = self.streams = integer("streams", streams, 1)
        integer("channels", channels, 1)
        integer("iterations", iterations, 1)
        self.channel_dim, self.iterations = channel_dim, iterations
        self.phi = nn.Parameter(torch.zeros(2 * n + n * n, n * channels))  # phi_pre, phi_post, phi_res stacked
        self.a = nn.Parameter(torch.full((3,), GATE_INIT))  # a_pre, a_post, a_res
        self.b_pre = nn.Parameter(torch.full((n,), math.log(1 / n) - math.log(1 - 1 / n) if n > 1 else 10.0))
        self.b_post = nn.Parameter(torch.zeros(n))
        self.b_res = nn.Parameter(OFF_DIAGONAL * (1 - torch.eye(n)))

    def projections(self, rows: torch.Tensor) -> torch.Tensor:
        """``RMSNorm(vec x_l) [phi_pre, phi_post, phi_res]`` (Eq. 5), transposed: (2n + n^2,
        tokens), from ``rows`` (tokens, n, C). The norm's scale is applied after the
        projection (``(r x) phi = r (x phi)``, r per token): a product of 2n + n^2 numbers per
        token instead of n C."""
        x = rows.reshape(rows.shape[0], -1)  # vec(x_l), (tokens, nC)
        # one reduction over x (its backward one product), where x.square().mean() took 4
        r = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1).square() / x.shape[-1] + RMS_EPS)
        # (tokens, 2n + n^2) @ ...: x's gradient comes out in x's own layout, so that the
        # bmm's gradient for the same rows adds to it without strided reads
        return (F.linear(x, self.phi) * r.unsqueeze(1)).t().contiguous()

    def maps_tokens_last(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """H_pre (n, tokens), H_post (n, tokens) and H_res (n, n, tokens) (Eq. 5-8)."""
        n = self.streams
        p = self.projections(rows)
        pre = torch.sigmoid(self.a[0] * p[:n] + self.b_pre.unsqueeze(1))
        s = torch.sigmoid(self.a[1] * p[n:2 * n] + self.b_post.unsqueeze(1))
        res = self.a[2] * p[2 * n:].view(n, n, -1) + self.b_res.unsqueeze(2)
        return pre, s + s, sinkhorn_tokens_last(res, self.iterations)  # 2 sigmoid, as a sum: nothing to keep

    def maps(self, H: torch.Tensor) -> dict[str, torch.Tensor]:
        """H_pre (B, *S, n), H_post (B, *S, n) and H_res (B, *S, n, n) per token."""
        rows, lead = token_rows(H, self.channel_dim)
        pre, post, res = self.maps_tokens_last(rows)
        return {"pre": pre.t().reshape(*lead, -1), "post": post.t().reshape(*lead, -1),
                "res": res.permute(2, 0, 1).reshape(*lead, *res.shape[:2])}

    def _read(self, H: torch.Tensor):
        rows, lead = token_rows(H, self.channel_dim)
        pre, post, res = self.maps_tokens_last(rows)
        if compiling():
            # sums of copies times weights, which Inductor fuses: it ran the bmm below, in
            # backward, as one small product per token (2,048 a sublayer), and compiled mhc-lite
            # cost more than eager mhc-lite (docs/streams.md, "Under --compile")
            copies = rows.transpose(0, 1)  # (n, tokens, C), a view
            h = _weighted(pre.unsqueeze(-1), copies)
            mixed = torch.stack([_weighted(res[j].unsqueeze(-1), copies) for j in range(self.streams)], 1)
        else:
            weights = torch.cat([pre.unsqueeze(0), res]).permute(2, 0, 1).contiguous()  # (tokens, 1 + n, n)
            h, mixed = read_and_mix(weights, rows)  # H_pre x_l and H_res x_l
        return layout_of_rows(h, lead, self.channel_dim), (mixed, post.t(), lead)

    def write(self, H: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        mixed, post, lead = self._kept(H)
        # x_{l+1} = H_res x_l + H_post^T F(H_pre x_l) (Eq. 3)
        return stream_of_rows(write_rows(mixed, post, rows_of_layout(f, self.channel_dim)), lead, self.channel_dim)

    def mixing_matrix(self, H: torch.Tensor) -> torch.Tensor:
        """H_res per token: (tokens, n, n)."""
        with torch.no_grad():
            return self.maps_tokens_last(token_rows(H, self.channel_dim)[0])[2].permute(2, 0, 1)


class MHCStrategy(CopiesStrategy):
    name = "mhc"
    color = "#332288"  # Tol's indigo
    summary = "mHC: hyper-connections with H_res projected to doubly stochastic (Sinkhorn-Knopp), H_pre, H_post >= 0"
    rule = ("x <- H_res x + H_post^T f(H_pre x), maps from RMSNorm(vec x); H_res = Sinkhorn-Knopp(exp(.)), "
            "H_pre = sigmoid, H_post = 2 sigmoid")
    source = "Xie et al. (DeepSeek), mHC, arXiv 2512.24880"
    # Sinkhorn-Knopp ends on a row normalisation, so each H_res's rows sum to 1 and so do a
    # product's: the forward gain (largest absolute row sum) is 1 to rounding, whatever
    # training does. The column sums, the backward gain, are what it leaves free.
    gain_by_construction = "forward"
    gain_reason = "each H_res's rows sum to 1: Sinkhorn-Knopp ends on a row normalisation"
    options = (STREAMS, Option("iterations", int, 20, "Sinkhorn-Knopp iterations (the paper's t_max)"))

    def connection(self, branch, site, opts, make_gate):
        return MHC(branch, streams=opts["streams"], channels=site.widths.in_width, channel_dim=site.channel_dim,
                   iterations=opts["iterations"])


MHC_STRATEGY = MHCStrategy()
