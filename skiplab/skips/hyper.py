"""Hyper-connections: n copies of the residual stream, mixed by learned weights.

Zhu et al., "Hyper-Connections", ICLR 2025, arXiv 2409.19606, Sec. 2. The hidden vector
becomes n copies ``H`` (n x C) before the first layer; every layer T (each sublayer) reads a
weighted sum of the copies and writes its output into every copy with its own weight,
while the copies mix among themselves:

    h_in = A_m^T H,      H <- A_r^T H + B^T T(h_in)          (static, Eq. 3-5)

with ``A_m`` (n), ``A_r`` (n x n) and ``B`` (n) learned per layer. The dynamic form (DHC,
Eq. 10-13) adds an input-dependent part, ``A(H) = s * tanh(norm(H) W) + A``, per token. At
init layer k reads copy ``k mod n`` (``A_m = e_{k mod n}``), ``A_r = I``, ``B = 1`` and the
dynamic weights are 0: every copy holds the same residual stream, and the model equals the
Pre-Norm residual net exactly. After the last layer the copies are averaged (the paper sums
them before its final norm, which removes the factor n; averaging keeps the equality for
heads with no norm before them, as the MLP's and CNNs' have).

Layout: the stream is one tensor ``(n, B, *layout)``, the copies stacked in front of the
family's own layout; channels are at ``channel_dim`` of the layout (stored token-major by
the dynamic form, see below). Reading and mixing the copies is one matrix product per
layer (issue 27: fewer, larger operations). That product is still the merge: the
connection declares ``products_are_merges``, so the cost model counts it as merge FLOPs
(K multiplications and K - 1 additions per output element, what the element-wise sum over
the copies counted), not as matmul FLOPs (``skiplab.profiling.merge_rule``); so is what stays
element-wise (adding ``B^T f``, the dynamic coefficients). The dynamic projections ``W`` are
learned linear maps (matmul FLOPs, as highway's gate is).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import compiling
from ..validate import integer
from .base import Connection, Option, Strategy

DYNAMIC_SCALE = 0.01  # s_alpha = s_beta at init; the dynamic part starts at 0 because W = 0 (Sec. 2.2)


def stream_channel_dim(channel_dim: int) -> int:
    """The channel dim of a stacked stream ``(n, B, *layout)``, given the layout's."""
    return channel_dim + 1 if channel_dim >= 0 else channel_dim


def expand(x0: torch.Tensor, n: int) -> torch.Tensor:
    """n copies of ``x0`` stacked in front: ``(n, *x0.shape)`` (a view, nothing copied)."""
    return x0.unsqueeze(0).expand(n, *x0.shape)


def reduce(H: torch.Tensor) -> torch.Tensor:
    """The copies averaged: what the head (or the final norm) sees."""
    return H.sum(0) / H.shape[0]


# -- the stream per token ------------------------------------------------------------------
# Per-token mixing is one small matrix product per token, ``(n + 1, n) @ (n, C)``: written as
# one ``torch.bmm`` over all tokens it is one kernel per mixing, where broadcast products and
# sums wrote an (n, n, tokens, C) intermediate (issue 27: at the transformer study's shape,
# 2,048 tokens of width 64, the bmm and its backward took 3.4 ms against 6.1 ms for the
# broadcast form, one thread, benchmarks/stream_overhead.py's machine). A bmm reads each
# token's n x C rows in place when the stream is stored token-major, so the connections that
# mix per token write their stream that way: shape ``(n, B, *layout)`` as always, memory
# ``(B, *S, n, C)``. Any other strides are read correctly too, by a copy.

def token_rows(H: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Size]:
    """The stream ``(n, B, *layout)`` as ``(tokens, n, C)``, tokens in ``(B, *S)`` order, and
    ``(B, *S)``: a view of a token-major stream, a copy of any other."""
    t = H.movedim(stream_channel_dim(channel_dim), -1).movedim(0, -2)  # (B, *S, n, C)
    # contiguous: the first layer's stream is n views of one tensor (stride 0), which bmm
    # would multiply token by token (2,048 small products and copies, issue 27's profile)
    return t.reshape(-1, *t.shape[-2:]).contiguous(), t.shape[:-2]


def stream_of_rows(rows: torch.Tensor, lead: torch.Size, channel_dim: int) -> torch.Tensor:
    """``(tokens, n, C)`` back to the stream's shape ``(n, B, *layout)`` (a view)."""
    return rows.view(*lead, *rows.shape[-2:]).movedim(-2, 0).movedim(-1, stream_channel_dim(channel_dim))


def layout_of_rows(rows: torch.Tensor, lead: torch.Size, channel_dim: int) -> torch.Tensor:
    """``(tokens, C)`` in the family's layout ``(B, *layout)``, contiguous: a branch computes
    on the memory layout it gets, and a convolution rounds differently on channels-last
    memory (the residual-net equality at init in tests/test_streams.py is exact)."""
    return rows.reshape(*lead, rows.shape[-1]).movedim(-1, channel_dim).contiguous()


def rows_of_layout(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """A branch's output ``(B, *layout)`` as ``(tokens, C)``, tokens in ``(B, *S)`` order."""
    return x.movedim(channel_dim, -1).reshape(-1, x.shape[channel_dim])


def read_and_mix(weights: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's branch input and mixed copies in one contraction: ``weights``
    ``(tokens, n + 1, n)`` (row 0 the read weights, rows 1..n the residual mixing matrix, so
    ``mixed_j = sum_k weights[t, 1 + j, k] H_k``) against ``rows`` ``(tokens, n, C)``.
    Returns ``h`` ``(tokens, C)`` and ``mixed`` ``(tokens, n, C)``, views of one result."""
    h, mixed = torch.bmm(weights, rows).split([1, rows.shape[1]], dim=1)
    return h.squeeze(1), mixed


def _weighted(weights: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[k] H[k]`` over the n copies, one multiply-add per copy (element-wise,
    for Inductor to fuse: ``HyperConnection._read_elementwise``); ``weights[k]`` a number
    or a tensor that broadcasts against ``H[k]``."""
    y = weights[0] * H[0]
    for k in range(1, H.shape[0]):
        y = torch.addcmul(y, weights[k], H[k])
    return y


def write_rows(mixed: torch.Tensor, post: torch.Tensor, f_rows: torch.Tensor) -> torch.Tensor:
    """``mixed_j + post_j f`` per token: ``mixed`` ``(tokens, n, C)``, ``post`` ``(tokens, n)``,
    ``f_rows`` ``(tokens, C)``; a new token-major ``(tokens, n, C)``."""
    return torch.addcmul(mixed, post.unsqueeze(-1), f_rows.unsqueeze(1))


class _CopiesConnection(Connection):
    """What hyper-connections and mHC connections share: ``read`` computes the branch's input
    and what ``write`` needs (``_read``), and keeps the latter for the ``write`` of the same
    stream; a ``write`` given another stream than the last ``read`` (a lesion, the gradient
    probe's views of one stream) computes it from that stream."""

    _cache: tuple | None = None

    def _read(self, H: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def read(self, H: torch.Tensor) -> torch.Tensor:
        h, kept = self._read(H)
        self._cache = (H, kept)
        return h

    def _kept(self, H: torch.Tensor) -> Any:
        """What the last ``read`` of ``H`` kept for ``write``, once; computed if ``H`` was not read."""
        cache, self._cache = self._cache, None
        return cache[1] if cache is not None and cache[0] is H else self._read(H)[1]


class HyperConnection(_CopiesConnection):
    """One layer's hyper-connection around ``branch``.

    ``layer``: the 0-based index k of this layer among all hyper-connected layers (it reads
    copy ``k mod n`` at init); ``channels``: C, needed by the dynamic projections;
    ``channel_dim``: where C sits in the family's layout (1 for (B, C, *S), -1 for (B, T, C)).

    ``read`` computes the branch's input and the mixed copies ``A_r^T H`` in one contraction
    (``A_m`` and ``A_r`` side by side, one matrix product); ``write`` adds ``B^T f`` to the
    mixed copies it kept. A ``write`` given another stream than the last ``read`` (a lesion,
    the gradient probe's views of one stream) mixes that stream itself.

    >>> hc = HyperConnection(nn.Linear(8, 8), streams=4, layer=0, channels=8, channel_dim=-1)
    >>> H = expand(torch.randn(2, 5, 8), 4)      # (n, B, T, C)
    >>> reduce(hc(H)).shape
    torch.Size([2, 5, 8])
    """

    # its matrix products mix the copies: merge FLOPs in the cost model (profiling.merge_rule)
    products_are_merges = True

    def __init__(self, branch: nn.Module | None = None, *, channels: int, streams: int = 4, layer: int = 0,
                 channel_dim: int = 1, dynamic: bool = True):
        super().__init__(branch)
        n = integer("streams", streams, 1)
        integer("channels", channels, 1)
        integer("layer", layer, 0)
        self.streams, self.dynamic, self.channel_dim = n, dynamic, channel_dim
        read = torch.zeros(n)
        read[layer % n] = 1.0
        self.a_m = nn.Parameter(read)  # A_m = e_{k mod n}
        self.a_r = nn.Parameter(torch.eye(n))  # A_r = I
        self.b = nn.Parameter(torch.ones(n))  # B = 1
        if dynamic:
            # W_m (C x 1), W_r (C x n), W_b (C x 1) in one matrix, 0 at init (zeros draw no
            # random numbers, so the branches get the weights a residual net of the same seed has)
            self.w = nn.Parameter(torch.zeros(n + 2, channels))
            self.s_a = nn.Parameter(torch.tensor(DYNAMIC_SCALE))
            self.s_b = nn.Parameter(torch.tensor(DYNAMIC_SCALE))

    def _static(self) -> torch.Tensor:
        """``[A_m | A_r]``, (n, n + 1): column 0 reads, column 1 + j makes copy j."""
        return torch.cat([self.a_m.unsqueeze(1), self.a_r], 1)

    def _dynamic(self, rows: torch.Tensor, copies_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per token (Eq. 10-13): ``[A_m | A_r](H)`` (tokens, n, n + 1) and ``B(H)`` (tokens, n)
        from ``rows`` (tokens, n, C); with ``copies_first``, from the stream channels last
        (n, B, *S, C), as (n, B, *S, n + 1) and (n, B, *S) (the element-wise form)."""
        n = self.streams
        bar = F.layer_norm(rows, rows.shape[-1:])  # norm(H) per copy and token
        if copies_first:
            # H_bar W as a product and a sum over the channels: Inductor can fuse it with the
            # norm, where F.linear stays a library call
            t = torch.tanh((bar.unsqueeze(-2) * self.w).sum(-1))
            ones = [1] * (rows.dim() - 2)
            static, b = self._static().view(n, *ones, n + 1), self.b.view(n, *ones)
        else:
            t = torch.tanh(F.linear(bar, self.w))  # (tokens, n, n + 2): tanh(H_bar W)
            static, b = self._static(), self.b
        return torch.addcmul(static, self.s_a, t[..., :n + 1]), torch.addcmul(b, self.s_b, t[..., n + 1])

    def _read(self, H: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The branch's input ``A_m^T H`` (Eq. 4) in the family's layout, and what ``write``
        needs: the mixed copies ``A_r^T H`` and ``B``."""
        n = self.streams
        if compiling():
            return self._read_elementwise(H)
        if not self.dynamic:  # one (n + 1, n) matrix for every token: one matrix product over the whole stream
            h, mixed = (self._static().t() @ H.reshape(n, -1)).split([1, n])
            return h.view(H.shape[1:]), (mixed.view(H.shape), None)
        rows, lead = token_rows(H, self.channel_dim)
        am_ar, b = self._dynamic(rows)
        h, mixed = read_and_mix(am_ar.transpose(1, 2), rows)
        return layout_of_rows(h, lead, self.channel_dim), (mixed, b, lead)

    def _read_elementwise(self, H: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``_read`` under torch.compile: the same arithmetic written as sums of copies times
        weights, which Inductor fuses into loops that read each copy once per mixing, where it
        calls the eager form's ``mm``/``bmm`` (inner dimension n) as library kernels. One
        training step of the transformer study's model, compiled, against compiled add, depth
        6 and 12, one and two threads: static 1.08-1.13x, dynamic 1.21-1.36x, where the eager
        form compiled gave 1.28x and 1.78x (depth 6, one thread; docs/streams.md, "Under
        --compile", ``benchmarks/stream_overhead.py --compile``).
        The stream stays in the family's layout; ``mixed`` is ``(n, B, *layout)`` (static)
        or ``(n, B, *S, C)``, channels last, with ``B`` ``(n, B, *S, 1)`` (dynamic)."""
        n = self.streams
        if not self.dynamic:  # h = sum_k A_m[k] H_k, mixed_j = sum_k A_r[k, j] H_k
            a = self._static()
            return _weighted(a[:, 0], H), (torch.stack([_weighted(a[:, 1 + j], H) for j in range(n)]), None)
        Hc = H.movedim(stream_channel_dim(self.channel_dim), -1)  # (n, B, *S, C)
        am_ar, b = self._dynamic(Hc, copies_first=True)  # am_ar[k, ..., column]
        h = _weighted(am_ar[..., :1], Hc)
        mixed = torch.stack([_weighted(am_ar[..., 1 + j:2 + j], Hc) for j in range(n)])
        return h.movedim(-1, self.channel_dim), (mixed, b.unsqueeze(-1))

    def write(self, H: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        kept = self._kept(H)
        if not self.dynamic:  # H <- A_r^T H + B^T f (Eq. 5)
            mixed = kept[0]
            return torch.addcmul(mixed, self.b.view(-1, *[1] * f.dim()), f.unsqueeze(0))
        if compiling():  # the element-wise read's layout: channels last
            mixed, b = kept
            f_last = f.movedim(self.channel_dim, -1).unsqueeze(0)
            return torch.addcmul(mixed, b, f_last).movedim(-1, stream_channel_dim(self.channel_dim))
        mixed, b, lead = kept
        return stream_of_rows(write_rows(mixed, b, rows_of_layout(f, self.channel_dim)), lead, self.channel_dim)

    def mixing_matrix(self, H: torch.Tensor) -> torch.Tensor:
        """H_res with ``H' = H_res H + ...``, i.e. ``A_r^T``: (1, n, n) for the static form,
        (tokens, n, n) per token for the dynamic form."""
        with torch.no_grad():
            if not self.dynamic:
                return self.a_r.t().unsqueeze(0)
            am_ar, _ = self._dynamic(token_rows(H, self.channel_dim)[0])
            return am_ar[..., 1:].transpose(1, 2)  # [t, j, k] = A_r[k, j, t]


STREAMS = Option("streams", int, 4, "copies n of the stream (the paper's expansion rate; 4 is its common choice)")


class CopiesStrategy(Strategy):
    """What hyper-connections and mHC share: the stream is ``streams`` copies stacked in
    front of the layout, expanded from the stem's output and averaged for the head; each
    write mixes the copies and adds the branch's output to each with its own weight."""

    mixes_streams = True
    single_stream = False  # n copies
    reshape_reason = ("its n copies of the stream are mixed as one shape, and no rule for carrying them across a "
                      "stride-2 transition is defined (the papers build transformers)")
    starts_as_residual = True  # equal copies, each written f: the residual net (mHC to rounding)

    def init(self, x0, opts):
        return expand(x0, opts["streams"])

    def readout(self, stream, opts):
        return reduce(stream)


class HyperStrategy(CopiesStrategy):
    name = "hyper"
    color = "#44AA99"  # Tol's teal
    summary = "hyper-connections: n copies of the stream, read and written with learned (dynamic) weights"
    rule = "h = A_m^T H, H <- A_r^T H + B^T f(h); A_m = e_{k mod n}, A_r = I, B = 1 at init; copies averaged at the end"
    source = "Zhu et al., Hyper-Connections, ICLR 2025, arXiv 2409.19606"
    options = (STREAMS, Option("static", bool, False, "the static form (no input-dependent weights); default: dynamic (DHC)"))

    def connection(self, branch, site, opts, make_gate):
        return HyperConnection(branch, streams=opts["streams"], layer=site.index - 1, channels=site.widths.in_width,
                               channel_dim=site.channel_dim, dynamic=not opts["static"])


HYPER = HyperStrategy()
