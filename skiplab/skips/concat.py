"""Skips that concatenate: dense (DenseNet), concat-prev, concat-double, concat-half.

All four share one merge, ``Concat``: keep the last ``keep`` channels of the state (all
of them when ``keep`` is None) and append the block's new features. They differ only in
their width rule, which is where their cost lives.
"""

from __future__ import annotations

import torch
from torch import nn

from ..tape import Sym, Tape
from .base import BlockWidths, Strategy


class Concat(nn.Module):
    """``s_l = concat(s_{l-1}[:, -keep:], f_l)`` along channels (dim 1).

    ``keep=None`` carries the whole state (DenseNet, Huang et al., arXiv 1608.06993,
    Eq. 2); a fixed ``keep`` carries only the most recent channels, so the state stops
    growing.
    """

    def __init__(self, branch: nn.Module, keep: int | None = None):
        super().__init__()
        if keep is not None and keep < 1:
            raise ValueError(f"Concat: keep must be >= 1 or None, got {keep}")
        self.branch = branch
        self.keep = keep

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        f = self.branch(s)
        carried = s if self.keep is None else s[:, -self.keep:]
        return torch.cat([carried, f], dim=1)  # (B, carried + features, *S)

    @staticmethod
    def trace(tape: Tape, s: Sym, f: Sym, w: BlockWidths, layer) -> Sym:
        out = tape.new(w.out_width, f.positions)  # slicing and cat keep nothing for backward
        tape.concat += out.elements  # ... but cat writes every carried and new element
        return out

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


def _dense_widths(width: int, growth: int, l: int) -> BlockWidths:
    # Block l sees the stem's w channels plus (l - 1) growths of k (DenseNet's
    # k_0 + k (l - 1), Huang et al. Sec. 3, "Growth rate").
    w_in = width + (l - 1) * growth
    return BlockWidths(w_in, growth, w_in + growth)


def _prev_widths(width: int, growth: int, l: int) -> BlockWidths:
    # State (h_{l-1}, h_l) of width 2w; block 1 sees h_0 = s_0 alone.
    return BlockWidths(width if l == 1 else 2 * width, width, 2 * width)


def _double_widths(width: int, growth: int, l: int) -> BlockWidths:
    # Each block's features are as wide as its input, so the state doubles every block
    # (the seed answer's "double the number of feature maps each next layer").
    w_in = width << (l - 1)
    return BlockWidths(w_in, w_in, 2 * w_in)


def _half_widths(width: int, growth: int, l: int) -> BlockWidths:
    return BlockWidths(width, width // 2, width)


DENSE = Strategy(
    name="dense", summary="DenseNet: s_l = concat(s_{l-1}, f(s_{l-1})), state grows by k per block",
    rule="s_l = concat(s_{l-1}, f_l(s_{l-1})), |f_l| = k (growth), |s_{l-1}| = w + (l-1) k",
    source="Huang et al., DenseNet, arXiv 1608.06993",
    widths=_dense_widths, wrap=lambda branch, w, make_layer, depth: Concat(branch),
    trace=Concat.trace)

CONCAT_PREV = Strategy(
    name="concat-prev",
    summary="the question's proposal: each block sees concat(h_{l-1}, h_{l-2}), not the whole stack",
    rule="z_l = concat(h_{l-2}, h_{l-1}) (block 1: h_0 = s_0), h_l = f_l(z_l), head sees concat(h_{L-1}, h_L)",
    source="the question in shared/seed/question-and-answers.txt",
    widths=_prev_widths,
    wrap=lambda branch, w, make_layer, depth: Concat(branch, keep=w.features),
    trace=Concat.trace)

CONCAT_DOUBLE = Strategy(
    name="concat-double",
    summary="concatenate the input and double the channels every block: cost x4 per block",
    rule="s_l = concat(s_{l-1}, f_l(s_{l-1})), |f_l| = |s_{l-1}| = 2^(l-1) w",
    source="seed answer 1 (conv cost O(N^2) in channels; doubling grows exponentially)",
    widths=_double_widths, wrap=lambda branch, w, make_layer, depth: Concat(branch),
    trace=Concat.trace)

CONCAT_HALF = Strategy(
    name="concat-half",
    summary="produce w/2 new channels and carry the last w/2: constant cost per block",
    rule="s_l = concat(last w/2 of s_{l-1}, f_l(s_{l-1})), |f_l| = w/2 (w even)",
    source="seed answer 1 (halve the channels, carry half: constant cost per layer)",
    widths=_half_widths,
    wrap=lambda branch, w, make_layer, depth: Concat(branch, keep=w.out_width - w.features),
    trace=Concat.trace)
