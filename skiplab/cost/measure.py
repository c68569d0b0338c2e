"""Measured cost of a built model, to set beside the analytic figures.

* parameters: ``numel`` per part;
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv, forward; backward as
  forward+backward minus forward, never assumed to be 2x);
* merge FLOPs and concatenation bytes: a dispatch mode that sees every ATen call of the
  forward, scoped to the merges themselves: it counts only while neither the stem, a
  branch nor a head is running (module hooks switch it off there), so what it sees is
  the strategies' own ``init``/``read``/``write``/``readout`` work, attributed to the
  connection that did it. The rule (mirrored by every strategy's trace): one FLOP per
  output element of an out-of-place add, sub, mul or div (two for addcmul); one per input element less one
  per output element of a sum; element-wise functions (sigmoid, exp, ...) are not
  counted, as activations are not; bytes written by ``cat``/``stack`` (anywhere in a
  connection, its branch included: the memory-efficient concatenation copies there);
* activation memory: ``torch.autograd.graph.saved_tensors_hooks`` on a training forward
  (aux heads included): each storage once, parameters, buffers and the input excluded;
* wall time: median of repeated forward+backward passes.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ..model import SkipNet, build_model
from ..objective import loss_and_logits
from ..spec import ModelSpec, SpecError
from .analytic import DTYPE_BYTES, analytic_cost

# Share of the available memory a measurement may plan to use: the rest is left to the
# user's other work and to allocator slack.
MEMORY_SHARE = 0.5

_aten = torch.ops.aten
_ARITHMETIC = {_aten.add.Tensor, _aten.sub.Tensor, _aten.mul.Tensor, _aten.div.Tensor,
               _aten.add.Scalar, _aten.sub.Scalar, _aten.mul.Scalar, _aten.div.Scalar, _aten.rsub.Scalar}
_FUSED = {_aten.addcmul.default: 2}  # a multiply and an add per output element
_REDUCTIONS = {_aten.sum.dim_IntList, _aten.sum.default}
_COPIES = {_aten.cat.default, _aten.stack.default}


class _MergeCounter(TorchDispatchMode):
    """Counts the merges' element-wise FLOPs and the bytes they copy, only while ``active``
    (the model's own hooks switch it off inside the stem, the branches and the heads), per
    connection (``current``: the index of the connection running, 0 outside them)."""

    def __init__(self) -> None:
        super().__init__()
        self.off = 0  # > 0 while inside a stem, branch or head
        self.current = 0
        self.merge: dict[int, int] = {}
        self.cat_bytes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _COPIES:  # counted even inside a branch: the memory-efficient concatenation
            # builds the branch's input there (no family's own layers concatenate)
            self.cat_bytes[self.current] = self.cat_bytes.get(self.current, 0) + out.numel() * out.element_size()
            return out
        if self.off:
            return out
        if func in _ARITHMETIC or func in _FUSED:
            self.merge[self.current] = self.merge.get(self.current, 0) + _FUSED.get(func, 1) * out.numel()
        elif func in _REDUCTIONS:
            self.merge[self.current] = self.merge.get(self.current, 0) + args[0].numel() - out.numel()
        return out

    def hooks(self, model: SkipNet) -> list:
        """Install the scoping hooks on ``model``; returns their handles."""
        handles = []

        def off(*_):
            self.off += 1

        def on(*_):
            self.off -= 1

        for part in [model.stem, model.head, *model.aux_heads.values(), *(part for b in model.blocks for part in b.family_parts())]:
            handles += [part.register_forward_pre_hook(off), part.register_forward_hook(on)]
        for l, block in enumerate(model.blocks, start=1):
            handles.append(block.register_forward_pre_hook(lambda *_, l=l: setattr(self, "current", l)))
            handles.append(block.register_forward_hook(lambda *_: setattr(self, "current", 0)))
        return handles


def count_merges(model: SkipNet, x: torch.Tensor) -> tuple[dict[int, int], dict[int, int]]:
    """Merge FLOPs and bytes copied by the merges in one forward of ``model`` on ``x``,
    keyed by connection (1-based; 0 = the stream's init and readout)."""
    counter = _MergeCounter()
    handles = counter.hooks(model)
    try:
        with counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return counter.merge, counter.cat_bytes


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_needed_bytes(analytic: dict[str, Any]) -> int:
    """What a measurement would hold at once: weights, gradients and a flop counter's
    copy of them (3x the parameters), plus the saved activations and their gradients
    (2x the activation bytes)."""
    return 3 * DTYPE_BYTES * analytic["params"]["total"] + 2 * analytic["activation_bytes"]


def why_not_measurable(spec: ModelSpec, batch: int, analytic: dict[str, Any] | None = None) -> str | None:
    """None if ``spec`` can be built and measured here, else the reason and what it would need."""
    analytic = analytic or analytic_cost(spec, batch)
    need, have = memory_needed_bytes(analytic), available_memory_bytes()
    needs = (f"it would need about {need / 2**30:,.1f} GiB (parameters {analytic['params']['total']:,}, "
             f"activations {analytic['activation_bytes'] / 2**30:,.2f} GiB for batch {batch})")
    try:
        spec.check_buildable()
    except SpecError as e:
        return f"not measured: {e}; {needs}"
    if need > MEMORY_SHARE * have:
        return f"not measured: {needs}; {have / 2**30:,.1f} GiB is available"
    return None


def saved_activation_bytes(model: SkipNet, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward during a training forward of ``model`` on ``x``."""
    excluded = {p.untyped_storage().data_ptr() for p in model.parameters()}
    excluded |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    excluded.add(x.untyped_storage().data_ptr())
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in excluded and storage.nbytes() > 0:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, return_aux=True)
    return sum(seen.values())


def _loss(model: SkipNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return loss_and_logits(model, x, y)[0]


def measure_cost(spec: ModelSpec, batch: int = 32, seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """Build ``spec`` and measure its costs on a random batch (same keys as analytic_cost);
    ``repeats`` timed forward+backward passes after one warm-up (0: no timing)."""
    model = build_model(spec, seed=seed).train()
    g = torch.Generator().manual_seed(seed)
    x, y = spec.family.random_batch(spec, batch, g)
    structure = model.structure()

    with FlopCounterMode(display=False) as forward:
        model(x)
    counts = forward.get_flop_counts()
    per_block = [sum(counts.get(f"SkipNet.blocks.{i}", {}).values()) // batch for i in range(len(model.blocks))]
    merge_by_block, cat_by_block = count_merges(model, x)
    with FlopCounterMode(display=False) as train_forward:
        model(x, return_aux=True)
    with FlopCounterMode(display=False) as train_step:
        _loss(model, x, y).backward()
    model.zero_grad(set_to_none=True)

    times = []
    for _ in range(repeats + 1 if repeats else 0):  # the first pass warms up allocator and kernels
        start = time.perf_counter()
        _loss(model, x, y).backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)

    matmul = forward.get_total_flops() // batch
    merge = sum(merge_by_block.values()) // batch
    return {
        "params": structure["params"],
        "flops": {"matmul": matmul, "merge": merge, "total": matmul + merge,
                  "backward": (train_step.get_total_flops() - train_forward.get_total_flops()) // batch},
        "activation_bytes": saved_activation_bytes(model, x),
        "concat_bytes": sum(cat_by_block.values()),
        "per_block": [{"block": b["block"], "params": b["params"], "flops": f,
                       "merge_flops": merge_by_block.get(b["block"], 0) // batch,
                       "concat_bytes": cat_by_block.get(b["block"], 0)}
                      for b, f in zip(structure["per_block"], per_block)],
        "seconds_forward_backward": statistics.median(times[1:]) if repeats else None,
    }
