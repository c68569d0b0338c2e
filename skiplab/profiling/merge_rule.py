"""What counts as a merge, in a model skiplab did not build.

A skip connection's own arithmetic is element-wise work that combines tensors: the sum of
a residual block, ReZero's ``a * f``, LayerScale's ``g * f``, highway's gated mix, the
weighted sums of DenseFormer and hyper-connections. Whoever wrote the model, it reaches
PyTorch as ATen ``add``, ``sub``, ``mul``, ``div``, ``lerp``, ``addcmul`` and ``sum``, out of
place (``s + f``) or in place (``out += identity``, ``x.add_(f)``: torchvision's and timm's
ResNets). Every operand has one of four kinds, decided by where its values come from, never
by its shape:

* an **activation** depends on the data: the example inputs and every tensor computed
  with an activation among its operands;
* a **weight** is data-independent and made from the model's parameters or buffers: the
  parameters and buffers themselves, their views, and tensors computed from weights and
  constants alone (a softmax of mixing weights; GPT-2's position embeddings, an embedding
  lookup of ``arange(T)``);
* a **constant** is data-independent and made from no weight: what a factory makes
  (``arange``, ``ones``, ``zeros_like(x)``, ``randn_like(x)``: a ``*_like`` of an activation
  takes its shape, not its values), and what is computed from constants alone (a causal
  mask built from ``ones(T, T).tril()``), or a tensor the forward did not make;
* a **number**: a Python number, or any 0-dim tensor that is not a weight (attention's
  ``sqrt(d)``); constants act as numbers below.

Since a kind follows the values, a figure per sample does not change with the batch size:
GPT-2's positional table is a weight whether it broadcasts over a batch of 2 or has the
output's shape at batch 1. The rule, one FLOP per output element (``addcmul`` 2), as
``skiplab.cost`` counts every strategy's merges by it:

* a sum (``add``, ``sub``, ``lerp``'s two ends, ``addcmul``'s addend) counts when at least one
  operand is an activation, every activation has the output's shape (not broadcast), and
  no operand is a number or a constant: ``s + f`` is a merge, and so is a weight added to an
  activation (hyper-connections' ``s * t + A``, a bias written out by hand, a learned
  positional table); ``x + 1``, a constant mask, an activation broadcast across heads are not;
* a product (``mul``, ``div``, ``addcmul``'s factors) counts when at least one operand is an
  activation and none is a number or a constant; weights and activations may broadcast
  (ReZero's ``a * f``, LayerScale's ``g * f``, the per-stream weights of hyper-connections).
  A scaling or shift by a number is not a merge (``0.5 * x``, ``q / sqrt(d)``, ``1 + t``),
  except on a statistic a counted sum made (``H.sum(0) / n``, the mean of the streams;
  ``(x * x).sum(-1) / D + eps``, an RMS written out by hand);
* ``lerp(s, f, w) = s + w (f - s)`` counts when both ends are activations of the output's
  shape, whatever its weight (a number too: a fixed mix of two activations is a merge);
* the sum over a dimension of an activation costs one FLOP per input element less one per
  output element;
* an in-place form (``add_``, ``sub_``, ``mul_``, ``div_``, ``lerp_``, ``addcmul_``) counts as
  its out-of-place form when the tensor written to is an activation; written into a weight
  (a running statistic) it is a state update, never a merge.

Stream mixing is a merge too (issue 27): hyper-connections, mHC and mHC-lite mix their
copies of the stream with one matrix product per layer (``mm``, ``bmm``), where an
element-wise sum over the copies would have been counted by the rule above. A matrix
product counts as a merge, and not as matmul FLOPs, when the module running it declares
``products_are_merges = True`` (its own ops: a branch inside it is a module of its own),
no operand is a parameter or buffer (a learned projection such as mHC's ``x phi`` stays
matmul) and at least one is an activation: K multiplications and K - 1 additions per
output element for a contraction over K, what the same mix written element-wise counts.

Activations, norms, softmax, pooling (``mean``) and attention kernels are their own ATen
ops and never merges. What the rule can still count that is no skip: products inside a
layer written out by hand (GPT-2's ``gelu_new``, ``x * sigmoid(x)``, gated MLPs) and, on the
CPU, dropout in training mode (written as ``x * mask``). What can still depend on the batch
size: an activation reduced over the batch (a batch statistic written out by hand,
``x - x.mean(0)``) has the output's shape at batch 1 only. Each count is booked to the
module that ran it, so the table shows where it lands.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from .storage import storage_key

_aten = torch.ops.aten
ELEMENTWISE = {_aten.add.Tensor: 1, _aten.sub.Tensor: 1, _aten.mul.Tensor: 1, _aten.div.Tensor: 1,
               _aten.lerp.Tensor: 1, _aten.lerp.Scalar: 1, _aten.addcmul.default: 2}
# ``out += identity`` and friends: counted as the out-of-place op, written into args[0]
IN_PLACE = {_aten.add_.Tensor: _aten.add.Tensor, _aten.sub_.Tensor: _aten.sub.Tensor,
            _aten.mul_.Tensor: _aten.mul.Tensor, _aten.div_.Tensor: _aten.div.Tensor,
            _aten.lerp_.Tensor: _aten.lerp.Tensor, _aten.lerp_.Scalar: _aten.lerp.Scalar,
            _aten.addcmul_.default: _aten.addcmul.default}
LERPS = {_aten.lerp.Scalar, _aten.lerp.Tensor}
REDUCTIONS = {_aten.sum.dim_IntList, _aten.sum.default}
PRODUCTS = {_aten.mul.Tensor, _aten.div.Tensor}
# CPU dropout in training mode draws its mask with bernoulli_, then computes x * mask
RANDOM_FILLS = {_aten.bernoulli_.float, _aten.bernoulli_.Tensor}
COPIES = {_aten.cat.default, _aten.stack.default}
# matrix products a ``products_are_merges`` module's mixing may run (see the module docstring)
MATRIX_PRODUCTS = {_aten.mm.default, _aten.bmm.default}
# Factories that take a tensor for its shape, dtype and device only: their values are not its data.
LIKE = {getattr(_aten, n) for n in ("empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
                                   "randint_like", "new_empty", "new_empty_strided", "new_zeros", "new_ones",
                                   "new_full", "scalar_tensor") if hasattr(_aten, n)}


class Kinds:
    """Tells activations, weights and constants apart (see the module docstring): the
    example inputs and the model's parameters and buffers by storage, every tensor the
    forward makes as it is made (``note``)."""

    def __init__(self, weights, inputs) -> None:
        self.weight_storages = {storage_key(t) for t in weights}
        self.input_storages = {storage_key(t) for t in inputs} - self.weight_storages
        self.activations = WeakTensorKeyDictionary()
        self.derived = WeakTensorKeyDictionary()  # weights computed from weights and constants
        self.reduced = WeakTensorKeyDictionary()  # outputs of counted sums over a dimension
        self.masks = WeakTensorKeyDictionary()  # tensors filled at random (dropout's mask)

    def is_weight(self, t: torch.Tensor) -> bool:
        return storage_key(t) in self.weight_storages or (t in self.derived and t not in self.activations)

    def is_activation(self, t: torch.Tensor) -> bool:
        if self.is_weight(t) or t in self.masks:
            return False
        return t in self.activations or storage_key(t) in self.input_storages

    def kind(self, a) -> str:
        if not isinstance(a, torch.Tensor):
            return "number"
        if a in self.masks:
            return "mask"
        if self.is_weight(a):
            return "weight"
        if self.is_activation(a):
            return "number" if a.dim() == 0 else "activation"
        return "number"  # a constant acts as a number

    def note(self, func, args, out) -> None:
        """Give ``out`` its kind: an activation when an operand is one (a factory of the
        ``*_like`` kind excepted), a weight when every operand is a weight or a constant and
        one is a weight, a constant otherwise; a tensor filled at random is a mask."""
        if func in RANDOM_FILLS:
            self.masks[args[0][0]] = True
            return
        outs = [o for o in _flat(out) if isinstance(o, torch.Tensor)]
        if func._overloadpacket in LIKE:
            return  # a constant: its values are not its argument's
        tensors = [a for a in _flat(args) if isinstance(a, torch.Tensor)]
        if any(self.is_activation(t) for t in tensors):
            for o in outs:
                if storage_key(o) not in self.weight_storages:  # a parameter stays one
                    self.activations[o] = True
        elif any(self.is_weight(t) for t in tensors):
            for o in outs:
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


def merge_flops(func, args, out: torch.Tensor, kinds: Kinds) -> int:
    """FLOPs ``func(*args) -> out`` counts as a merge under the rule above (0 if none);
    ``kinds`` as they were before the op ran."""
    if func in REDUCTIONS:
        if not kinds.is_activation(args[0]):
            return 0
        kinds.reduced[out] = True
        return args[0].numel() - out.numel()
    if func in IN_PLACE:
        if kinds.kind(args[0]) != "activation":
            return 0  # written into a weight (a running statistic) or a constant: no merge
        func = IN_PLACE[func]
    per = ELEMENTWISE.get(func)
    if per is None:
        return 0
    operands = [a for a in args if isinstance(a, (torch.Tensor, int, float, complex)) and not isinstance(a, bool)]
    if func in LERPS:  # lerp(x, y, w) = x + w (y - x): a mix of its two ends
        ends = operands[:2]
        if all(kinds.kind(a) == "activation" and a.shape == out.shape for a in ends) and \
                kinds.kind(operands[2]) != "mask":
            return per * out.numel()
        return 0
    if func is _aten.addcmul.default:
        summed, factors = operands[:1], operands[1:3]  # s + t1 * t2
    elif func in PRODUCTS:
        summed, factors = [], operands[:2]
    else:
        summed, factors = operands[:2], []
    kinds_of = [kinds.kind(a) for a in summed + factors]
    if "activation" not in kinds_of or "mask" in kinds_of:
        return 0
    if "number" in kinds_of:  # a scaling or shift: counted only on a statistic of a counted sum
        if not any(isinstance(a, torch.Tensor) and a in kinds.reduced for a in summed + factors):
            return 0
        kinds.reduced[out] = True  # sum / n + eps: still that statistic
        return per * out.numel()
    if any(kinds.kind(a) == "activation" and a.shape != out.shape for a in summed):
        return 0  # an activation broadcast into a sum: a mask across heads, not a merge
    return per * out.numel()


def product_merge_flops(func, args, module, kinds: Kinds) -> int | None:
    """Merge FLOPs of the matrix product ``func(*args)`` run by ``module`` when it is stream
    mixing (see the module docstring: ``K`` multiplications and ``K - 1`` additions per
    output element), else None (a matmul, or no matrix product)."""
    if func not in MATRIX_PRODUCTS or not getattr(type(module), "products_are_merges", False):
        return None
    a, b = args[0], args[1]
    if any(storage_key(t) in kinds.weight_storages for t in (a, b)):
        return None  # a learned projection: matmul FLOPs
    if not (kinds.is_activation(a) or kinds.is_activation(b)):
        return None
    k = a.shape[-1]
    outputs = a.numel() // k * b.shape[-1]  # (..., m, k) @ (..., k, n): ... m n elements
    return (2 * k - 1) * outputs
