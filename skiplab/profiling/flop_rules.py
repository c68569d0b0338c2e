"""FLOP rules for the attention kernels (and the few plain products) ``torch.utils.flop_counter``
has none for, and the test for likely FLOP-heavy ops that no rule covers.

``F.scaled_dot_product_attention`` picks a kernel per device and input. torch 2.13's
registry has rules for the CUDA ones (``_scaled_dot_product_flash_attention``,
``_efficient_attention``, ``_cudnn_attention``, their backwards) but not for the CPU flash
kernel (``_scaled_dot_product_flash_attention_for_cpu`` and its backward), the one every
CPU run of SDPA without dropout uses, nor for the kernels of other backends
(``_scaled_dot_product_fused_attention_overrideable``, MPS's
``_scaled_dot_product_attention_math_for_mps``). Without a rule those kernels count 0
FLOPs: a GPT-2 under SDPA loses QK^T and AV. This module registers rules for them with
``torch.utils.flop_counter.register_flop_formula``, only where torch has none, so that
every counter in the process (``FlopCounterMode`` too, not only skiplab's) agrees; the
formulas are torch's own (``sdpa_flop_count``, ``sdpa_backward_flop_count``), so a CPU
count equals a CUDA count of the same shapes.

Conventions, as torch's rules for the CUDA kernels:

* **A causal mask is counted as the full T x T**: QK^T and AV cost 2 T S d FLOPs each
  (per batch and head; T queries, S keys, d channels), masked or not. That is what the
  explicit path (``q @ k.transpose(-2, -1)``, mask, softmax, ``@ v``) costs in matmuls, so a
  model counts the same FLOPs whichever path it takes; a kernel that skips the masked
  half does about half that work, which the count does not show.
* **Backward: five products**, the scores recomputed (one QK^T) and the four gradient
  products (dV, dP, dQ, dK); the explicit path's backward has only the four, since it
  keeps the attention matrix instead of recomputing it.
* Grouped-query attention: each query head attends at its own cost (key/value heads
  broadcast).

The plain products torch 2.13's registry also lacks get the registry's convention, 2 FLOPs
per multiply-add, the added tensor excluded: ``dot``/``vdot`` of n-vectors 2 n (DWA's custom
backward calls ``vdot``), ``mv``/``addmv`` of an m x n matrix 2 m n, ``addr`` (an outer
product added) 2 m n, ``addbmm`` as ``bmm``, and the in-place ``addmm_``, ``baddbmm_``,
``addbmm_``, ``addmv_``, ``addr_`` as their out-of-place forms.

Saved bytes need nothing here: ``saved_tensors_hooks`` see what each kernel keeps (the
CPU flash kernel: q, k, v, its output and the log-sum-exp per query; no T x T matrix).
"""

from __future__ import annotations

import re

import torch
from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _dot(a, b, *args, out_shape=None, **kwargs) -> int:
    return 2 * a[0]


def _mv(mat, vec, *args, out_shape=None, **kwargs) -> int:
    return 2 * mat[0] * mat[1]


def _addmv(self, mat, vec, *args, out_shape=None, **kwargs) -> int:
    return 2 * mat[0] * mat[1]


def _addr(self, vec1, vec2, *args, out_shape=None, **kwargs) -> int:
    return 2 * vec1[0] * vec2[0]


def _addmm(self, a, b, *args, out_shape=None, **kwargs) -> int:
    return 2 * a[0] * a[1] * b[1]


def _addbmm(self, a, b, *args, out_shape=None, **kwargs) -> int:
    return 2 * a[0] * a[1] * a[2] * b[2]


PRODUCTS = ((("dot", "vdot"), _dot), (("mv",), _mv), (("addmv", "addmv_"), _addmv), (("addr", "addr_"), _addr),
            (("addmm_",), _addmm), (("addbmm", "addbmm_", "baddbmm_"), _addbmm))
FORWARD_KERNELS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable",
                   "_scaled_dot_product_attention_math_for_mps")
BACKWARD_KERNELS = ("_scaled_dot_product_flash_attention_for_cpu_backward",
                    "_scaled_dot_product_fused_attention_overrideable_backward")


def _register() -> list:
    """Register the rules torch lacks (an op this torch does not have is skipped); returns
    the op packets registered here."""
    added = []
    for names, rule in ((FORWARD_KERNELS, _forward), (BACKWARD_KERNELS, _backward), *PRODUCTS):
        packets = [getattr(_aten, n) for n in names if hasattr(_aten, n)]
        missing = [p for p in packets if p not in flop_registry]
        if missing:
            register_flop_formula(missing)(rule)
            added += missing
    return added


REGISTERED = _register()

# Ops that multiply matrices (or are made of such products) by name: attention kernels,
# convolutions, matrix products, recurrent cells. An op seen by the profiler with a name
# like these and no FLOP rule (and no decomposition into ops that have one) is reported as
# uncounted rather than silently counted as 0 FLOPs.
HEAVY = re.compile(r"attention|attn|convolution|conv\d|conv_|(^|_)(b|add|addb|baddb)?mm(_|$)|matmul|einsum"
                   r"|(^|_)(add)?mv(_|$)|(^|_)v?dot(_|$)|(^|_)addr(_|$)|(^|_)linear(_|$)|^_trilinear$|transformer_encoder"
                   r"|lstm|gru|rnn")


def op_name(func) -> str:
    """``namespace.op`` of an OpOverload (``aten._scaled_dot_product_flash_attention_for_cpu``)."""
    return str(func._overloadpacket)


def looks_heavy(func) -> bool:
    """True when ``func``'s name says it multiplies matrices (see ``HEAVY``)."""
    return bool(HEAVY.search(op_name(func).rsplit(".", 1)[-1]))
