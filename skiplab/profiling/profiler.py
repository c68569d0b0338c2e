"""``profile(model, *inputs)``: the skip-connection bill of any PyTorch model, per module.

One forward on the example inputs, watched three ways at once: module hooks keep the
running module's name (``scope``), a dispatch mode books FLOPs, merges and copies to it
(``recorder``), and ``saved_tensors_hooks`` book what autograd keeps (``saved``). Then one
backward under the same dispatch mode for the backward FLOPs and what a recompute
concatenates again, and optionally timed forward+backward passes. Ops that look FLOP-heavy
but have no FLOP rule are named in a warning (``UncountedOpsWarning``) and in the result. The model's buffers (batch-norm running statistics) and
gradients are put back as they were, so profiling leaves the model unchanged.
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import torch
from torch import nn

from .merge_rule import Kinds
from .recorder import Recorder
from .result import FIGURES, Profile
from .saved import SavedBytes
from .scope import ModuleStack
from ..errors import UserError


def scalar_of(output: Any) -> torch.Tensor | None:
    """What a backward starts from: the output's ``loss`` when it has one (a Hugging Face
    model given labels), else the sum of its first floating-point tensor."""
    loss = getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        return loss
    for t in tensors_of(output):
        if t.is_floating_point() and t.requires_grad:
            return t.sum()
    return None


def tensors_of(x: Any):
    """The tensors in a model's inputs or output: a tensor, dicts (a transformers ModelOutput)
    and sequences of them, in order."""
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from tensors_of(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from tensors_of(v)


def _own_params(model: nn.Module) -> dict[str, int]:
    """Parameters booked to the module that holds them; a tied or shared parameter once,
    to the first module that holds it."""
    seen: set[int] = set()
    out = {}
    for name, module in model.named_modules():
        n = 0
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        out[name] = n
    return out


class UncountedOpsWarning(UserWarning):
    """A profile met ops that likely cost FLOPs and have no FLOP rule: its FLOPs miss them."""


def _time(model: nn.Module, inputs, kwargs, repeats: int) -> float | None:
    times = []
    for _ in range(repeats + 1):  # the first pass warms up the allocator and kernels
        start = time.perf_counter()
        s = scalar_of(model(*inputs, **kwargs))
        if s is None:
            return None
        s.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def profile(model: nn.Module, *inputs: Any, timed: bool = False, repeats: int = 5, backward: bool = True,
            **kwargs: Any) -> Profile:
    """Profile one forward (and backward) of ``model(*inputs, **kwargs)``.

    Per module (dotted name, as ``named_modules``) and in total, for the whole batch:
    ``params``; ``flops``, forward matmul/conv FLOPs (``torch.utils.flop_counter``'s
    convention: 2 per multiply-add); ``merge_flops`` (see ``skiplab.profiling.merge_rule``);
    ``concat_bytes``, bytes written by ``cat``/``stack``; ``saved_bytes``, what autograd keeps
    for backward (each storage once; parameters, buffers and the inputs excluded), charged
    to the module whose forward saved it; ``recompute_concat_bytes``, bytes that backward
    concatenates again (a checkpointed or memory-efficient concatenation, see
    ``skiplab.profiling.recorder``). The total adds ``backward_flops`` and, with
    ``timed``, ``seconds_forward_backward`` (median of ``repeats`` passes after a warm-up).
    ``uncounted_ops``: ops with no FLOP rule that likely cost FLOPs (attention kernels,
    convolutions, matrix products), by name with their calls, forward and backward; when
    there are any, an ``UncountedOpsWarning`` names them too.
    The model runs in the mode it is in (``train()`` for the bill of a training step).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"profile: expected a torch.nn.Module, got {type(model).__name__}")
    backward_pass = backward
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats: must be an integer >= 1, got {repeats!r}")
    params = list(model.parameters())
    buffers = list(model.buffers())
    kept_buffers = [b.detach().clone() for b in buffers]
    kept_grads = [p.grad for p in params]
    example = list(tensors_of((inputs, kwargs)))
    # an input that requires grad gets one from the backward pass: the caller's, put back
    leaves = [t for t in example if t.requires_grad and t.is_leaf]
    kept_input_grads = [t.grad for t in leaves]
    for t in params + leaves:  # else backward accumulates into the caller's gradients in place
        t.grad = None

    stack = ModuleStack().attach(model)
    recorder = Recorder(stack, Kinds(params + buffers, example))
    saved = SavedBytes(stack, params + buffers + example)
    backward = None
    try:
        with saved.hooks(), recorder:
            output = model(*inputs, **kwargs)
        start = scalar_of(output)
        if start is not None and backward_pass:
            seed = torch.ones_like(start)
            with recorder.backward(seed):  # module hooks stay: a recompute runs forwards again
                start.backward(seed)
            backward = recorder.backward_flops
            del seed
    finally:
        stack.detach()
    del output, start
    seconds = _time(model, inputs, kwargs, repeats) if timed else None

    with torch.no_grad():  # put the model back as it was
        for b, old in zip(buffers, kept_buffers):
            b.copy_(old)
    for t, g in zip(params + leaves, kept_grads + kept_input_grads):
        t.grad = g

    own_params, saved_bytes = _own_params(model), saved.per_module()
    own = {name: {"params": own_params[name], "flops": recorder.flops.get(name, 0),
                  "merge_flops": recorder.merge_flops.get(name, 0),
                  "concat_bytes": recorder.concat_bytes.get(name, 0), "saved_bytes": saved_bytes.get(name, 0),
                  "recompute_concat_bytes": recorder.recompute_concat_bytes.get(name, 0)}
           for name in own_params}
    total: dict[str, Any] = {k: sum(v[k] for v in own.values()) for k in FIGURES}
    total |= {"backward_flops": backward, "seconds_forward_backward": seconds}
    shapes = [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for t in example]
    uncounted = dict(sorted(recorder.uncounted.items()))
    if uncounted:
        names = ", ".join(f"{n} ({c} call{'s' * (c != 1)})" for n, c in uncounted.items())
        warnings.warn(UncountedOpsWarning(f"profile: no FLOP rule for {names}: these ops likely multiply matrices, "
                                          f"and their FLOPs are not in the counts"), stacklevel=2)
    return Profile(own, total, shapes, uncounted)
