"""A symbolic forward pass: what running a model would cost, without building it.

Every part of a model (layer, norm, activation, merge, head) has a ``trace`` rule next to
its code that records, on a :class:`Tape`, the parameters it owns, the FLOPs it does and
the tensors PyTorch's autograd keeps for backward. Tensors are symbols (channels x
positions per sample), so a trace costs nothing and answers for any depth, including
models that could never be built (concat-double at depth 40).

Counting conventions (DESIGN.md): ``matmul`` = 2 x multiply-adds of Linear/Conv, bias
excluded (``torch.utils.flop_counter``'s rule); ``merge`` = the skip's own element-wise
ops; ``saved`` = elements autograd keeps, each tensor once (a tensor saved by two ops, e.g.
a ReLU's output that the next layer also saves, is one storage), the model's input and
its parameters excluded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Sym:
    """A symbolic activation of shape (B, channels, *spatial) with ``positions`` = prod(spatial).

    A ``recomputed`` tensor is one the memory-efficient concatenation rebuilds in backward
    (the concatenated input and the cheap norm/activation on it, Pleiss et al., arXiv
    1707.06990): autograd keeps nothing of it, so saving it, or statistics of it, counts
    nothing, and what a norm or activation makes of it is recomputed too."""

    channels: int
    positions: int
    id: int
    recomputed: bool = False

    @property
    def elements(self) -> int:  # per sample
        return self.channels * self.positions


class Counts(NamedTuple):
    params: int
    matmul: int  # FLOPs per sample
    merge: int  # FLOPs per sample
    saved_per_sample: int  # elements per sample
    saved_per_batch: int  # elements independent of the batch size (batch-norm statistics)
    concat: int  # elements per sample written by concatenation

    def __sub__(self, other: "Counts") -> "Counts":  # type: ignore[override]
        return Counts(*(a - b for a, b in zip(self, other)))

    def saved_bytes(self, batch: int, dtype_bytes: int = 4) -> int:
        return dtype_bytes * (batch * self.saved_per_sample + self.saved_per_batch)


class Tape:
    """Accumulates the counts of a symbolic forward pass."""

    def __init__(self) -> None:
        self.params = self.matmul = self.merge = 0
        self.saved_per_sample = self.saved_per_batch = self.concat = 0
        self._saved: set[int] = set()
        self._external: set[int] = set()
        self._elements: dict[int, int] = {}  # per storage (a view shares its tensor's id)
        self._next_id = 0

    def new(self, channels: int, positions: int, recomputed: bool = False) -> Sym:
        """A fresh tensor (its own storage)."""
        self._next_id += 1
        self._elements[self._next_id] = channels * positions
        return Sym(channels, positions, self._next_id, recomputed)

    def view(self, t: Sym, channels: int) -> Sym:
        """The last ``channels`` channels of ``t``: a view, so saving it keeps all of ``t``."""
        return Sym(channels, t.positions, t.id, t.recomputed)

    def derived(self, y: Sym) -> Sym:
        """A fresh tensor of ``y``'s shape computed from it by a cheap op (a norm, an
        activation): recomputed in backward when ``y`` is."""
        return self.new(y.channels, y.positions, y.recomputed)

    def keep(self, of: Sym, per_sample: int = 0, per_batch: int = 0) -> None:
        """Autograd keeps statistics of ``of`` (a norm's mean and rstd): nothing when ``of``
        is recomputed in backward."""
        if not of.recomputed:
            self.saved_per_sample += per_sample
            self.saved_per_batch += per_batch

    def input(self, channels: int, positions: int) -> Sym:
        """The model's input: it needs no gradient, so what keeps it is not counted."""
        x = self.new(channels, positions)
        self._external.add(x.id)
        return x

    def save(self, *tensors: Sym) -> None:
        """Autograd keeps these tensors; each storage is counted once."""
        for t in tensors:
            if t.id not in self._saved and t.id not in self._external and not t.recomputed:
                self._saved.add(t.id)
                self.saved_per_sample += self._elements[t.id]

    def counts(self) -> Counts:
        return Counts(self.params, self.matmul, self.merge, self.saved_per_sample,
                      self.saved_per_batch, self.concat)
