"""``ModelSpec``: the typed description of one model, validated on creation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .families import FAMILIES, Description, ShapeError, get_family
from .layers import ACTIVATIONS
from .skips import STRATEGIES, BlockWidths, OptionError, Site, get_strategy
from .validate import SpecError, boolean, choice, integer, number

INITS = ("torch", "kaiming")

__all__ = ["ModelSpec", "SpecError", "INITS"]


@dataclass(frozen=True)
class ModelSpec:
    """A model: stem -> ``depth`` blocks joined by ``skip`` -> head (DESIGN.md).

    Every field is checked on creation; a bad value raises :class:`SpecError` (a
    ``ValueError``) naming the field and what is allowed.
    """

    model: str = "mlp"  # a family in skiplab.families.FAMILIES: mlp | cnn1d | cnn2d | transformer
    # Defaults: the CNN-1D with these reaches 99% on MNIST-1D in under a minute here
    # (README, "Training"); the MNIST-1D paper's CNN baseline is 94%.
    depth: int = 6  # number of blocks; 0 = stem + head only
    width: int = 32  # stem output width w (channels for the CNNs)
    skip: str = "add"  # a name in skiplab.skips.STRATEGIES
    # The strategy's own hyperparameters (dense's growth, hyper's streams, ...), checked
    # and defaulted by the strategy (skiplab.skips); given as a dict, kept as sorted pairs.
    options: Any = ()
    # None = the family's default: batch norm and ReLU for the MLP and CNNs, layer norm and
    # GELU for the transformer (GPT-2's choices).
    norm: str | None = None  # one of the family's norms: none | batch | layer (| rms for the transformer)
    activation: str | None = None  # a name in skiplab.layers.ACTIVATIONS
    bias: bool = True  # bias on every Linear/Conv; a highway gate always keeps its own
    init: str = "torch"  # torch = PyTorch's default per layer; kaiming = He-normal, zero bias
    aux_every: int = 0  # an auxiliary head after every k-th block (not the last); 0 = none
    aux_weight: float = 0.3  # loss weight of each aux head (GoogLeNet's 0.3, arXiv 1409.4842)
    kernel_size: int = 5  # CNN kernel; odd, so that 'same' padding is symmetric
    input_shape: tuple[int, ...] | None = None  # per sample: (F,) | (C, L) | (C, H, W); None = the family's default
    classes: int = 10  # outputs of the head
    # Refuse to build a model whose state would be wider than this (concat-double doubles
    # it every block: width 64 at depth 12 is already 262,144 channels). The cost model
    # counts it on the meta device beyond it.
    max_state_width: int = 16384
    # The transformer family's own fields (Family.fields); other families refuse a value
    # other than the default, and leave them out of a spec's identity (to_dict).
    heads: int = 4  # attention heads; must divide the width (each attention sublayer's features)
    context: int | None = None  # sequence length T; None = 64 for tokens, the data's steps for numeric input
    mlp_ratio: int = 4  # the MLP sublayer's hidden width over its output width (GPT-2: 4)
    placement: str = "pre"  # pre: x + F(norm(x)); post: norm(x + F(x)) (Xiong et al., arXiv 2002.04745)
    vocab: int = 0  # > 0: the input is token ids of this many symbols (a language model); 0: numeric

    def __post_init__(self) -> None:
        choice("model", self.model, tuple(FAMILIES))
        choice("skip", self.skip, tuple(STRATEGIES))
        family = get_family(self.model)
        if self.norm is None:
            object.__setattr__(self, "norm", family.default_norm)
        if self.activation is None:
            object.__setattr__(self, "activation", family.default_activation)
        choice("norm", self.norm, family.norms)
        choice("activation", self.activation, tuple(ACTIVATIONS))
        choice("init", self.init, INITS)
        integer("depth", self.depth, 0)
        integer("width", self.width, 1)
        integer("aux_every", self.aux_every, 0)
        integer("kernel_size", self.kernel_size, 1)
        integer("vocab", self.vocab, 0)  # before classes: a language model's classes are its vocab
        integer("classes", self.classes, 1)
        integer("max_state_width", self.max_state_width, 1)
        integer("heads", self.heads, 1)
        integer("mlp_ratio", self.mlp_ratio, 1)
        if self.context is not None:
            integer("context", self.context, 1)
        self._check_family_fields(family)
        boolean("bias", self.bias)
        number("aux_weight", self.aux_weight)
        if self.kernel_size % 2 == 0:
            raise SpecError(f"kernel_size: must be odd so that 'same' padding is symmetric, got {self.kernel_size}")
        self._check_options()
        self._check_input_shape()
        try:
            family.check_spec(self)
        except ValueError as e:
            raise SpecError(str(e)) from None

    def _check_family_fields(self, family) -> None:
        """A field only some families take (the transformer's heads, context, ...) must keep
        its default elsewhere: a value given is a value the user expects to matter."""
        for name in FAMILY_FIELDS:
            if name not in family.fields and getattr(self, name) != _DEFAULTS[name]:
                takers = ", ".join(f.name for f in FAMILIES.values() if name in f.fields)
                raise SpecError(f"{name}: only the {takers} family takes it; model {self.model!r} does not")

    def _check_options(self) -> None:
        given = self.options
        if isinstance(given, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                                            for p in given):
            given = dict(given)
        if not isinstance(given, dict) or not all(isinstance(k, str) for k in given):
            raise SpecError(f"options: must be a mapping of option names to values, got {self.options!r}")
        strategy = get_strategy(self.skip)
        try:
            # one canonical form, however the options were given: the model's identity
            object.__setattr__(self, "options", strategy.canonical(given))
            strategy.resolve(dict(self.options), self.width)
            strategy.check_width(self.width)
        except OptionError as e:
            raise SpecError(str(e)) from None

    def _check_input_shape(self) -> None:
        family = get_family(self.model)
        shape = self.input_shape
        if shape is not None and not (isinstance(shape, (tuple, list)) and len(shape) >= 1 and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
            raise SpecError(f"input_shape: sizes must be integers >= 1 ({self.model} takes {family.input_form}), "
                            f"got {shape!r}")
        if "context" in family.fields:  # the family derives the shape and the sequence length together
            try:
                shape, context = family.resolve_shape(self)
            except ShapeError as e:
                # the family's message names context itself when the sequence length is at fault
                raise SpecError(str(e) if str(e).startswith("context") else f"input_shape: {e}") from None
            object.__setattr__(self, "input_shape", tuple(shape))
            object.__setattr__(self, "context", context)
            return
        if shape is None:
            object.__setattr__(self, "input_shape", family.default_input_shape)
            return
        try:
            family.check_input_shape(tuple(shape))
        except ShapeError as e:
            raise SpecError(f"input_shape: {e}, got {shape!r}") from None
        object.__setattr__(self, "input_shape", tuple(shape))

    # -- derived quantities (asked of the family and the strategy) ------------------------
    @property
    def family(self):
        return get_family(self.model)

    @property
    def strategy(self):
        return get_strategy(self.skip)

    @property
    def opts(self) -> dict[str, Any]:
        """The strategy's options, defaults filled in."""
        return self.strategy.resolve(dict(self.options), self.width)

    @property
    def in_channels(self) -> int:
        """Channels the stem receives (all features for the MLP)."""
        return self.family.in_channels(self.input_shape)

    @property
    def sublayers(self) -> int:
        return self.depth * self.family.sublayers_per_block

    def block_widths(self) -> list[BlockWidths]:
        """Widths of sublayers 1..depth x sublayers-per-block under this spec's strategy (pure arithmetic)."""
        return self.strategy.all_widths(self.width, self.opts, self.sublayers)

    @property
    def state_width(self) -> int:
        """Width of what the head sees."""
        return self.strategy.readout_width(self.width, self.opts, self.sublayers)

    @property
    def aux_positions(self) -> list[int]:
        """Blocks (1-based) followed by an auxiliary head: every ``aux_every``-th, not the last."""
        return list(range(self.aux_every, self.depth, self.aux_every)) if self.aux_every else []

    def describe_sites(self) -> tuple[Site, ...]:
        return self.describe().sites

    def describe(self) -> Description:
        """The one description of this model, read by the builder."""
        family, strategy, opts = self.family, self.strategy, self.opts
        per = family.sublayers_per_block
        widths = self.block_widths()
        sites = tuple(Site(index=l, count=len(widths), block=(l - 1) // per + 1, depth=self.depth,
                           last_in_block=l % per == 0, widths=w, channel_dim=family.channel_dim)
                      for l, w in enumerate(widths, start=1))
        aux = tuple((b, strategy.readout_width(self.width, opts, b * per)) for b in self.aux_positions)
        return Description(self, family, strategy, opts, self.in_channels, family.positions(self.input_shape),
                           sites, self.state_width, aux)

    def check_buildable(self) -> None:
        """Raise SpecError if the state would exceed ``max_state_width``."""
        widest = max([self.width] + [w.out_width for w in self.block_widths()])  # per stream
        if widest > self.max_state_width:
            raise SpecError(
                f"max_state_width: skip {self.skip!r} at depth {self.depth}, width {self.width} reaches a "
                f"state of {widest:,} channels, over the cap of {self.max_state_width:,}; lower depth or "
                f"width, or raise max_state_width (skiplab cost counts it on the meta device at any buildable depth)")

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data: its identity (stored, hashed). Fields the family does not
        take are left out, so adding a family's field never renames another family's runs."""
        taken = self.family.fields
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in FAMILY_FIELDS or f.name in taken}
        d["input_shape"] = list(d["input_shape"])
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Build from a mapping; an unknown key raises SpecError listing the known ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known) - {"growth"})
        if unknown:
            raise SpecError(f"{unknown[0]}: unknown field; known fields: {', '.join(known)}")
        d = dict(d)
        if "growth" in d:  # a round-1 store's spec: dense's growth was a field of its own
            growth = d.pop("growth")
            if growth is not None:
                d["options"] = {**d.get("options", {}), "growth": growth}
        if isinstance(d.get("input_shape"), list):
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
# Fields some family declares as its own (Family.fields): the transformer's heads, context, ...
FAMILY_FIELDS = tuple(dict.fromkeys(name for f in FAMILIES.values() for name in f.fields))
