"""Skips that concatenate: dense (DenseNet), concat-prev, concat-double, concat-half.

All four share one merge, ``Concat``: keep the last ``keep`` channels of the state (all
of them when ``keep`` is None) and append the branch's new features. They differ only in
their width rule, which is where their cost lives.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import BlockWidths, Connection, Option, Strategy


class Concat(Connection):
    """``s_l = concat(s_{l-1}[-keep:], f_l)`` along the channel dim.

    ``keep=None`` carries the whole state (DenseNet, Huang et al., arXiv 1608.06993,
    Eq. 2); a fixed ``keep`` carries only the most recent channels, so the state stops
    growing.
    """

    def __init__(self, branch: nn.Module | None = None, keep: int | None = None, channel_dim: int = 1):
        super().__init__(branch)
        if keep is not None and keep < 1:
            raise ValueError(f"Concat: keep must be >= 1 or None, got {keep}")
        self.keep = keep
        self.channel_dim = channel_dim

    def write(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        carried = s if self.keep is None else s.narrow(self.channel_dim, s.shape[self.channel_dim] - self.keep,
                                                       self.keep)
        return torch.cat([carried, f], dim=self.channel_dim)  # (B, carried + features, *S)

    def extra_repr(self) -> str:
        return f"keep={'all' if self.keep is None else self.keep}"


class DenseBlock(nn.Sequential):
    """A DenseNet block over a list of layers: layer ``i`` sees the block input
    concatenated with the outputs of layers ``0..i-1``, and the block returns all of
    them concatenated. Layer ``i`` must accept ``in_width + i * growth`` channels.

    >>> block = DenseBlock([nn.Linear(8 + 4 * i, 4) for i in range(3)])  # 8 -> 20 wide
    """

    def __init__(self, layers):
        super().__init__(*[Concat(layer) for layer in layers])


class _ConcatStrategy(Strategy):
    """Shared by the four: the merge, its trace, and the carried width ``keep``."""

    def keep(self, w: BlockWidths) -> int | None:
        return None  # carry everything

    def connection(self, branch, site, opts, make_gate):
        return Concat(branch, keep=self.keep(site.widths), channel_dim=site.channel_dim)

    def trace_write(self, tape, s, f, site, opts, trace_gate):
        out = tape.new(site.widths.out_width, f.positions)  # slicing and cat keep nothing for backward
        tape.concat += out.elements  # ... but cat writes every carried and new element
        return out


class DenseStrategy(_ConcatStrategy):
    name = "dense"
    color = "#D55E00"
    summary = "DenseNet: s_l = concat(s_{l-1}, f(s_{l-1})), state grows by k per block"
    rule = "s_l = concat(s_{l-1}, f_l(s_{l-1})), |f_l| = k (growth), |s_{l-1}| = w + (l-1) k"
    source = "Huang et al., DenseNet, arXiv 1608.06993"
    options = (Option("growth", int, None, "new channels per sublayer k (default: the width)",
                      sizes=True, default_from_width=True),)

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

    def keep(self, w):
        return w.out_width - w.features


DENSE, CONCAT_PREV = DenseStrategy(), ConcatPrevStrategy()
CONCAT_DOUBLE, CONCAT_HALF = ConcatDoubleStrategy(), ConcatHalfStrategy()
