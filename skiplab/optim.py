"""Optimisers by name, in one place (training and the gradient diagnostics both build them here)."""

from __future__ import annotations

from typing import Iterable

import torch

OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, fused: bool = False) -> torch.optim.Optimizer:
    """``adam`` | ``adamw`` (Loshchilov & Hutter, arXiv 1711.05101) | ``sgd`` (with
    ``momentum``, Nesterov when it is > 0; plain SGD with ``momentum=0``).

    ``fused``: PyTorch's fused implementation (one kernel per tensor and step; on the CPU
    from torch 2.4) where this torch has it for these tensors, else its default. The same
    update up to rounding; the batched engine asks for it (skiplab.engine), the loop does
    not, so that runs trained before it existed are reproduced as they were."""
    params = list(params)
    if name == "sgd":
        cls, kwargs = torch.optim.SGD, dict(momentum=momentum, nesterov=momentum > 0)
    else:
        cls, kwargs = (torch.optim.AdamW if name == "adamw" else torch.optim.Adam), {}
    if fused:
        try:
            return cls(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # not on this device, dtype or torch
            pass
    return cls(params, lr=lr, weight_decay=weight_decay, **kwargs)
