"""``ModelSpec``: the typed description of one model, validated on creation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .layers import ACTIVATIONS, MODELS, NORMS
from .skips import STRATEGIES, BlockWidths, get_strategy

INITS = ("torch", "kaiming")
# Input shape used when none is given: MNIST-1D sequences of length 40 (Greydanus,
# arXiv 2011.14439) for the MLP and CNN-1D, scikit-learn's 8x8 digits for the CNN-2D.
DEFAULT_INPUT_SHAPES = {"mlp": (40,), "cnn1d": (1, 40), "cnn2d": (1, 8, 8)}


class SpecError(ValueError):
    """A field of a spec has a value outside what is allowed; the message names both."""


@dataclass(frozen=True)
class ModelSpec:
    """A model: stem -> ``depth`` blocks joined by ``skip`` -> head (DESIGN.md).

    Every field is checked on creation; a bad value raises :class:`SpecError` (a
    ``ValueError``) naming the field and what is allowed.
    """

    model: str = "mlp"  # mlp | cnn1d | cnn2d
    # Defaults: the CNN-1D with these reaches 99% on MNIST-1D in under a minute here
    # (README, "Training"); the MNIST-1D paper's CNN baseline is 94%.
    depth: int = 6  # number of blocks; 0 = stem + head only
    width: int = 32  # stem output width w (channels for the CNNs)
    skip: str = "add"  # a name in skiplab.skips.STRATEGIES
    growth: int | None = None  # dense only: new channels per block k; None = width
    norm: str = "batch"  # none | batch | layer, inside every transform (and the stem)
    activation: str = "relu"  # a name in skiplab.layers.ACTIVATIONS
    bias: bool = True  # bias on every Linear/Conv; a highway gate always keeps its own
    init: str = "torch"  # torch = PyTorch's default per layer; kaiming = He-normal, zero bias
    aux_every: int = 0  # an auxiliary head after every k-th block (not the last); 0 = none
    aux_weight: float = 0.3  # loss weight of each aux head (GoogLeNet's 0.3, arXiv 1409.4842)
    kernel_size: int = 5  # CNN kernel; odd, so that 'same' padding is symmetric
    input_shape: tuple[int, ...] | None = None  # per sample: (F,) | (C, L) | (C, H, W); None = default of the kind
    classes: int = 10  # outputs of the head
    # Refuse to build a model whose state would be wider than this (concat-double doubles
    # it every block: width 64 at depth 12 is already 262,144 channels). The cost model
    # answers analytically beyond it.
    max_state_width: int = 16384

    def __post_init__(self) -> None:
        _choice("model", self.model, MODELS)
        _choice("skip", self.skip, tuple(STRATEGIES))
        _choice("norm", self.norm, NORMS)
        _choice("activation", self.activation, tuple(ACTIVATIONS))
        _choice("init", self.init, INITS)
        _integer("depth", self.depth, 0)
        _integer("width", self.width, 1)
        _integer("aux_every", self.aux_every, 0)
        _integer("kernel_size", self.kernel_size, 1)
        _integer("classes", self.classes, 1)
        _integer("max_state_width", self.max_state_width, 1)
        if not isinstance(self.bias, bool):
            raise SpecError(f"bias: must be true or false, got {self.bias!r}")
        if isinstance(self.aux_weight, bool) or not isinstance(self.aux_weight, (int, float)) \
                or not math.isfinite(self.aux_weight) or self.aux_weight < 0:
            raise SpecError(f"aux_weight: must be a finite number >= 0, got {self.aux_weight!r}")
        if self.growth is not None:
            _integer("growth", self.growth, 1)
            if self.skip != "dense":
                raise SpecError(f"growth: only skip 'dense' uses a growth, not {self.skip!r}; leave it unset")
        if self.kernel_size % 2 == 0:
            raise SpecError(f"kernel_size: must be odd so that 'same' padding is symmetric, got {self.kernel_size}")
        if self.skip == "concat-half" and self.width % 2:
            raise SpecError(f"width: concat-half splits the state in halves, so width must be even, got {self.width}")
        self._check_input_shape()

    def _check_input_shape(self) -> None:
        shape = self.input_shape
        if shape is None:
            object.__setattr__(self, "input_shape", DEFAULT_INPUT_SHAPES[self.model])
            return
        want = {"mlp": None, "cnn1d": 2, "cnn2d": 3}[self.model]
        ok = isinstance(shape, (tuple, list)) and len(shape) >= 1 \
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
        if not ok or (want is not None and len(shape) != want):
            form = {"mlp": "(features,) or any shape, flattened", "cnn1d": "(channels, length)",
                    "cnn2d": "(channels, height, width)"}[self.model]
            raise SpecError(f"input_shape: {self.model} takes {form} of positive integers, got {shape!r}")
        object.__setattr__(self, "input_shape", tuple(shape))

    # -- derived quantities ---------------------------------------------------------------
    @property
    def k(self) -> int:
        """The dense growth actually used (``growth``, or ``width`` when unset)."""
        return self.width if self.growth is None else self.growth

    @property
    def in_channels(self) -> int:
        """Channels the stem receives: C for the CNNs, all features for the MLP."""
        return self.input_shape[0] if self.model != "mlp" else math.prod(self.input_shape)

    def block_widths(self) -> list[BlockWidths]:
        """Widths of blocks 1..depth under this spec's strategy (pure arithmetic)."""
        return get_strategy(self.skip).block_widths(self.width, self.k, self.depth)

    @property
    def state_width(self) -> int:
        """Width of the state the head sees."""
        return get_strategy(self.skip).state_width(self.width, self.k, self.depth)

    @property
    def aux_positions(self) -> list[int]:
        """Blocks (1-based) followed by an auxiliary head: every ``aux_every``-th, not the last."""
        return list(range(self.aux_every, self.depth, self.aux_every)) if self.aux_every else []

    def check_buildable(self) -> None:
        """Raise SpecError if the state would exceed ``max_state_width``."""
        widest = max([self.width] + [w.out_width for w in self.block_widths()])
        if widest > self.max_state_width:
            raise SpecError(
                f"max_state_width: skip {self.skip!r} at depth {self.depth}, width {self.width} reaches a "
                f"state of {widest:,} channels, over the cap of {self.max_state_width:,}; lower depth or "
                f"width, or raise max_state_width (the cost model answers analytically at any depth)")

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["input_shape"] = list(d["input_shape"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Build from a mapping; an unknown key raises SpecError listing the known ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise SpecError(f"{unknown[0]}: unknown field; known fields: {', '.join(known)}")
        d = dict(d)
        if isinstance(d.get("input_shape"), list):
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


def _integer(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{name}: must be an integer >= {minimum}, got {value!r}")
