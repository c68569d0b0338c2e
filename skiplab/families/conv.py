"""What the two convolutional families share: same-padding, stride-1 convolutions (a branch
never changes the spatial size, so every skip merges along channels, dim 1), batch norm or
a one-group GroupNorm, and a global-average-pool head."""

from __future__ import annotations

import torch
from torch import nn

from .base import Family, ShapeError


class GlobalAvgPool(nn.Module):
    """(B, C, *S) -> (B, C): the mean over positions."""

    def __init__(self, spatial_dims: int):
        super().__init__()
        self.dims = tuple(range(2, 2 + spatial_dims))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s.mean(dim=self.dims)


class ConvFamily(Family):
    # vmap runs a convolution with per-seed weights as one grouped convolution (a group per
    # seed); on the CPU that trained the default CNN-1D at 0.78-0.84x the loop's seed-steps/s
    # with 3 and 8 seeds, and 1.00-1.04x with seed_batched's batch norm: no gain, so the
    # loop, the reference, trains them (benchmarks/engine_throughput.py, docs/engines.md).
    batches_on_cpu = False
    spatial_dims: int
    conv: type[nn.Module]
    batch_norm: type[nn.Module]

    def check_input_shape(self, shape):
        if len(shape) != 1 + self.spatial_dims:
            raise ShapeError(f"{self.name} takes {self.input_form} of positive integers")
        return shape

    def kernel_volume(self, spec):
        return spec.kernel_size ** self.spatial_dims

    def layer(self, spec, in_width, out_width, bias):
        k = spec.kernel_size
        return self.conv(in_width, out_width, k, padding=k // 2, bias=bias)

    def norm(self, spec, width):
        """``layer`` is GroupNorm with one group: it normalises each sample over channels and
        positions, which is LayerNorm for conv nets (Wu & He, arXiv 1803.08494, Sec. 3.1),
        with a per-channel affine so its parameter count does not depend on the input length."""
        if spec.norm == "none":
            return nn.Identity()
        return self.batch_norm(width) if spec.norm == "batch" else nn.GroupNorm(1, width)

    def pool(self):
        return GlobalAvgPool(self.spatial_dims)
