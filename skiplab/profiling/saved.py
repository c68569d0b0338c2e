"""Bytes autograd keeps for backward, per module: ``saved_tensors_hooks`` on a forward,
each storage counted once (the first module to save it is charged), parameters, buffers
and the example inputs not at all (docs/design.md, "Counting conventions")."""

from __future__ import annotations

from contextlib import contextmanager
from collections import defaultdict

import torch

from .storage import storage_key

from .scope import ModuleStack


class SavedBytes:
    def __init__(self, stack: ModuleStack, excluded: list[torch.Tensor]) -> None:
        self.stack = stack
        self.excluded = {storage_key(t) for t in excluded}
        self.seen: dict[int, tuple[int, str]] = {}  # storage -> (bytes, module)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage_key(t)
        if ptr not in self.excluded and ptr not in self.seen and storage.nbytes() > 0:
            self.seen[ptr] = (storage.nbytes(), self.stack.current)
        return t

    @contextmanager
    def hooks(self):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self

    def per_module(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for nbytes, where in self.seen.values():
            out[where] += nbytes
        return dict(out)
