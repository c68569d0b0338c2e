"""``SkipNet``: stem -> sublayers (each a branch merged into the stream) -> head, built
from the one description of a ``ModelSpec`` (``spec.describe()``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import init_kaiming
from .spec import ModelSpec, SpecError


class SkipNet(nn.Module):
    """A model of docs/design.md's shape. ``forward(x)`` returns logits ``(B, classes)``;
    ``forward(x, return_aux=True)`` returns ``(logits, [aux logits, ...])``.

    ``blocks`` holds one connection per sublayer (the strategy's merge module, with the
    branch inside it as ``.branch``); for the MLP and CNN families a block is one sublayer.
    The stream between them is the strategy's business: a tensor for add or dense, n
    stacked copies for hyper-connections and mHC, the earlier block outputs and the current
    tensor for DenseFormer. Input per sample: ``spec.input_shape`` (MLP inputs are flattened).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        spec.check_buildable()
        self.spec = spec
        d = self.description = spec.describe()
        family, strategy = d.family, d.strategy

        def make_gate(in_width: int, out_width: int) -> nn.Module:
            return family.layer(spec, in_width, out_width, bias=True)  # a gate keeps its bias

        self.stem = family.stem(spec, d.in_channels)  # (B, *in) -> the family's layout, width w
        # Each branch is built before its connection, so a seed gives the same weights
        # whatever the strategy adds (the highway gate draws after its branch).
        self.blocks = nn.ModuleList(
            family.place(strategy.connection(family.branch(spec, site), site, d.options, make_gate), spec, site)
            for site in d.sites)
        self.head = family.head(spec, d.readout_width)
        self.aux_heads = nn.ModuleDict({str(block): family.head(spec, width) for block, width in d.aux})
        self._aux_after = {block * family.sublayers_per_block: str(block) for block, _ in d.aux}
        if spec.init == "kaiming":
            self._init_kaiming()

    def _init_kaiming(self) -> None:
        init_kaiming(self.stem, self.spec.activation)
        for block in self.blocks:
            init_kaiming(block.branch, self.spec.activation)
            block.kaiming_()  # the connection's own layers, if any (highway's gate)
        for head in [self.head, *self.aux_heads.values()]:
            init_kaiming(head, "identity")

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        d = self.description
        x = d.family.prepare_input(x, self.spec)
        stream = d.strategy.init(self.stem(x), d.options)  # the stem's (B, w, *S) becomes the stream
        aux = []
        for l, block in enumerate(self.blocks, start=1):
            stream = block(stream)  # read -> branch -> write
            if return_aux and l in self._aux_after:
                aux.append(self.aux_heads[self._aux_after[l]](d.strategy.readout(stream, d.options)))
        logits = self.head(d.strategy.readout(stream, d.options))  # (B, classes)
        return (logits, aux) if return_aux else logits

    def structure(self) -> dict[str, Any]:
        """Parameters per part (counted by ``numel``) and widths per sublayer."""
        count = lambda module: sum(p.numel() for p in module.parameters() if p.requires_grad)  # noqa: E731
        params = {"stem": count(self.stem), "blocks": sum(count(b) for b in self.blocks),
                  "head": count(self.head), "aux": count(self.aux_heads)}
        params["total"] = sum(params.values())
        family = self.description.family
        per_block = [{"block": l, "name": family.sublayer_name(s), "params": count(b), "in_width": s.widths.in_width,
                      "features": s.widths.features, "out_width": s.widths.out_width}
                     for l, (b, s) in enumerate(zip(self.blocks, self.description.sites), start=1)]
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
