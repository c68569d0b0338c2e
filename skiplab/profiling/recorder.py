"""One dispatch mode that sees every ATen call of a forward and books it to the module
running it (``scope.ModuleStack``): matmul/conv FLOPs, merge FLOPs, bytes copied by
``cat``/``stack``.

FLOPs are PyTorch's own: each op's formula from ``torch.utils.flop_counter``'s registry
(2 x multiply-adds, bias excluded), and an op without a formula is decomposed first, as
``FlopCounterMode`` does, so the per-module figures add up to what ``FlopCounterMode``
reports (``tests/test_profile.py`` checks it).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .merge_rule import COPIES, Weights, merge_flops
from .scope import ModuleStack


class Recorder(TorchDispatchMode):
    """Per module name: ``flops`` (matmul/conv), ``merge_flops``, ``concat_bytes``."""

    def __init__(self, stack: ModuleStack, weights: Weights) -> None:
        super().__init__()
        self.stack, self.weights = stack, weights
        self.flops: dict[str, int] = defaultdict(int)
        self.merge_flops: dict[str, int] = defaultdict(int)
        self.concat_bytes: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in flop_registry and func is not torch.ops.prim.device.default:
            with self:  # e.g. a fused attention kernel without a formula: count its parts
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        where = self.stack.current
        if packet in flop_registry:
            self.flops[where] += int(flop_registry[packet](*args, **kwargs, out_val=out))
        if func in COPIES:
            self.concat_bytes[where] += out.numel() * out.element_size()
        elif isinstance(out, torch.Tensor):
            n = merge_flops(func, args, out, self.weights)
            if n:
                self.merge_flops[where] += n
        self.weights.note(func, (args, kwargs), out)
        return out
