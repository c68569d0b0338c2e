"""The contract every model family honours, and the one description of a model.

A **family** (mlp, cnn1d, cnn2d, ...) owns its stem, its sublayers per block, its head, its
tensor layout. :func:`describe` turns a spec into a :class:`Description` once, which the
builder (``skiplab.model``) reads; costs are counted on the model it builds
(``skiplab.cost``), so they can never describe a different model than the one trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import torch
from torch import nn

from ..layers import Head, Transform
from ..skips.base import BlockWidths, Connection, Option, OptionError, Site, Strategy

if TYPE_CHECKING:  # for annotations only: spec imports the families, never the reverse at run time
    from ..spec import ModelSpec


class ShapeError(ValueError):
    """An input shape the family cannot take: a SpecError ``FIELD: message`` (``field`` ""
    when the message names what is at fault itself: the transformer's context)."""

    def __init__(self, message: str, field: str = "input_shape"):
        super().__init__(message)
        self.field = field


class Family:
    """A model family. Subclasses set the class attributes and the layer/norm/pool makers."""

    name: ClassVar[str]
    summary: ClassVar[str]
    layout: ClassVar[str]  # the activations' layout, e.g. "(B, C, L)"
    channel_dim: ClassVar[int] = 1
    sublayers_per_block: ClassVar[int] = 1
    default_input_shape: ClassVar[tuple[int, ...]]
    input_form: ClassVar[str]  # what input_shape means, for error messages
    norms: ClassVar[tuple[str, ...]] = ("none", "batch", "layer")  # what --norm may name
    default_norm: ClassVar[str] = "batch"
    default_activation: ClassVar[str] = "relu"
    takes_tokens: ClassVar[bool] = False  # can it embed token ids (a language model)?
    # Does the batched engine (skiplab.run.batched: seeds under torch.func.vmap) beat the loop on a
    # CPU? Where not, the engine leaves this family's CPU runs to the loop, saying so.
    batches_on_cpu: ClassVar[bool] = True
    # Does training on CUDA keep this family's activations channels-last (NHWC), the layout
    # cuDNN's convolutions prefer? The engines ask ``skiplab.run.step.wants_channels_last``.
    channels_last: ClassVar[bool] = False
    # The family's own hyperparameters, declared as a strategy declares its (skiplab.skips.Option):
    # ModelSpec keywords and attributes (spec.heads), --NAME flags, sweep keys, generated from
    # these; a spec's identity holds them by name (ModelSpec.to_dict). None given = the default.
    options: ClassVar[tuple[Option, ...]] = ()
    # Are this family's costs the same counted on plain meta tensors as on fake CPU ones
    # (no op picks its kernel by device: attention does)? Then ``skiplab.cost.prefix``
    # counts its depth sweeps on meta, several times faster (tests/test_cost_prefix.py
    # checks the figures equal the fake CPU count's).
    counts_on_meta: ClassVar[bool] = False
    default_width: ClassVar[int] = 32  # ModelSpec.width when not given
    default_kernel_size: ClassVar[int] = 5  # ModelSpec.kernel_size when not given (odd: same padding)
    default_bias: ClassVar[bool] = True  # ModelSpec.bias when not given

    # -- options ------------------------------------------------------------------------
    def declares(self, option: str) -> bool:
        """Does this family take ``option`` (the transformer's ``heads``)?"""
        return any(o.name == option for o in self.options)

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option's value, in declaration order: ``given`` checked, defaults filled in
        (None = the default). Raises OptionError for an unknown option or a bad value."""
        for key in given:
            if not self.declares(key):
                allowed = ", ".join(o.name for o in self.options) or "none"
                raise OptionError(f"{key}: model {self.name!r} has no option {key!r} (its options: {allowed})")
        return {o.name: o.default if given.get(o.name) is None else o.check(given[o.name]) for o in self.options}

    # -- shapes -------------------------------------------------------------------------
    def check_input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def resolve_shape(self, spec: "ModelSpec") -> tuple[tuple[int, ...], dict[str, Any]]:
        """``(input_shape, options it settles)`` of a spec: the default shape when none is
        given, else the given one checked (ShapeError); a family whose options follow from
        the shape (the transformer's context from the data's steps) returns them too."""
        if spec.input_shape is None:
            return self.default_input_shape, {}
        shape = tuple(spec.input_shape)
        try:
            self.check_input_shape(shape)
        except ShapeError as e:
            raise ShapeError(f"{e}, got {shape!r}", e.field) from None
        return shape, {}

    def in_channels(self, shape: tuple[int, ...]) -> int:
        """Channels the stem receives."""
        return shape[0]

    def positions(self, shape: tuple[int, ...]) -> int:
        """Positions per sample (1 for the MLP); same padding keeps them in every sublayer."""
        return math.prod(shape[1:])

    def kernel_volume(self, spec: "ModelSpec") -> int:
        return 1

    def prepare_input(self, x, spec: "ModelSpec"):
        """Check (and reshape, where the family accepts more than one form) a batch."""
        if tuple(x.shape[1:]) != spec.input_shape:
            raise ValueError(f"input: expected (batch, {', '.join(map(str, spec.input_shape))}), got {tuple(x.shape)}")
        return x

    def accepts(self, sample_shape: tuple[int, ...], spec: "ModelSpec") -> bool:
        """Whether a model of ``spec`` takes samples of ``sample_shape`` (the MLP takes any
        shape with the right number of features: it flattens)."""
        try:
            self.prepare_input(torch.zeros(1, *sample_shape), spec)
        except ValueError:
            return False
        return True

    def random_batch(self, spec: "ModelSpec", batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of random inputs and targets of the right kind (cost measurement)."""
        x = torch.randn(batch, *spec.input_shape, generator=generator)
        return x, torch.randint(0, spec.classes, (batch,), generator=generator)

    def size_step(self, spec: "ModelSpec") -> int:
        """Widths and sizing options (dense's growth) come in multiples of this."""
        return 1

    def check_spec(self, spec: "ModelSpec") -> None:
        """The family's own rules for a spec, beyond its input shape (ValueError naming the field)."""

    # -- blocks and widths (pure arithmetic) -----------------------------------------------
    def default_depth(self, spec: "ModelSpec") -> int:
        """``ModelSpec.depth`` when not given (the skip and the family's options are known)."""
        return 6

    def blocks(self, spec: "ModelSpec") -> int:
        """How many blocks ``spec.depth`` means: the depth itself (a family that counts
        layers, as resnet's papers do, converts)."""
        return spec.depth

    def block_widths(self, spec: "ModelSpec") -> list[BlockWidths]:
        """Widths of every sublayer: the strategy's width rule from the stem's width (a
        staged family restarts it at every stage)."""
        return spec.strategy.all_widths(spec.width, spec.opts, self.blocks(spec) * self.sublayers_per_block)

    def readout_width(self, spec: "ModelSpec", count: int) -> int:
        """Width of what a head sees after ``count`` sublayers."""
        return spec.strategy.readout_width(spec.width, spec.opts, count)

    # -- parts --------------------------------------------------------------------------
    def stem(self, spec: "ModelSpec", in_channels: int) -> nn.Module:
        return self.transform(spec, in_channels, spec.width)

    def branch(self, spec: "ModelSpec", site: Site) -> nn.Module:
        """Sublayer ``site``'s branch: its input width to its features."""
        return self.transform(spec, site.widths.in_width, site.widths.features)

    def sublayer_name(self, site: Site) -> str:
        """How tables name a sublayer: ``block 3``, or ``block 3 attention`` for the transformer."""
        return f"block {site.block}"

    def branch_weight(self, branch: nn.Module) -> torch.Tensor:
        """The weight whose gradient norm the diagnostics report per sublayer: the
        transform's layer."""
        return branch.layer.weight

    def place(self, connection: nn.Module, spec: "ModelSpec", site: Site) -> nn.Module:
        """The connection as the family places it (the transformer's post-norm wraps it)."""
        return connection

    def layer(self, spec: "ModelSpec", in_width: int, out_width: int, bias: bool) -> nn.Module:
        raise NotImplementedError

    def norm(self, spec: "ModelSpec", width: int) -> nn.Module:
        raise NotImplementedError

    def pool(self) -> nn.Module | None:
        return None

    def transform(self, spec: "ModelSpec", in_width: int, out_width: int) -> Transform:
        return Transform(self.layer(spec, in_width, out_width, spec.bias), self.norm(spec, out_width), spec.activation)

    def head(self, spec: "ModelSpec", width: int) -> Head:
        return Head(width, spec.classes, spec.bias, self.pool())

    def __repr__(self) -> str:
        return f"Family({self.name!r})"


@dataclass(frozen=True)
class Description:
    """A model, described once: what the builder builds."""

    spec: "ModelSpec"
    family: Family
    strategy: Strategy
    options: dict[str, Any]  # the strategy's options, resolved
    in_channels: int
    positions: int
    sites: tuple[Site, ...]  # one per sublayer
    readout_width: int  # what the head sees
    aux: tuple[tuple[int, int], ...]  # (block, readout width) of every auxiliary head


class AfterMerge(Connection):
    """``after(write(stream, f))``: a family's module applied to the merged stream, around
    any single-tensor strategy's connection (the transformer's Post-LN norm; a ResNet's
    ReLU after the addition). ``attr`` is the module's name in the state dict (``norm``,
    ``act``), so stored weights keep their keys."""

    def __init__(self, inner: Connection, after: nn.Module, attr: str):
        nn.Module.__init__(self)
        self.inner, self._attr = inner, attr
        setattr(self, attr, after)
        self.channel_dim = inner.channel_dim

    def _after(self, x):
        return getattr(self, self._attr)(x)

    @property
    def branch(self) -> nn.Module:  # type: ignore[override]
        return self.inner.branch

    def read(self, stream):
        return self.inner.read(stream)

    def write(self, stream, f):
        return self._after(self.inner.write(stream, f))

    def without_branch(self, stream):
        return self._after(self.inner.without_branch(stream))

    def family_parts(self):
        return [*self.inner.family_parts(), getattr(self, self._attr)]

    def kaiming_(self) -> None:
        self.inner.kaiming_()
