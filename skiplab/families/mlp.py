"""The MLP family: fully-connected sublayers on a flat feature vector, layout (B, C)."""

from __future__ import annotations

import math

from torch import nn

from .base import Family, ShapeError


class MLP(Family):
    name = "mlp"
    summary = "fully-connected: Linear -> norm -> activation per block; input flattened"
    layout = "(B, C)"
    default_input_shape = (40,)  # MNIST-1D: sequences of length 40 (Greydanus, arXiv 2011.14439)
    input_form = "(features,) or any shape, flattened"
    counts_on_meta = True  # no op picks its kernel by device (skiplab.cost.prefix)

    def check_input_shape(self, shape):
        if len(shape) < 1:
            raise ShapeError(f"mlp takes {self.input_form} of positive integers")
        return shape

    def in_channels(self, shape):
        return math.prod(shape)  # all features

    def positions(self, shape):
        return 1

    def prepare_input(self, x, spec):
        if x.dim() >= 2 and x.shape[1:].numel() == self.in_channels(spec.input_shape):
            return x.flatten(1)  # (B, *in) -> (B, F): any per-sample shape with F elements
        return super().prepare_input(x, spec)

    def layer(self, spec, in_width, out_width, bias):
        return nn.Linear(in_width, out_width, bias=bias)

    def norm(self, spec, width):
        if spec.norm == "none":
            return nn.Identity()
        return nn.BatchNorm1d(width) if spec.norm == "batch" else nn.LayerNorm(width)


MLP_FAMILY = MLP()
