"""The cost of a model built on a real device: the same counter as ``model_cost`` (the
profiler, ``skiplab.cost.count.assemble``) on real tensors, plus what only a real run has:
backward FLOPs (``FlopCounterMode`` over a training step, forward subtracted, never
assumed to be 2x the forward) and wall time (median of repeated forward+backward passes).
Set beside ``model_cost`` it checks that the meta device's count is the device's own
(``skiplab cost --measure``: the ratios are 1 unless a kernel differs between them).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..model import SkipNet, build_model
from ..objective import loss_and_logits
from ..profiling import profile
from ..spec import ModelSpec, SpecError
from .answer import model_cost
from .count import DTYPE_BYTES, assemble

# Share of the available memory a measurement may plan to use: the rest is left to the
# user's other work and to allocator slack.
MEMORY_SHARE = 0.5

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


def memory_needed_bytes(counted: dict[str, Any]) -> int:
    """What a measurement would hold at once: weights, gradients and a flop counter's
    copy of them (3x the parameters), plus the saved activations and their gradients
    (2x the activation bytes)."""
    return 3 * DTYPE_BYTES * counted["params"]["total"] + 2 * counted["activation_bytes"]


def why_not_measurable(spec: ModelSpec, batch: int, counted: dict[str, Any] | None = None) -> str | None:
    """None if ``spec`` can be built and measured here, else the reason and what it would need."""
    counted = counted or model_cost(spec, batch)
    need, have = memory_needed_bytes(counted), available_memory_bytes()
    needs = (f"it would need about {need / 2**30:,.1f} GiB (parameters {counted['params']['total']:,}, "
             f"activations {counted['activation_bytes'] / 2**30:,.2f} GiB for batch {batch})")
    try:
        spec.check_buildable()
    except SpecError as e:
        return f"not measured: {e}; {needs}"
    if need > MEMORY_SHARE * have:
        return f"not measured: {needs}; {have / 2**30:,.1f} GiB is available"
    return None


def saved_activation_bytes(model: SkipNet, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward during a training forward of ``model`` on ``x``
    (aux heads included), counted by the profiler."""
    return profile(model, x, backward=False, return_aux=True).total["saved_bytes"]


def _loss(model: SkipNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return loss_and_logits(model, x, y)[0]


def measure_cost(spec: ModelSpec, batch: int = 32, seed: int = 0, repeats: int = 3,
                 backward: bool = True) -> dict[str, Any]:
    """Build ``spec`` and count its costs on a random batch (``model_cost``'s keys, by the
    same code), plus ``flops.backward`` per sample (``backward=False``: None, and no
    training step is run) and ``seconds_forward_backward`` (``repeats`` timed passes after
    one warm-up; 0: no timing, None)."""
    model = build_model(spec, seed=seed).train()
    x, y = spec.family.random_batch(spec, batch, torch.Generator().manual_seed(seed))
    inference = profile(model, x, backward=False)
    training = profile(model, x, backward=False, return_aux=True) if spec.describe().aux else inference
    out = assemble(spec, batch, inference, training)
    out["flops"]["backward"] = out["seconds_forward_backward"] = None
    if not backward and not repeats:
        return out
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
    out["flops"]["backward"] = (train_step.get_total_flops() - train_forward.get_total_flops()) // batch
    out["seconds_forward_backward"] = statistics.median(times[1:]) if repeats else None
    return out
