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
    """Parameters and their gradients as views into one flat tensor each per device and
    dtype, for the optimiser to step: PyTorch's fused Adam on a CPU still runs one kernel
    per tensor (the study's depth-50 MLP has 206: 2.1 ms a step against 0.27 ms for one
    flat tensor of the same 218k elements, torch 2.13, one thread), so the optimiser is
    given ``tensors`` (the flat ones, and any parameter left as it is) instead of the
    parameters.

    The parameters stay the same objects (their ``data`` becomes a view; ties and the
    modules' references hold), and each one's ``grad`` is a view into its flat tensor's
    ``grad``: autograd adds a gradient into an existing ``grad`` in place (as
    ``DistributedDataParallel(gradient_as_bucket_view=True)`` relies on), so after a
    backward the flat gradient is complete, with no copy. :meth:`zero_grad` zeroes it (in
    place of the optimiser's ``zero_grad``, which would drop the views). A parameter that
    is not contiguous (channels-last, on CUDA) or not trained is left as it is.

    The update is element-wise, so stepping the flat tensor is stepping each parameter, up
    to rounding (a kernel's vector and scalar paths may round an element's last bit
    differently: the elements at a tensor's end take the scalar path) and with one
    difference: a parameter with no gradient at a step is stepped with a zero one (torch's
    behaviour with ``zero_grad(set_to_none=False)``) rather than skipped; every skiplab
    model gives each parameter a gradient (tests/test_optim.py). :meth:`release` gives each
    parameter its own storage again. ``flatten=False`` leaves every parameter as it is
    (``tensors`` are the parameters; benchmarks compare)."""

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
                flat.grad = torch.zeros_like(flat)
                offset = 0
                for p in ps:
                    p.data = flat.detach()[offset:offset + p.numel()].view_as(p)
                    p.grad = flat.grad[offset:offset + p.numel()].view_as(p)
                    offset += p.numel()
                self.flat.append((flat, ps))
        self.tensors = [flat for flat, _ in self.flat] + self.rest

    def zero_grad(self) -> None:
        """Zero the flat gradients (one kernel each), and drop the other parameters'."""
        for flat, _ in self.flat:
            flat.grad.zero_()
        for p in self.rest:
            p.grad = None

    def check(self) -> None:
        """Raise if a parameter's gradient is no longer a view into its flat tensor's (it
        was replaced: a ``zero_grad`` that sets it to None, a backward with
        ``create_graph``), which would leave the optimiser stepping a stale gradient. The
        training loop asks once, after its first backward."""
        for flat, ps in self.flat:
            ptr = flat.grad.untyped_storage().data_ptr()
            for p in ps:
                if p.grad is None or p.grad.untyped_storage().data_ptr() != ptr:
                    raise RuntimeError("FlatParameters: a parameter's gradient is no longer a view into the flat "
                                       "gradient (was it set to None, or made by a backward with create_graph?)")

    @torch.no_grad()
    def release(self) -> None:
        """Each flattened parameter on a storage of its own again, its gradient dropped
        (the trained modules as they were built); the flat tensors are no longer stepped
        into them."""
        for _, ps in self.flat:
            for p in ps:
                p.data = p.data.clone()
                p.grad = None
        self.flat = []
