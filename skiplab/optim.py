"""Optimisers by name, in one place (training and the gradient diagnostics both build them here)."""

from __future__ import annotations

from typing import Iterable

import torch

OPTIMIZERS = ("adam", "adamw", "sgd")
IMPLEMENTATIONS = ("fused", "foreach", "per-tensor")


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, implementation: str = "fused") -> torch.optim.Optimizer:
    """``adam`` | ``adamw`` (Loshchilov & Hutter, arXiv 1711.05101) | ``sgd`` (with
    ``momentum``, Nesterov when it is > 0; plain SGD with ``momentum=0``).

    ``implementation``: ``fused`` (the default: PyTorch's fused kernels, one per tensor and
    step, on the CPU from torch 2.4 and on CUDA), falling back to ``foreach`` (multi-tensor:
    one call over all tensors per operation) where this torch has no fused kernel for these
    tensors' device or dtype; ``per-tensor`` is torch's for-loop over tensors, a dozen small
    ops for each (the loop engine's optimiser before issue 26; kept for
    benchmarks/loop_optimizer.py). The three compute the same update up to rounding: fused
    Adam and AdamW round differently from the other two (one ulp per element and step);
    SGD and, on a CPU, foreach are bitwise the for-loop (torch 2.13)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation: {implementation!r} is not one of {', '.join(IMPLEMENTATIONS)}")
    params = list(params)
    if name == "sgd":
        cls, kwargs = torch.optim.SGD, dict(momentum=momentum, nesterov=momentum > 0)
    else:
        cls, kwargs = (torch.optim.AdamW if name == "adamw" else torch.optim.Adam), {}
    if implementation == "fused":
        try:
            return cls(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # not on this device, dtype or torch
            pass
    return cls(params, lr=lr, weight_decay=weight_decay, foreach=implementation != "per-tensor", **kwargs)
