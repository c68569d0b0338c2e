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


class FlatParameters:
    """Parameters as views into one flat tensor per device and dtype, for the optimiser to
    step: PyTorch's fused Adam on a CPU still runs one kernel per tensor (the study's
    depth-50 MLP has 206: 2.1 ms a step against 0.27 ms for one flat tensor of the same
    218k elements, torch 2.13, one thread), so the optimiser is given ``tensors`` (the flat
    ones, and any parameter left as it is) instead of the parameters.

    The parameters stay the same objects (their ``data`` becomes a view; ties and the
    modules' references hold); a parameter that is not contiguous (channels-last, on CUDA)
    or not trained is left as it is. Each step, after the backward (and any clipping of
    the parameters' own gradients), :meth:`gather` writes their gradients into the flat
    tensors' and drops them. The update is element-wise, so stepping the flat tensor is
    stepping each parameter, up to rounding (a kernel's vector and scalar paths may round
    an element's last bit differently: the elements at a tensor's end take the scalar
    path) and with one difference: a parameter with no gradient at a step is stepped with
    a zero one (torch's behaviour with ``zero_grad(set_to_none=False)``) rather than
    skipped; every skiplab model gives each parameter a gradient (tests/test_optim.py).
    :meth:`release` gives each parameter its own storage again. ``flatten=False`` leaves
    every parameter as it is (``tensors`` are the parameters; benchmarks compare)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], flatten: bool = True):
        groups: dict[tuple[torch.device, torch.dtype], list[torch.nn.Parameter]] = {}
        self.rest: list[torch.Tensor] = []
        for p in params:
            if flatten and p.requires_grad and p.is_contiguous():
                groups.setdefault((p.device, p.dtype), []).append(p)
            else:
                self.rest.append(p)
        self.flat: list[tuple[torch.Tensor, list[torch.nn.Parameter]]] = []
        with torch.no_grad():
            for ps in groups.values():
                flat = torch.cat([p.reshape(-1) for p in ps]).requires_grad_()
                offset = 0
                for p in ps:
                    p.data = flat.detach()[offset:offset + p.numel()].view_as(p)
                    offset += p.numel()
                self.flat.append((flat, ps))
        self.tensors = [flat for flat, _ in self.flat] + self.rest

    @torch.no_grad()
    def gather(self) -> None:
        """The parameters' gradients into the flat tensors' (zeros for one without), and
        the parameters' own dropped (set to None, as ``zero_grad`` leaves them)."""
        for flat, ps in self.flat:
            flat.grad = torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel())
                                   for p in ps])
            for p in ps:
                p.grad = None

    @torch.no_grad()
    def release(self) -> None:
        """Each flattened parameter on a storage of its own again (the trained modules as
        they were built); the flat tensors are no longer stepped into them."""
        for _, ps in self.flat:
            for p in ps:
                p.data = p.data.clone()
        self.flat = []
