"""The training objective, in one place: cross-entropy of the head plus ``aux_weight`` x
each auxiliary head's (GoogLeNet's deep supervision, arXiv 1409.4842). Training, the
gradient diagnostics and the cost measurement all backpropagate this."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def flat_logits(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) with one prediction per row: a language model's (B, T, V) logits
    and (B, T) targets become (B*T, V) and (B*T,), so the loss is the mean over every
    position; a classifier's (B, C) and (B,) are returned as they are."""
    return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)


def loss_and_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    autocast: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of ``model`` (a SkipNet) on ``(x, y)``, and its main head's logits (as the
    model returns them: (B, C), or (B, T, V) for a language model, each position a
    next-token prediction). With ``autocast`` (torch.bfloat16), the forward runs under
    ``torch.autocast`` in that dtype and the logits are cast back to fp32 for the loss."""
    if autocast is None:
        logits, aux = model(x, return_aux=True)
    else:
        with torch.autocast(x.device.type, dtype=autocast):
            logits, aux = model(x, return_aux=True)
        logits, aux = logits.float(), [a.float() for a in aux]
    loss = F.cross_entropy(*flat_logits(logits, y))
    for a in aux:
        loss = loss + model.spec.aux_weight * F.cross_entropy(*flat_logits(a, y))
    return loss, logits
