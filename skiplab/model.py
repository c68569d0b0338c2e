"""``SkipNet``: stem -> blocks -> head, built from a ``ModelSpec``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import Head, Transform, init_kaiming, make_layer
from .skips import get_strategy
from .spec import ModelSpec, SpecError


class SkipNet(nn.Module):
    """A model of DESIGN.md's shape. ``forward(x)`` returns logits ``(B, classes)``;
    ``forward(x, return_aux=True)`` returns ``(logits, [aux logits, ...])``.

    Input per sample: ``spec.input_shape`` (MLP inputs are flattened).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        spec.check_buildable()
        self.spec = spec
        strategy = get_strategy(spec.skip)
        m, ks = spec.model, spec.kernel_size
        part = dict(kernel_size=ks, norm=spec.norm, activation=spec.activation, bias=spec.bias)

        def gate_layer(in_width: int, out_width: int) -> nn.Module:
            return make_layer(m, in_width, out_width, ks, bias=True)  # a gate keeps its bias

        self.stem = Transform(m, spec.in_channels, spec.width, **part)  # (B, *in) -> (B, w, *S)
        self.blocks = nn.ModuleList(
            strategy.wrap(Transform(m, w.in_width, w.features, **part), w, gate_layer, spec.depth)
            for w in spec.block_widths())
        self.head = Head(m, spec.state_width, spec.classes, spec.bias)
        widths = spec.block_widths()
        self.aux_heads = nn.ModuleDict(
            {str(l): Head(m, widths[l - 1].out_width, spec.classes, spec.bias) for l in spec.aux_positions})
        if spec.init == "kaiming":
            self._init_kaiming()

    def _init_kaiming(self) -> None:
        act = self.spec.activation
        init_kaiming(self.stem, act)
        for block in self.blocks:
            init_kaiming(block.branch, act)
            gate = getattr(block, "gate", None)
            if gate is not None:  # keep the gate's negative bias, set by the strategy
                nn.init.kaiming_normal_(gate.weight, mode="fan_in", nonlinearity="sigmoid")
        for head in [self.head, *self.aux_heads.values()]:
            init_kaiming(head, "identity")

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        shape = self.spec.input_shape
        if self.spec.model == "mlp" and x.dim() >= 2 and x.shape[1:].numel() == self.spec.in_channels:
            x = x.flatten(1)  # (B, *in) -> (B, F): any per-sample shape with F elements
        elif tuple(x.shape[1:]) != shape:
            raise ValueError(f"input: expected (batch, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        s = self.stem(x)  # (B, w, *S)
        aux = []
        for l, block in enumerate(self.blocks, start=1):
            s = block(s)  # (B, width of s_l, *S)
            if return_aux and str(l) in self.aux_heads:
                aux.append(self.aux_heads[str(l)](s))
        logits = self.head(s)  # (B, classes)
        return (logits, aux) if return_aux else logits

    def structure(self) -> dict[str, Any]:
        """Parameters per part (counted by ``numel``) and widths per block."""
        count = lambda module: sum(p.numel() for p in module.parameters() if p.requires_grad)  # noqa: E731
        params = {"stem": count(self.stem), "blocks": sum(count(b) for b in self.blocks),
                  "head": count(self.head), "aux": count(self.aux_heads)}
        params["total"] = sum(params.values())
        per_block = [{"block": l, "params": count(b), "in_width": w.in_width, "features": w.features,
                      "out_width": w.out_width}
                     for l, (b, w) in enumerate(zip(self.blocks, self.spec.block_widths()), start=1)]
        return {**self.spec.to_dict(), "state_width": self.spec.state_width, "params": params,
                "per_block": per_block}


def build_model(spec: ModelSpec, seed: int | None = None) -> SkipNet:
    """Build the model ``spec`` describes. With ``seed`` the initial weights are a
    function of the seed alone (the global RNG is left as it was)."""
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"spec: expected a skiplab.ModelSpec, got {type(spec).__name__}")
    if seed is None:
        return SkipNet(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SkipNet(spec)
