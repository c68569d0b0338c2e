"""The training objective, in one place: cross-entropy of the head plus ``aux_weight`` x
each auxiliary head's (GoogLeNet's deep supervision, arXiv 1409.4842). Training, the
gradient diagnostics and the cost measurement all backpropagate this."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def loss_and_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of ``model`` (a SkipNet) on ``(x, y)``, and its main head's logits."""
    logits, aux = model(x, return_aux=True)
    loss = cross_entropy(logits, y)
    for a in aux:
        loss = loss + model.spec.aux_weight * cross_entropy(a, y)
    return loss, logits


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of class logits (B, K) or of next-token logits at every position
    (B, T, V) against targets (B,) or (B, T): a language model's loss is the mean over tokens."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)
