"""``ModelSpec``: the typed description of one model, validated on creation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .families import FAMILIES, Description, ShapeError, all_family_options, get_family
from .layers import ACTIVATIONS
from .skips import STRATEGIES, BlockWidths, OptionError, Site, all_options, get_strategy
from .validate import SpecError, boolean, choice, integer, number

INITS = ("torch", "kaiming")

__all__ = ["ModelSpec", "SpecError", "INITS", "MODEL_KEYS"]


@dataclass(frozen=True, init=False)
class ModelSpec:
    """A model: stem -> ``depth`` blocks joined by ``skip`` -> head (docs/design.md).

    Every field is checked on creation; a bad value raises :class:`SpecError` (a
    ``ValueError``) naming the field and what is allowed. Besides the fields below, a spec
    takes its family's own options by name (``Family.options``: the transformer's
    ``heads``, ``context``, ...; resnet's ``stages``, ``shortcut``) as keywords, and reads
    them as attributes: ``ModelSpec(model="transformer", heads=8).heads == 8``. Keywords
    only.
    """

    model: str = "mlp"  # a family in skiplab.families.FAMILIES: mlp | cnn1d | cnn2d | transformer | resnet
    # Defaults: the CNN-1D with these reaches 99% on MNIST-1D in under a minute here
    # (docs/training.md); the MNIST-1D paper's CNN baseline is 94%.
    # number of blocks, 0 = stem + head only; None = the family's (6; resnet counts layers, as its
    # papers do: 20, ResNet-20, or with dense 100, DenseNet-BC-100)
    depth: int | None = None
    width: int | None = None  # stem output width w (channels for the CNNs); None = the family's (32; resnet 16)
    skip: str = "add"  # a name in skiplab.skips.STRATEGIES
    # The strategy's own hyperparameters (dense's growth, hyper's streams, ...), checked
    # and defaulted by the strategy (skiplab.skips); given as a dict, kept as sorted pairs.
    options: Any = ()
    # None = the family's default: batch norm and ReLU for the MLP and CNNs, layer norm and
    # GELU for the transformer (GPT-2's choices).
    norm: str | None = None  # one of the family's norms: none | batch | layer (| rms for the transformer)
    activation: str | None = None  # a name in skiplab.layers.ACTIVATIONS
    # bias on every Linear/Conv; a highway gate always keeps its own. None = the family's: on, but
    # off for resnet, whose every conv feeds a batch norm, as in its papers
    bias: bool | None = None
    init: str = "torch"  # torch = PyTorch's default per layer; kaiming = He-normal, zero bias
    aux_every: int = 0  # an auxiliary head after every k-th block (not the last); 0 = none
    aux_weight: float = 0.3  # loss weight of each aux head (GoogLeNet's 0.3, arXiv 1409.4842)
    kernel_size: int | None = None  # CNN kernel, odd, so that 'same' padding is symmetric; None = the family's (5; resnet 3)
    input_shape: tuple[int, ...] | None = None  # per sample: (F,) | (C, L) | (C, H, W); None = the family's default
    classes: int = 10  # outputs of the head
    # Refuse to build a model whose state would be wider than this (concat-double doubles
    # it every block: width 64 at depth 12 is already 262,144 channels). The cost model
    # counts it on the meta device beyond it.
    max_state_width: int = 16384
    # The family's own options (Family.options), given as keywords by name: every option the
    # family declares with its value (defaults and derived values filled in), as (name,
    # value) pairs in declaration order. In a spec's identity (to_dict) they are keys of
    # their own, as when the transformer's were fields: every stored run keeps its hash.
    family_options: Any = ()

    def __init__(self, **given: Any) -> None:
        for f in _FIELDS:
            object.__setattr__(self, f.name, given.pop(f.name, f.default))
        if given:  # the family's options by name (dataclasses.replace passes them so too)
            options = self.family_options
            if isinstance(options, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in options):
                options = dict(options)
            if not isinstance(options, dict):
                raise SpecError(f"family_options: must be a mapping of option names to values, got {options!r}")
            object.__setattr__(self, "family_options", {**options, **given})
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:
        """A family option as an attribute: the model's value, or for an option only other
        families declare, its default (``ModelSpec(model="mlp").vocab == 0``)."""
        options = self.__dict__.get("family_options", ()) if not name.startswith("__") else ()
        for key, value in (options.items() if isinstance(options, dict) else options):
            if key == name:
                return value
        owners = all_family_options().get(name) if not name.startswith("__") else None
        if owners:
            return next(o.default for o in owners[0].options if o.name == name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __post_init__(self) -> None:
        choice("model", self.model, tuple(FAMILIES))
        choice("skip", self.skip, tuple(STRATEGIES))
        family = get_family(self.model)
        # first: a language model's classes are its vocab (the command line passes vocab as classes)
        self._check_family_options(family)
        if self.norm is None:
            object.__setattr__(self, "norm", family.default_norm)
        if self.activation is None:
            object.__setattr__(self, "activation", family.default_activation)
        if self.width is None:
            object.__setattr__(self, "width", family.default_width)
        if self.bias is None:
            object.__setattr__(self, "bias", family.default_bias)
        if self.depth is None:
            object.__setattr__(self, "depth", family.default_depth(self))
        if self.kernel_size is None:
            object.__setattr__(self, "kernel_size", family.default_kernel_size)
        choice("norm", self.norm, family.norms)
        choice("activation", self.activation, tuple(ACTIVATIONS))
        choice("init", self.init, INITS)
        integer("depth", self.depth, 0)
        integer("width", self.width, 1)
        integer("aux_every", self.aux_every, 0)
        integer("kernel_size", self.kernel_size, 1)
        integer("classes", self.classes, 1)
        integer("max_state_width", self.max_state_width, 1)
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

    def _check_family_options(self, family) -> None:
        """The family's options checked, defaults filled in. An option only other families
        take (the transformer's heads on an MLP) must be absent or at its default: a value
        given is a value the user expects to matter (and a stored spec of before options
        left the identity holds the defaults)."""
        given = self.family_options
        if isinstance(given, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in given):
            given = dict(given)
        if not isinstance(given, dict) or not all(isinstance(k, str) for k in given):
            raise SpecError(f"family_options: must be a mapping of option names to values, got {given!r}")
        owners, own = all_family_options(), {}
        for name, value in given.items():
            if family.declares(name):
                own[name] = value
            elif name in owners:
                option = next(o for o in owners[name][0].options if o.name == name)
                if value is not None:
                    option.check(value)  # a bad value is named as such first (vocab -3 on an MLP)
                if value is not None and value != option.default:
                    takers = ", ".join(f.name for f in owners[name])
                    raise SpecError(f"{name}: only the {takers} family takes it; model {self.model!r} does not")
            else:
                raise SpecError(f"{name}: unknown field; known fields: {', '.join(MODEL_KEYS)}")
        object.__setattr__(self, "family_options", tuple(family.resolve_options(own).items()))

    def _set_family_options(self, changes: dict[str, Any]) -> None:
        object.__setattr__(self, "family_options", tuple({**dict(self.family_options), **changes}.items()))

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
        try:  # the family may settle options with the shape (the transformer's context: the data's steps)
            shape, settled = family.resolve_shape(self)
        except ShapeError as e:
            # the family's message names what is at fault itself when it is not the shape
            raise SpecError(f"{e.field}: {e}" if e.field else str(e)) from None
        object.__setattr__(self, "input_shape", tuple(shape))
        if settled:
            self._set_family_options(settled)

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
    def blocks(self) -> int:
        """Number of blocks: ``depth``, or what it means to a family that counts layers (resnet)."""
        return self.family.blocks(self)

    @property
    def sublayers(self) -> int:
        return self.blocks * self.family.sublayers_per_block

    def block_widths(self) -> list[BlockWidths]:
        """Widths of sublayers 1..blocks x sublayers-per-block under this spec's strategy and
        family (pure arithmetic)."""
        return self.family.block_widths(self)

    @property
    def state_width(self) -> int:
        """Width of what the head sees."""
        return self.family.readout_width(self, self.sublayers)

    @property
    def aux_positions(self) -> list[int]:
        """Blocks (1-based) followed by an auxiliary head: every ``aux_every``-th, not the last."""
        return list(range(self.aux_every, self.blocks, self.aux_every)) if self.aux_every else []

    def describe_sites(self) -> tuple[Site, ...]:
        return self.describe().sites

    def describe(self) -> Description:
        """The one description of this model, read by the builder."""
        family, strategy, opts = self.family, self.strategy, self.opts
        per = family.sublayers_per_block
        widths = self.block_widths()
        sites = tuple(Site(index=l, count=len(widths), block=(l - 1) // per + 1, depth=self.blocks,
                           last_in_block=l % per == 0, widths=w, channel_dim=family.channel_dim)
                      for l, w in enumerate(widths, start=1))
        aux = tuple((b, family.readout_width(self, b * per)) for b in self.aux_positions)
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
        """The spec as plain data: its identity (stored, hashed). The family's options are
        keys of their own, and only the family's: adding a family's option never renames
        another family's runs."""
        d = {f.name: getattr(self, f.name) for f in _FIELDS if f.name != "family_options"}
        d["input_shape"] = list(d["input_shape"])
        d["options"] = dict(self.options)
        d.update(self.family_options)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Build from a mapping; an unknown key raises SpecError listing the known ones."""
        known = list(MODEL_KEYS) + ["family_options"]
        unknown = sorted(set(d) - set(known) - {"growth"})
        if unknown:
            raise SpecError(f"{unknown[0]}: unknown field; known fields: {', '.join(MODEL_KEYS)}")
        d = dict(d)
        if "growth" in d:  # a round-1 store's spec: dense's growth was a field of its own
            growth = d.pop("growth")
            if growth is not None:
                d["options"] = {**d.get("options", {}), "growth": growth}
        if isinstance(d.get("input_shape"), list):
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


_FIELDS = dataclasses.fields(ModelSpec)
# Every key a spec takes (its fields, then every family's options): ModelSpec keywords and
# to_dict keys, sweep files' model keys.
MODEL_KEYS = tuple(f.name for f in _FIELDS if f.name != "family_options") + tuple(all_family_options())
_clash = set(all_family_options()) & ({f.name for f in _FIELDS} | set(all_options()))
if _clash:  # a family option named like a field or a strategy option would make one flag mean two things
    raise RuntimeError(f"family options {sorted(_clash)} clash with ModelSpec fields or strategy options")
