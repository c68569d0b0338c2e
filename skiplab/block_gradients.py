"""Per-block weight-gradient norms of any model: the blocks are the modules whose dotted
names match a pattern (``transformer.h.*``), so the first/last gradient ratio of
``skiplab.gradients`` works on a network skiplab did not build.

A block's weight-gradient norm is the norm of all its parameters' gradients together
(sqrt of the sum of squares, in float64), not of one chosen weight: a block written by
someone else has no agreed "first weight", and the whole block is what a step moves. The
loss is the model's own when its output carries one (``output.loss``), else cross-entropy
of its first floating-point output against random labels over the last dimension (every
position of a sequence model), the mean over the batch. Each seed builds the model
afresh from the factory (``torch.manual_seed(seed)`` first) and draws its own batches.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .gradients import Spread, _norm, _ratio
from .profiling.profiler import tensors_of
from .errors import UserError


def match_blocks(model: nn.Module, pattern: str) -> list[str]:
    """Dotted names of the modules matching ``pattern``, in the model's order. The pattern
    is matched one name segment at a time (``*`` does not cross a dot), so
    ``transformer.h.*`` picks ``transformer.h.0``, ``transformer.h.1``, ... and not their
    children."""
    want = pattern.split(".")
    names = [n for n, _ in model.named_modules()
             if n and len(n.split(".")) == len(want)
             and all(fnmatch.fnmatchcase(a, b) for a, b in zip(n.split("."), want))]
    if not names:
        top = [n for n, _ in model.named_children()]
        raise UserError(f"blocks: no module matches {pattern!r}; the model's children are {', '.join(top)}")
    return names


def _loss(output: Any, generator: torch.Generator) -> torch.Tensor:
    own = getattr(output, "loss", None)
    if isinstance(own, torch.Tensor):
        return own
    logits = next((t for t in tensors_of(output) if t.is_floating_point() and t.requires_grad), None)
    if logits is None:
        raise UserError("the model's output has no floating-point tensor to take a loss of")
    flat = logits.reshape(-1, logits.shape[-1]) if logits.dim() > 1 else logits.reshape(1, -1)
    labels = torch.randint(0, flat.shape[-1], (flat.shape[0],), generator=generator)
    return F.cross_entropy(flat.float(), labels)


@dataclass(frozen=True)
class BlockGradients:
    """Weight-gradient norm per matched block, mean/min/max over seeds x batches."""

    blocks: list[str]
    weight_grad_norm: Spread
    loss: float

    @property
    def first_last_ratio(self) -> float | None:
        w = self.weight_grad_norm.mean
        return _ratio(w[0], w[-1]) if w else None

    @property
    def max_min_ratio(self) -> float | None:
        w = self.weight_grad_norm.mean
        if not w or max(w) == 0:
            return None
        return math.inf if min(w) == 0 else max(w) / min(w)

    def to_dict(self) -> dict[str, Any]:
        w = self.weight_grad_norm
        ratio = self.max_min_ratio
        return {"blocks": self.blocks, "weight_grad_norm": w.mean, "weight_grad_norm_min": w.min,
                "weight_grad_norm_max": w.max, "first_last_ratio": self.first_last_ratio,
                "max_min_ratio": None if ratio is None or math.isinf(ratio) else ratio, "loss": self.loss}


def block_gradients(make_model: Callable[[int], nn.Module], make_batch: Callable[[int, int], torch.Tensor],
                    pattern: str, seeds: int = 3, batches: int = 2) -> BlockGradients:
    """``make_model(seed)`` builds a model, ``make_batch(seed, i)`` its i-th input batch;
    the model is measured in ``train()`` mode."""
    for name, value in (("seeds", seeds), ("batches", batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name}: must be an integer >= 1, got {value!r}")
    samples, losses, names = [], [], None
    for seed in range(seeds):
        model = make_model(seed).train()
        names = match_blocks(model, pattern)
        modules = dict(model.named_modules())
        params = [[p for p in modules[n].parameters() if p.requires_grad] for n in names]
        empty = [n for n, ps in zip(names, params) if not ps]
        if empty:
            raise UserError(f"blocks: {', '.join(empty)} hold no trainable parameters; choose modules with weights")
        g = torch.Generator().manual_seed(seed)
        for i in range(batches):
            model.zero_grad(set_to_none=True)
            loss = _loss(model(make_batch(seed, i)), g)
            loss.backward()
            samples.append([math.sqrt(sum(_norm(p.grad) ** 2 for p in ps if p.grad is not None)) for ps in params])
            losses.append(loss.item())
    return BlockGradients(names, Spread.of(samples), sum(losses) / len(losses))
