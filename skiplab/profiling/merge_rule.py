"""What counts as a merge, in a model skiplab did not build.

A skip connection's own arithmetic is element-wise work that combines tensors: the sum of
a residual block, ReZero's ``a * f``, LayerScale's ``g * f``, highway's gated mix, the
weighted sums of DenseFormer and hyper-connections. Whoever wrote the model, it reaches
PyTorch as ATen ``add``, ``sub``, ``mul``, ``div``, ``lerp``, ``addcmul`` and ``sum``. An
operand is an **activation** (computed from the input), a **weight** (a parameter, a
buffer, a view of one, or a tensor computed from weights alone: a softmax of mixing
weights), or a **number** (a Python number or a 0-dim activation such as attention's
``sqrt(d)``). The rule, one FLOP per output element (``addcmul`` 2), as
``skiplab.cost`` counts every strategy's merges by it:

* a sum (``add``, ``sub``, ``lerp``'s two ends, ``addcmul``'s addend) counts when at least one
  operand is an activation, every activation has the output's shape (not broadcast), and
  no operand is a number: ``s + f`` is a merge; ``x + 1``, a mask added across heads, a
  positional table added across the batch are not;
* a product (``mul``, ``div``, ``addcmul``'s factors, ``lerp``'s weight) counts when at least one
  operand is an activation and none is a number; weights and activations may broadcast
  (ReZero's ``a * f``, LayerScale's ``g * f``, the per-stream weights of hyper-connections).
  A scaling or shift by a number is not a merge (``0.5 * x``, ``q / sqrt(d)``, ``1 + t``),
  except on a statistic a counted sum made (``H.sum(0) / n``, the mean of the streams;
  ``(x * x).sum(-1) / D + eps``, an RMS written out by hand);
* the sum over a dimension of an activation costs one FLOP per input element less one per
  output element;
* in-place forms (``x += f``) are not counted.

Activations, norms, softmax, pooling (``mean``) and attention kernels are their own ATen
ops and never merges. What the rule can still count that is no skip: products inside a
layer written out by hand (GPT-2's ``gelu_new``, ``x * sigmoid(x)``, gated MLPs) and, on the
CPU, dropout in training mode (written as ``x * mask``). Each count is booked to the module
that ran it, so the table shows where it lands.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from .storage import storage_key

_aten = torch.ops.aten
ELEMENTWISE = {_aten.add.Tensor: 1, _aten.sub.Tensor: 1, _aten.mul.Tensor: 1, _aten.div.Tensor: 1,
               _aten.lerp.Tensor: 1, _aten.lerp.Scalar: 1, _aten.addcmul.default: 2}
REDUCTIONS = {_aten.sum.dim_IntList, _aten.sum.default}
PRODUCTS = {_aten.mul.Tensor, _aten.div.Tensor}
# CPU dropout in training mode draws its mask with bernoulli_, then computes x * mask
RANDOM_FILLS = {_aten.bernoulli_.float, _aten.bernoulli_.Tensor}
COPIES = {_aten.cat.default, _aten.stack.default}


class Weights:
    """Tells weights from activations: the model's parameters and buffers (by storage),
    and every tensor computed from weights alone (tracked as it is made)."""

    def __init__(self, tensors) -> None:
        self.storages = {storage_key(t) for t in tensors}
        self.derived = WeakTensorKeyDictionary()
        self.reduced = WeakTensorKeyDictionary()  # outputs of counted sums over a dimension
        self.masks = WeakTensorKeyDictionary()  # tensors filled at random (dropout's mask)

    def holds(self, t: torch.Tensor) -> bool:
        return t in self.derived or storage_key(t) in self.storages

    def note(self, func, args, out) -> None:
        """Mark ``out`` as a weight when every tensor ``args`` holds is one; mark a tensor
        filled at random as a mask."""
        if func in RANDOM_FILLS:
            self.masks[args[0][0]] = True
            return
        tensors = [a for a in _flat(args) if isinstance(a, torch.Tensor)]
        if tensors and all(self.holds(t) for t in tensors):
            for o in _flat(out):
                if isinstance(o, torch.Tensor):
                    self.derived[o] = True


def _flat(x):
    if isinstance(x, (list, tuple)):
        for item in x:
            yield from _flat(item)
    elif isinstance(x, dict):
        for item in x.values():
            yield from _flat(item)
    else:
        yield x


def merge_flops(func, args, out: torch.Tensor, weights: Weights) -> int:
    """FLOPs ``func(*args) -> out`` counts as a merge under the rule above (0 if none)."""
    if func in REDUCTIONS:
        if weights.holds(args[0]):
            return 0
        weights.reduced[out] = True
        return args[0].numel() - out.numel()
    per = ELEMENTWISE.get(func)
    if per is None:
        return 0
    operands = [a for a in args if isinstance(a, (torch.Tensor, int, float, complex)) and not isinstance(a, bool)]
    if func in (_aten.lerp.Scalar, _aten.lerp.Tensor):
        summed, factors = operands[:2], operands[2:3]  # lerp(x, y, w) = x + w (y - x)
    elif func is _aten.addcmul.default:
        summed, factors = operands[:1], operands[1:3]  # s + t1 * t2
    elif func in PRODUCTS:
        summed, factors = [], operands[:2]
    else:
        summed, factors = operands[:2], []
    kinds = [_kind(a, weights) for a in summed + factors]
    if "activation" not in kinds or "mask" in kinds:
        return 0
    if "number" in kinds:  # a scaling or shift: counted only on a statistic of a counted sum
        if not any(isinstance(a, torch.Tensor) and a in weights.reduced for a in summed + factors):
            return 0
        weights.reduced[out] = True  # sum / n + eps: still that statistic
        return per * out.numel()
    if any(_kind(a, weights) == "activation" and a.shape != out.shape for a in summed):
        return 0  # an activation broadcast into a sum: a mask or a table, not a merge
    return per * out.numel()


def _kind(a, weights: Weights) -> str:
    if not isinstance(a, torch.Tensor):
        return "number"
    if weights.holds(a):
        return "weight"
    if a in weights.masks:
        return "mask"
    return "number" if a.dim() == 0 else "activation"
