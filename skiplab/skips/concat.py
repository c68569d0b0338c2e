"""Skips that concatenate: dense (DenseNet), concat-prev, concat-double, concat-half.

All four share one merge, ``Concat``: keep the last ``keep`` channels of the state (all
of them when ``keep`` is None) and append the branch's new features. They differ only in
their width rule, which is where their cost lives.

Each takes ``memory``: ``naive`` materialises the state with ``torch.cat`` after every
sublayer, and the next branch's first layer keeps it for backward (quadratic in depth for
dense); ``efficient`` carries the features as :class:`~.shared_storage.Pieces`, stores each
once and rebuilds the concatenation in backward (``shared_storage.py``, Pleiss et al.,
arXiv 1707.06990). Same outputs and gradients (tests/test_dense_memory.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import BlockWidths, Connection, Option, Strategy
from .shared_storage import Pieces, Shared, concat, run_on_pieces

MEMORIES = ("naive", "efficient")


def _last_channels(pieces: tuple, keep: int | None, width_of, narrow) -> tuple:
    """The pieces holding the last ``keep`` channels of their concatenation (all when None);
    a piece cut in two becomes a view of its last channels."""
    if keep is None:
        return tuple(pieces)
    out, have = [], 0
    for p in reversed(pieces):
        if have >= keep:
            break
        w = width_of(p)
        out.append(p if have + w <= keep else narrow(p, keep - have))
        have += w
    return tuple(reversed(out))


class Concat(Connection):
    """``s_l = concat(s_{l-1}[-keep:], f_l)`` along the channel dim.

    ``keep=None`` carries the whole state (DenseNet, Huang et al., arXiv 1608.06993,
    Eq. 2); a fixed ``keep`` carries only the most recent ``keep`` channels (all of them
    while the state has fewer), so the state stops growing. ``memory="efficient"`` runs the branch on the pieces of the state without
    keeping their concatenation for backward (see the module's docstring); the branch must
    start with norms/activations then a Linear or Conv. Given a tensor it returns a tensor;
    given :class:`Pieces` (inside a :class:`DenseBlock` or a skiplab model) it returns Pieces.
    """

    def __init__(self, branch: nn.Module | None = None, keep: int | None = None, channel_dim: int = 1,
                 memory: str = "naive"):
        super().__init__(branch)
        if keep is not None and keep < 1:
            raise ValueError(f"Concat: keep must be >= 1 or None, got {keep}")
        if memory not in MEMORIES:
            raise ValueError(f"Concat: memory must be one of {', '.join(MEMORIES)}, got {memory!r}")
        self.keep = keep
        self.channel_dim = channel_dim
        self.memory = memory

    def read(self, s):
        # Pieces rebuilt by someone else (the gradient probes' tapped views) get the layout's dim back.
        return Pieces(s, self.channel_dim, s.shared) if isinstance(s, Pieces) else s

    def write(self, s, f: torch.Tensor):
        if isinstance(s, Pieces):
            dim = self.channel_dim
            kept = _last_channels(s, self.keep, lambda p: p.shape[dim],
                                  lambda p, k: p.narrow(dim, p.shape[dim] - k, k))
            return Pieces(kept + (f,), dim, s.shared if self.keep is None else None)
        width = s.shape[self.channel_dim]
        # all of a state narrower than keep, as _last_channels keeps of Pieces
        carried = s if self.keep is None or self.keep >= width else s.narrow(self.channel_dim, width - self.keep,
                                                                               self.keep)
        return torch.cat([carried, f], dim=self.channel_dim)  # (B, carried + features, *S)

    def run_branch(self, z):
        """The branch on the state ``z``: on its pieces, storing each once, when it is Pieces."""
        if isinstance(z, Pieces) and not getattr(self.branch, "takes_pieces", False):
            return run_on_pieces(self.branch, z, self.channel_dim)
        return self.branch(z)

    def without_branch(self, stream):
        f = self.run_branch(self.read(stream))
        return self.write(stream, torch.zeros_like(f))

    def forward(self, stream):
        if self.branch is None:
            return super().forward(stream)
        if self.memory == "efficient" and isinstance(stream, torch.Tensor):
            return concat(self.forward(Pieces((stream,), shared=Shared() if self.keep is None else None)))
        shared = getattr(stream, "shared", None)
        if shared is None:
            return self.write(stream, self.run_branch(self.read(stream)))
        # The last concatenation lives on the stream between sublayers (never in a
        # backward's context), so the next one is a two-input cat and nothing outlives forward.
        shared.last = stream.hold
        out = self.write(stream, self.run_branch(self.read(stream)))
        out.hold, shared.last = shared.last, None
        return out

    def extra_repr(self) -> str:
        return f"keep={'all' if self.keep is None else self.keep}, memory={self.memory}"


class DenseBlock(nn.Sequential):
    """A DenseNet block over a list of layers: layer ``i`` sees the block input
    concatenated with the outputs of layers ``0..i-1``, and the block returns all of
    them concatenated. Layer ``i`` must accept ``in_width + i * growth`` channels.
    ``memory="efficient"`` stores every layer's output once instead of each layer's
    concatenated input (linear instead of quadratic in the number of layers, Pleiss et
    al., arXiv 1707.06990); each layer must then start with norms/activations, then a
    Linear or Conv (DenseNet-BC's BN-ReLU-Conv does).

    >>> block = DenseBlock([nn.Linear(8 + 4 * i, 4) for i in range(3)])  # 8 -> 20 wide
    """

    def __init__(self, layers, memory: str = "naive", channel_dim: int = 1):
        super().__init__(*[Concat(layer, channel_dim=channel_dim, memory=memory) for layer in layers])
        self.memory, self.channel_dim = memory, channel_dim

    def forward(self, x):
        if self.memory != "efficient":
            return super().forward(x)
        return concat(super().forward(Pieces((x,), shared=Shared())))


MEMORY = Option("memory", str, "naive", "naive: cat the state after every sublayer; efficient: store each "
                 "feature once and recompute the concatenation in backward (Pleiss et al., arXiv 1707.06990)",
                 choices=MEMORIES)


class _ConcatStrategy(Strategy):
    """Shared by the four: the merge and the carried width ``keep``."""

    options = (MEMORY,)
    # A concatenated state crosses a stage as DenseNet's does: a transition layer, then a new state.
    reshape = "transition"

    keep_all = True  # the state carries everything (``keep`` is None): it grows, sublayers share one buffer

    def keep(self, w: BlockWidths) -> int | None:
        return None  # carry everything

    def single_tensor(self, opts) -> bool:
        return opts["memory"] == "naive"

    def connection(self, branch, site, opts, make_gate):
        return Concat(branch, keep=self.keep(site.widths), channel_dim=site.channel_dim, memory=opts["memory"])

    def init(self, x0, opts):
        if opts["memory"] != "efficient":
            return x0
        return Pieces((x0,), shared=Shared() if self.keep_all else None)

    def readout(self, stream, opts):
        return concat(stream) if isinstance(stream, Pieces) else stream


class DenseStrategy(_ConcatStrategy):
    name = "dense"
    color = "#D55E00"
    summary = "DenseNet: s_l = concat(s_{l-1}, f(s_{l-1})), state grows by k per block"
    rule = "s_l = concat(s_{l-1}, f_l(s_{l-1})), |f_l| = k (growth), |s_{l-1}| = w + (l-1) k"
    source = "Huang et al., DenseNet, arXiv 1608.06993"
    options = (Option("growth", int, None, "new channels per sublayer k (default: the width)",
                      sizes=True, default_from_width=True), MEMORY)

    def widths(self, width, opts, l):
        # Sublayer l sees the stem's w channels plus (l - 1) growths of k (DenseNet's
        # k_0 + k (l - 1), Huang et al. Sec. 3, "Growth rate").
        k = opts["growth"]
        w_in = width + (l - 1) * k
        return BlockWidths(w_in, k, w_in + k)


class ConcatPrevStrategy(_ConcatStrategy):
    name = "concat-prev"
    color = "#E69F00"
    summary = "the question's proposal: each block sees concat(h_{l-1}, h_{l-2}), not the whole stack"
    rule = "z_l = concat(h_{l-2}, h_{l-1}) (block 1: h_0 = s_0), h_l = f_l(z_l), head sees concat(h_{L-1}, h_L)"
    source = "the question in shared/seed/question-and-answers.txt"

    def widths(self, width, opts, l):
        # State (h_{l-1}, h_l) of width 2w; block 1 sees h_0 = s_0 alone.
        return BlockWidths(width if l == 1 else 2 * width, width, 2 * width)

    keep_all = False

    def keep(self, w):
        return w.features


class ConcatDoubleStrategy(_ConcatStrategy):
    name = "concat-double"
    color = "#000000"
    summary = "concatenate the input and double the channels every block: cost x4 per block"
    rule = "s_l = concat(s_{l-1}, f_l(s_{l-1})), |f_l| = |s_{l-1}| = 2^(l-1) w"
    source = "seed answer 1 (conv cost O(N^2) in channels; doubling grows exponentially)"

    def widths(self, width, opts, l):
        # Each block's features are as wide as its input, so the state doubles every block
        # (the seed answer's "double the number of feature maps each next layer").
        w_in = width << (l - 1)
        return BlockWidths(w_in, w_in, 2 * w_in)


class ConcatHalfStrategy(_ConcatStrategy):
    name = "concat-half"
    color = "#999933"  # olive (Tol): Okabe-Ito yellow is too faint on white
    summary = "produce w/2 new channels and carry the last w/2: constant cost per block"
    rule = "s_l = concat(last w/2 of s_{l-1}, f_l(s_{l-1})), |f_l| = w/2 (w even)"
    source = "seed answer 1 (halve the channels, carry half: constant cost per layer)"
    width_step, width_reason = 2, "it splits the state in halves, so the width must be even"

    def widths(self, width, opts, l):
        return BlockWidths(width, width // 2, width)

    keep_all = False

    def keep(self, w):
        return w.out_width - w.features


DENSE, CONCAT_PREV = DenseStrategy(), ConcatPrevStrategy()
CONCAT_DOUBLE, CONCAT_HALF = ConcatDoubleStrategy(), ConcatHalfStrategy()
