"""The parts a branch is made of: a layer, a norm, an activation.

A branch's transform is ``f(z) = act(norm(layer(z)))`` (docs/design.md). Which layer and which
norm is the family's business (``skiplab.families``): a Linear for the MLP, a same-padding
stride-1 convolution for the CNNs, so that a branch never changes the spatial size and
every skip can merge along the channel dim.
"""

from __future__ import annotations

import torch
from torch import nn

from .skips.shared_storage import Pieces, run_on_pieces

NORMS = ("none", "batch", "layer")
# Name -> (module class, gain name for kaiming init). GELU and SiLU behave like ReLU
# near the origin for large inputs, so they borrow ReLU's gain (He et al. 1502.01852
# derive the gain for ReLU only).
ACTIVATIONS: dict[str, tuple[type[nn.Module], str]] = {
    "relu": (nn.ReLU, "relu"),
    "gelu": (nn.GELU, "relu"),
    "silu": (nn.SiLU, "relu"),
    "tanh": (nn.Tanh, "tanh"),
    "sigmoid": (nn.Sigmoid, "sigmoid"),
    "identity": (nn.Identity, "linear"),
}




# Activations whose backward is computed from their output (so they keep the output, and
# a following layer that keeps its input shares that storage) vs from their input.
KEEPS_OUTPUT = {"relu", "tanh", "sigmoid"}
KEEPS_INPUT = {"gelu", "silu"}


def make_activation(activation: str) -> nn.Module:
    return ACTIVATIONS[activation][0]()



class Transform(nn.Sequential):
    """``act(norm(layer(z)))``: (B, in_width, *S) -> (B, out_width, *S). The family makes
    the layer and the norm (a Linear or a conv; batch norm of the right rank)."""

    def __init__(self, layer: nn.Module, norm: nn.Module, activation: str):
        super().__init__()
        self.layer = layer
        self.norm = norm
        self.act = make_activation(activation)

    takes_pieces = True  # forward accepts Pieces (below)

    def memory_split(self):
        """For memory-efficient concatenation (skips/shared_storage.py): nothing to
        recompute before the layer; the norm and activation follow it."""
        return (), self.layer, lambda y: self.act(self.norm(y))

    def forward(self, z):
        if isinstance(z, Pieces):  # a dense state kept as its features (memory="efficient")
            return run_on_pieces(self, z, z.dim)
        return super().forward(z)


class Head(nn.Module):
    """Pool positions away (a family's ``pool``: global average for CNNs, nothing for
    the MLP), then Linear(width, classes)."""

    def __init__(self, width: int, classes: int, bias: bool = True, pool=None):
        super().__init__()
        self.pool = pool
        self.fc = nn.Linear(width, classes, bias=bias)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            s = self.pool(s)  # (B, C, *S) -> (B, C)
        return self.fc(s)


def init_kaiming(module: nn.Module, activation: str) -> None:
    """He-normal weights (fan_in, gain of ``activation``) and zero biases for every
    Linear/Conv inside ``module`` (He et al., arXiv 1502.01852)."""
    gain = ACTIVATIONS[activation][1]
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
