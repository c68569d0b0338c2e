"""The contract every skip strategy honours.

A strategy is two things:

* a **width rule**: for block ``l`` (1-based) of a model of width ``w`` and growth ``k``,
  the width of the block's input ``z_l`` (= the state it receives), of its new features
  ``f_l``, and of the state it hands on. The rule is pure arithmetic, so the cost model
  can answer for depths that could never be built.
* a **merge**: a drop-in ``nn.Module`` that wraps a branch (any module mapping
  ``(B, in, *S) -> (B, features, *S)``) and combines the branch's output with the
  incoming state into the next state. Channels are dim 1 for every model kind.

Swapping a strategy is a one-word change because every strategy is looked up by name
in one registry (``skiplab.skips.STRATEGIES``) and built through ``Strategy.wrap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from torch import nn

from ..tape import Sym, Tape


class BlockWidths(NamedTuple):
    """Channel widths seen by one block."""

    in_width: int  # width of the state s_{l-1} (= the block input z_l)
    features: int  # width of the new features f_l the transform produces
    out_width: int  # width of the next state s_l


def same_width(width: int, growth: int, l: int) -> BlockWidths:
    """The rule of every strategy that keeps the state's width (plain, add, ...)."""
    return BlockWidths(width, width, width)


# (branch, widths, make_layer, depth) -> merge module. make_layer(in, out) builds a
# layer of the model's kind, used by strategies that own a layer (the highway gate).
WrapFn = Callable[[nn.Module, BlockWidths, Callable[[int, int], nn.Module], int], nn.Module]
# (tape, state, features, widths, trace_layer) -> next state: the merge's analytic cost,
# written next to the merge's forward. trace_layer(tape, z, out) traces a gate layer.
TraceFn = Callable[[Tape, Sym, Sym, BlockWidths, Callable[[Tape, Sym, int], Sym]], Sym]


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str  # one line, shown by `skiplab strategies`
    rule: str  # the update rule, in DESIGN.md's notation
    source: str  # paper or answer the strategy comes from
    widths: Callable[[int, int, int], BlockWidths]  # (width, growth, l) -> BlockWidths
    wrap: WrapFn
    trace: TraceFn

    def block_widths(self, width: int, growth: int, depth: int) -> list[BlockWidths]:
        """Widths of blocks 1..depth."""
        return [self.widths(width, growth, l) for l in range(1, depth + 1)]

    def state_width(self, width: int, growth: int, depth: int) -> int:
        """Width of the state the head sees after ``depth`` blocks."""
        return self.widths(width, growth, depth).out_width if depth else width
