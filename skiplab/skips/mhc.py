"""mHC: hyper-connections whose residual mixing is kept on the doubly-stochastic manifold.

Xie et al. (DeepSeek), "mHC: Manifold-Constrained Hyper-Connections", arXiv 2512.24880,
Sec. 3. The stream is n copies x_l (n x C per token), as in hyper-connections, with

    x_{l+1} = H_res x_l + H_post^T F(H_pre x_l)                              (Eq. 3)

and the three maps computed per token from the flattened stream x' = RMSNorm(vec(x_l)):

    H~_pre = a_pre (x' phi_pre) + b_pre,   H~_post = a_post (x' phi_post) + b_post,
    H~_res = a_res mat(x' phi_res) + b_res,                                  (Eq. 5)
    H_pre = sigmoid(H~_pre),  H_post = 2 sigmoid(H~_post),  H_res = SK(H~_res)  (Eq. 6-8)

where SK is Sinkhorn-Knopp: M_0 = exp(H~_res), then columns and rows normalised to sum 1
in turn, ``iterations`` times (the paper's t_max = 20). A doubly-stochastic H_res has
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

from .. import seed_batched
from ..validate import integer
from .base import Connection, Option
from .hyper import STREAMS, CopiesStrategy, mix, stream_channel_dim

GATE_INIT = 0.01  # a_pre, a_post, a_res at init
OFF_DIAGONAL = -6.0  # b_res off the diagonal: exp(-6) ~ 0.0025 of the diagonal's weight
RMS_EPS = 1e-6


class _SinkhornKnopp(torch.autograd.Function):
    """The unrolled iterations with a hand-written backward: the same arithmetic as autograd
    would do, without its per-operation bookkeeping (the matrices are tiny, so that
    bookkeeping is most of the time: a training step of the study's depth-50 mHC MLP went
    from 358 to 190 ms on one thread, ``benchmarks/stream_step_time.py`` before and after,
    on a loaded 2-core CPU). It keeps what autograd would keep: exp's output, and for
    each normalisation its result and the sums it divided by. Written with
    ``setup_context`` so that torch.func's vmap can run it (the batched engine); what
    backward needs is returned by forward as extra outputs, as the torch.func docs ask
    (https://pytorch.org/docs/stable/notes/extending.func.html)."""

    generate_vmap_rule = True  # forward and backward are plain tensor code: vmap runs them as they are

    @staticmethod
    def forward(logits: torch.Tensor, iterations: int):
        m = torch.exp(logits)
        kept, sums = [m], []
        for _ in range(iterations):
            for dim in (-2, -1):  # columns, then rows
                s = m.sum(dim, keepdim=True)
                m = m / s
                kept.append(m)
                sums.append(s)
        return (m, *kept[:-1], *sums)  # the result, then what backward reads (kept[-1] is m)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        steps = ctx.steps = 2 * inputs[1]
        ctx.save_for_backward(*output[1:steps + 1], output[0], *output[steps + 1:])  # kept, then sums
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *_):  # the extra outputs carry no gradient
        saved = ctx.saved_tensors
        kept, sums = saved[:ctx.steps + 1], saved[ctx.steps + 1:]
        for k in range(ctx.steps - 1, -1, -1):
            dim = -2 if k % 2 == 0 else -1
            out = kept[k + 1]  # out = m / s, s = m.sum(dim): dm = (g - sum(g * out, dim)) / s
            grad = (grad - (grad * out).sum(dim, keepdim=True)) / sums[k]
        return grad * kept[0], None  # d exp(x) = exp(x) dx


def sinkhorn_knopp(logits: torch.Tensor, iterations: int) -> torch.Tensor:
    """A doubly-stochastic matrix from ``logits`` (..., n, n): exp, then columns and rows
    normalised in turn, ``iterations`` times (rows last, so rows sum to 1 to rounding)."""
    # Under the batched engine the seeds are one more leading dimension: one node for all
    return seed_batched.over_seeds(lambda t: _SinkhornKnopp.apply(t, iterations)[0], logits)


class MHC(Connection):
    """One layer's manifold-constrained hyper-connection around ``branch``; the stream is
    ``(n, B, *layout)`` as for :class:`~skiplab.skips.hyper.HyperConnection`, channels at
    ``channel_dim`` of the layout."""

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
        self._cache: tuple | None = None

    def maps(self, H: torch.Tensor) -> dict[str, torch.Tensor]:
        """H_pre (B, *S, n), H_post (B, *S, n) and H_res (B, *S, n, n) per token."""
        n, cdim = self.streams, stream_channel_dim(self.channel_dim)
        x = H.movedim(cdim, -1).movedim(0, -2)  # (B, *S, n, C): each token's n x C stream
        x = x.reshape(*x.shape[:-2], -1)  # vec(x_l), (B, *S, nC)
        r = torch.rsqrt((x * x).sum(-1, keepdim=True) / x.shape[-1] + RMS_EPS)
        p = F.linear(x * r, self.phi)  # RMSNorm(vec x_l) [phi_pre, phi_post, phi_res]
        pre = self.a[0] * p[..., :n] + self.b_pre
        post = self.a[1] * p[..., n:2 * n] + self.b_post
        res = self.a[2] * p[..., 2 * n:].unflatten(-1, (n, n)) + self.b_res
        s = torch.sigmoid(post)
        return {"pre": torch.sigmoid(pre), "post": s + s,  # 2 sigmoid, written as a sum: nothing to keep
                "res": sinkhorn_knopp(res, self.iterations)}

    def _cached(self, H: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._cache is None or self._cache[0] is not H:
            self._cache = (H, self.maps(H))
        return self._cache[1]

    def read(self, H: torch.Tensor) -> torch.Tensor:
        pre = self._cached(H)["pre"].movedim(-1, 0)  # (n, B, *S)
        return (self._channel(pre, 1) * H).sum(0)  # H_pre x_l

    def write(self, H: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        m = self._cached(H)
        self._cache = None
        # mix wants weights[k, j] (input copy k -> output copy j) = H_res[j, k]
        weights = m["res"].movedim(-1, 0).movedim(-1, 1)  # (B, *S, j, k) -> (k, j, B, *S)
        post = m["post"].movedim(-1, 0)  # (n, B, *S)
        return mix(self._channel(weights, 2), H) + self._channel(post, 1) * f.unsqueeze(0)  # Eq. 3

    def _channel(self, c: torch.Tensor, lead: int) -> torch.Tensor:
        """Per-token maps (``lead`` stream dims, then B, *S) with a size-1 channel dim put
        where the stream's channels are."""
        cdim = stream_channel_dim(self.channel_dim)
        return c.unsqueeze(cdim + lead - 1 if cdim >= 0 else cdim)

    def mixing_matrix(self, H: torch.Tensor) -> torch.Tensor:
        """H_res per token: (tokens, n, n)."""
        with torch.no_grad():
            n = self.streams
            return self.maps(H)["res"].reshape(-1, n, n)


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
