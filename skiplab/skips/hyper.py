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
family's own layout; channels are at ``channel_dim`` of the layout. Mixing the copies is
element-wise work (the merge's FLOPs); the dynamic projections ``W`` are learned linear
maps (matmul FLOPs, as highway's gate is).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..validate import integer
from .base import Connection, Option, Strategy

DYNAMIC_SCALE = 0.01  # s_alpha = s_beta at init; the dynamic part starts at 0 because W = 0 (Sec. 2.2)

def stream_channel_dim(channel_dim: int) -> int:
    """The channel dim of a stacked stream ``(n, B, *layout)``, given the layout's."""
    return channel_dim + 1 if channel_dim >= 0 else channel_dim

def mix(weights: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``out_j = sum_k weights[k, j] H_k``: ``weights`` (n, n, ...) broadcast against H's
    copies (n, ...). Element-wise products and a sum: n^2 multiplies and n (n - 1) adds per
    element of a copy."""
    return (weights * H.unsqueeze(1)).sum(0)

def expand(x0: torch.Tensor, n: int) -> torch.Tensor:
    """n copies of ``x0`` stacked in front: ``(n, *x0.shape)`` (a view, nothing copied)."""
    return x0.unsqueeze(0).expand(n, *x0.shape)

def reduce(H: torch.Tensor) -> torch.Tensor:
    """The copies averaged: what the head (or the final norm) sees."""
    return H.sum(0) / H.shape[0]

class HyperConnection(Connection):
    """One layer's hyper-connection around ``branch``.

    ``layer``: the 0-based index k of this layer among all hyper-connected layers (it reads
    copy ``k mod n`` at init); ``channels``: C, needed by the dynamic projections;
    ``channel_dim``: where C sits in the family's layout (1 for (B, C, *S), -1 for (B, T, C)).

    >>> hc = HyperConnection(nn.Linear(8, 8), streams=4, layer=0, channels=8, channel_dim=-1)
    >>> H = expand(torch.randn(2, 5, 8), 4)      # (n, B, T, C)
    >>> reduce(hc(H)).shape
    torch.Size([2, 5, 8])
    """

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
        self._cache: tuple | None = None

    def coefficients(self, H: torch.Tensor) -> dict[str, torch.Tensor]:
        """A_m, A_r, B for this stream: static (n), (n, n), (n); dynamic per token
        (n, B, *S), (n_k, n_j, B, *S), (n, B, *S), where S are the layout's non-channel dims."""
        n = self.streams
        if not self.dynamic:
            return {"a_m": self.a_m, "a_r": self.a_r, "b": self.b}
        cdim = stream_channel_dim(self.channel_dim)
        bar = F.layer_norm(H.movedim(cdim, -1), (H.shape[cdim],))  # norm(H) per copy and token, channels last
        t = torch.tanh(F.linear(bar, self.w))  # (n, B, *S, n + 2): tanh(H_bar W) (Eq. 11-13)
        tok = [1] * (t.dim() - 2)  # the static part broadcast over (B, *S)
        return {"a_m": self.s_a * t[..., 0] + self.a_m.view(n, *tok),
                "a_r": self.s_a * t[..., 1:n + 1].movedim(-1, 1) + self.a_r.view(n, n, *tok),
                "b": self.s_b * t[..., n + 1] + self.b.view(n, *tok)}

    def _against(self, c: torch.Tensor, H: torch.Tensor, lead: int) -> torch.Tensor:
        """Coefficients with ``lead`` stream dims in front, shaped to broadcast against a
        stream tensor with ``lead`` stream dims: a size-1 dim where the channels are (and
        everywhere, for static coefficients)."""
        if not self.dynamic:
            return c.view(*c.shape, *([1] * (H.dim() - 1)))
        cdim = stream_channel_dim(self.channel_dim)
        return c.unsqueeze(cdim + lead - 1 if cdim >= 0 else cdim)

    def _cached(self, H: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._cache is None or self._cache[0] is not H:  # read and write share one computation
            self._cache = (H, self.coefficients(H))
        return self._cache[1]

    def read(self, H: torch.Tensor) -> torch.Tensor:
        a_m = self._against(self._cached(H)["a_m"], H, 1)
        return (a_m * H).sum(0)  # h_in = A_m^T H (Eq. 4)

    def write(self, H: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        c = self._cached(H)
        self._cache = None
        a_r, b = self._against(c["a_r"], H, 2), self._against(c["b"], H, 1)
        return mix(a_r, H) + b * f.unsqueeze(0)  # H <- A_r^T H + B^T f (Eq. 5)

    def mixing_matrix(self, H: torch.Tensor) -> torch.Tensor:
        """H_res with ``H' = H_res H + ...``, i.e. ``A_r^T``: (1, n, n) for the static form,
        (tokens, n, n) per token for the dynamic form."""
        with torch.no_grad():
            a_r = self.coefficients(H)["a_r"]
            n = self.streams
            return a_r.reshape(n, n, -1).permute(2, 1, 0)  # [t, j, k] = A_r[k, j, t]

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
