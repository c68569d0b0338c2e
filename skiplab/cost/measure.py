"""Measured cost of a built model, to set beside the analytic figures.

* parameters: ``numel`` per part;
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv, forward; backward as
  forward+backward minus forward, never assumed to be 2x);
* merge FLOPs and concatenation bytes: a dispatch mode that sees every ATen call of the
  forward; inside a SkipNet forward the only element-wise ``add``/``sub``/``mul`` calls
  are the merges' (norms, activations and pooling are single fused ops), and every
  ``cat`` is a concatenating merge;
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
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ..model import SkipNet, build_model
from ..spec import ModelSpec, SpecError
from .analytic import DTYPE_BYTES, analytic_cost

# Share of the available memory a measurement may plan to use: the rest is left to the
# user's other work and to allocator slack.
MEMORY_SHARE = 0.5

_MERGE_OPS = {torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor, torch.ops.aten.mul.Tensor}
_CAT_OPS = {torch.ops.aten.cat.default}


class _ElementwiseCounter(TorchDispatchMode):
    """Counts the output elements of out-of-place add/sub/mul and the bytes cat writes.
    (In-place updates such as batch norm's ``num_batches_tracked += 1`` are not merges.)"""

    def __init__(self) -> None:
        super().__init__()
        self.merge_elements = 0
        self.cat_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _MERGE_OPS:
            self.merge_elements += out.numel()
        elif func in _CAT_OPS:
            self.cat_bytes += out.numel() * out.element_size()
        return out


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
    logits, aux = model(x, return_aux=True)
    return F.cross_entropy(logits, y) + sum(model.spec.aux_weight * F.cross_entropy(a, y) for a in aux)


def measure_cost(spec: ModelSpec, batch: int = 32, seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """Build ``spec`` and measure its costs on a random batch (same keys as analytic_cost);
    ``repeats`` timed forward+backward passes after one warm-up (0: no timing)."""
    model = build_model(spec, seed=seed).train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *spec.input_shape, generator=g)
    y = torch.randint(0, spec.classes, (batch,), generator=g)
    structure = model.structure()

    with FlopCounterMode(display=False) as forward:
        model(x)
    counts = forward.get_flop_counts()
    per_block = [sum(counts.get(f"SkipNet.blocks.{i}", {}).values()) // batch for i in range(spec.depth)]
    with _ElementwiseCounter() as elementwise:
        model(x)
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
    merge = elementwise.merge_elements // batch
    return {
        "params": structure["params"],
        "flops": {"matmul": matmul, "merge": merge, "total": matmul + merge,
                  "backward": (train_step.get_total_flops() - train_forward.get_total_flops()) // batch},
        "activation_bytes": saved_activation_bytes(model, x),
        "concat_bytes": elementwise.cat_bytes,
        "per_block": [{"block": b["block"], "params": b["params"], "flops": f}
                      for b, f in zip(structure["per_block"], per_block)],
        "seconds_forward_backward": statistics.median(times[1:]) if repeats else None,
    }
