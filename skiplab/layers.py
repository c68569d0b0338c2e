"""The parts every block is made of: a layer, a norm, an activation.

A block's transform is ``f(z) = act(norm(layer(z)))`` (DESIGN.md). ``layer`` is a
Linear for the MLP and a same-padding, stride-1 convolution for the CNNs, so that a
block never changes the spatial size and every skip can merge along the channel dim 1.
"""

from __future__ import annotations

import torch
from torch import nn

from .tape import Sym, Tape

MODELS = ("mlp", "cnn1d", "cnn2d")
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
SPATIAL_DIMS = {"mlp": 0, "cnn1d": 1, "cnn2d": 2}


def make_layer(model: str, in_width: int, out_width: int, kernel_size: int, bias: bool) -> nn.Module:
    """Linear (mlp) or a same-padding stride-1 Conv1d/Conv2d; kernel_size must be odd."""
    if model == "mlp":
        return nn.Linear(in_width, out_width, bias=bias)
    conv = nn.Conv1d if model == "cnn1d" else nn.Conv2d
    return conv(in_width, out_width, kernel_size, padding=kernel_size // 2, bias=bias)


def trace_layer(tape: Tape, z: Sym, out_width: int, kernel_volume: int, bias: bool) -> Sym:
    """Linear/Conv: ``in x out x kernel`` weights (+ ``out`` biases); 2 FLOPs per
    multiply-add at every position (bias adds excluded, as ``torch.utils.flop_counter``
    counts); autograd keeps the input ``z`` for the weight gradient."""
    tape.params += z.channels * out_width * kernel_volume + out_width * int(bias)
    tape.matmul += 2 * z.channels * out_width * kernel_volume * z.positions
    tape.save(z)
    return tape.new(out_width, z.positions)


def make_norm(model: str, norm: str, width: int) -> nn.Module:
    """``none`` | ``batch`` (per channel) | ``layer`` (over all features of a sample).

    For the CNNs ``layer`` is GroupNorm with one group: it normalises each sample over
    channels and positions, which is LayerNorm for conv nets (Wu & He, arXiv 1803.08494,
    Sec. 3.1), with a per-channel affine so its parameter count does not depend on the
    input length.
    """
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return {"mlp": nn.BatchNorm1d, "cnn1d": nn.BatchNorm1d, "cnn2d": nn.BatchNorm2d}[model](width)
    if model == "mlp":
        return nn.LayerNorm(width)
    return nn.GroupNorm(1, width)


def trace_norm(tape: Tape, y: Sym, norm: str) -> Sym:
    """Norms own a scale and a shift per channel and keep their input plus two statistics:
    batch norm one mean and inverse std per channel (per batch), layer/group norm one mean
    and rstd per sample (one group). Measured with saved_tensors_hooks (tests/test_cost.py)."""
    if norm == "none":
        return y
    tape.params += 2 * y.channels
    tape.save(y)
    if norm == "batch":
        tape.saved_per_batch += 2 * y.channels
    else:
        tape.saved_per_sample += 2
    return tape.new(y.channels, y.positions)


# Activations whose backward is computed from their output (so they keep the output, and
# a following layer that keeps its input shares that storage) vs from their input.
KEEPS_OUTPUT = {"relu", "tanh", "sigmoid"}
KEEPS_INPUT = {"gelu", "silu"}


def make_activation(activation: str) -> nn.Module:
    return ACTIVATIONS[activation][0]()


def trace_activation(tape: Tape, y: Sym, activation: str) -> Sym:
    if activation == "identity":
        return y
    if activation in KEEPS_INPUT:
        tape.save(y)
    a = tape.new(y.channels, y.positions)
    if activation in KEEPS_OUTPUT:
        tape.save(a)
    return a


class Transform(nn.Sequential):
    """``act(norm(layer(z)))``: (B, in_width, *S) -> (B, out_width, *S)."""

    def __init__(self, model: str, in_width: int, out_width: int, *, kernel_size: int = 3,
                 norm: str = "none", activation: str = "relu", bias: bool = True):
        super().__init__()
        self.layer = make_layer(model, in_width, out_width, kernel_size, bias)
        self.norm = make_norm(model, norm, out_width)
        self.act = make_activation(activation)

    @staticmethod
    def trace(tape: Tape, z: Sym, out_width: int, *, kernel_volume: int, norm: str, activation: str,
              bias: bool) -> Sym:
        y = trace_layer(tape, z, out_width, kernel_volume, bias)
        return trace_activation(tape, trace_norm(tape, y, norm), activation)


class Head(nn.Module):
    """Global average pool over positions (CNN), then Linear(width, classes)."""

    def __init__(self, model: str, width: int, classes: int, bias: bool = True):
        super().__init__()
        self.spatial_dims = SPATIAL_DIMS[model]
        self.fc = nn.Linear(width, classes, bias=bias)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims:
            s = s.mean(dim=tuple(range(2, 2 + self.spatial_dims)))  # (B, C, *S) -> (B, C)
        return self.fc(s)

    @staticmethod
    def trace(tape: Tape, s: Sym, classes: int, bias: bool, pooled: bool) -> Sym:
        if pooled:  # the mean keeps nothing; the Linear keeps the pooled (B, C)
            s = tape.new(s.channels, 1)
        return trace_layer(tape, s, classes, 1, bias)


def init_kaiming(module: nn.Module, activation: str) -> None:
    """He-normal weights (fan_in, gain of ``activation``) and zero biases for every
    Linear/Conv inside ``module`` (He et al., arXiv 1502.01852)."""
    gain = ACTIVATIONS[activation][1]
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
