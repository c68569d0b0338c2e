"""One dispatch mode that sees every ATen call of a forward, and then of the backward,
and books it to the module running it (``scope.ModuleStack``).

Forward: matmul/conv FLOPs, merge FLOPs (``merge_rule``), bytes written by ``cat``/``stack``.
Backward: its FLOPs, and the bytes of the concatenations a recompute executes again
(``torch.utils.checkpoint``, a memory-efficient DenseNet; ``recompute_concat_bytes``): a
``cat``/``stack`` in backward counts when none of its inputs is a gradient (a tensor made
from the gradient backward starts from) and one is an activation. The ``cat`` that
autograd runs to join gradients (the backward of ``split``) is not a recompute. A recompute
is booked to the module whose forward made the same concatenation (same newest input,
same output shape), else to the module running when it is recomputed.

FLOPs are PyTorch's own: each op's formula from ``torch.utils.flop_counter``'s registry
(2 x multiply-adds, bias excluded; ``flop_rules`` adds the attention kernels it lacks), and
an op without a formula is decomposed first, as ``FlopCounterMode`` does, so the
per-module figures add up to what ``FlopCounterMode`` reports (``tests/test_profile.py``
checks it). An op with neither a formula nor a decomposition whose name says it multiplies
matrices (``flop_rules.looks_heavy``: attention kernels, convolutions, ``*mm``, RNN cells)
is listed in ``uncounted`` with its number of calls, not silently counted as 0.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry
from torch.utils.weak import WeakTensorKeyDictionary

from .flop_rules import looks_heavy, op_name
from .merge_rule import COPIES, Kinds, _flat, merge_flops, product_merge_flops
from .storage import storage_key
from .scope import ModuleStack


def _cat_key(func, args, out) -> tuple:
    """A concatenation's identity across forward and a recompute: its newest input's
    storage and its output's shape."""
    newest = args[0][-1]
    return storage_key(newest), newest.storage_offset(), tuple(out.shape)


class Recorder(TorchDispatchMode):
    """Per module name: ``flops`` (matmul/conv), ``merge_flops``, ``concat_bytes`` (forward),
    ``recompute_concat_bytes`` (backward); ``backward_flops`` in total; ``uncounted``: op
    name -> calls, forward and backward."""

    def __init__(self, stack: ModuleStack, kinds: Kinds) -> None:
        super().__init__()
        self.stack, self.kinds = stack, kinds
        self.flops: dict[str, int] = defaultdict(int)
        self.merge_flops: dict[str, int] = defaultdict(int)
        self.concat_bytes: dict[str, int] = defaultdict(int)
        self.recompute_concat_bytes: dict[str, int] = defaultdict(int)
        self.backward_flops = 0
        self.uncounted: dict[str, int] = defaultdict(int)
        self.in_backward = False
        self.grads = WeakTensorKeyDictionary()
        self.cats: dict[tuple, str] = {}  # _cat_key -> module, for the forward's concatenations

    @contextmanager
    def backward(self, seed: torch.Tensor):
        """Record a backward started from the gradient ``seed``."""
        self.in_backward = True
        self.grads[seed] = True
        try:
            with self:
                yield self
        finally:
            self.in_backward = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in flop_registry and func is not torch.ops.prim.device.default:
            with self:  # e.g. a fused kernel without a formula: count its parts
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        where = self.stack.current
        mixing = None if self.in_backward else product_merge_flops(func, args, self.stack.current_module, self.kinds)
        if mixing is not None:  # stream mixing: a merge (merge_rule), not matmul FLOPs
            self.merge_flops[where] += mixing
        elif packet in flop_registry:
            n = int(flop_registry[packet](*args, **kwargs, out_val=out))
            if self.in_backward:
                self.backward_flops += n
            else:
                self.flops[where] += n
        elif looks_heavy(func):
            self.uncounted[op_name(func)] += 1
        if self.in_backward:
            self._in_backward(func, args, kwargs, out, where)
            return out
        if func in COPIES:
            if self._concatenates(args[0]):
                self.concat_bytes[where] += out.numel() * out.element_size()
                self.cats.setdefault(_cat_key(func, args, out), where)
        elif mixing is None and isinstance(out, torch.Tensor):
            n = merge_flops(func, args, out, self.kinds)
            if n:
                self.merge_flops[where] += n
        self.kinds.note(func, (args, kwargs), out)
        return out

    def _concatenates(self, inputs) -> bool:
        """Is this ``cat``/``stack`` concatenation traffic? When an input is an activation,
        and it does not run in a ``products_are_merges`` module: there a ``cat`` stacks the
        mixing's operands (hyper's ``[A_m | A_r]``, mHC's per-token maps, a few numbers per
        token), not the stream's features. Stacking weights alone is never counted."""
        if getattr(type(self.stack.current_module), "products_are_merges", False):
            return False
        return any(isinstance(t, torch.Tensor) and self.kinds.is_activation(t) for t in inputs)

    def _in_backward(self, func, args, kwargs, out, where) -> None:
        tensors = [a for a in _flat((args, kwargs)) if isinstance(a, torch.Tensor)]
        if any(t in self.grads for t in tensors):
            for o in _flat(out):
                if isinstance(o, torch.Tensor):
                    self.grads[o] = True
            return
        if func in COPIES and any(self.kinds.is_activation(t) for t in args[0]):
            where = self.cats.get(_cat_key(func, args, out), where)
            self.recompute_concat_bytes[where] += out.numel() * out.element_size()
        self.kinds.note(func, (args, kwargs), out)  # a recomputed tensor is an activation again
