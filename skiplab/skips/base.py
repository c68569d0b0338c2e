"""The residual-stream contract every skip strategy honours (docs/design.md, "The stream contract").

A model is stem -> sublayers -> head. A **sublayer** is a branch (norm -> transform) whose
output is merged into the **stream**: whatever flows between sublayers. A strategy owns
that stream:

* ``init(x0) -> stream``: the stem's output becomes the stream (hyper-connections copy it
  n times; DenseFormer starts its list of block outputs);
* per sublayer, a :class:`Connection` (an ``nn.Module`` holding the strategy's own
  parameters) with ``read(stream) -> z`` (the branch's input) and
  ``write(stream, f) -> stream`` (merge the branch's output);
* ``readout(stream) -> h``: what the head sees.

Everything else a strategy knows is declared once, on its class, and asked by everyone
else: its hyperparameters (:class:`Option`, with validation and defaults), its width rule
(pure arithmetic, so costs answer for depths that could never be built), its width
constraints, what the stream becomes when a branch is removed (lesion), how it initialises.
What it costs is counted on the built model (``skiplab.cost``), never written down twice.
Nothing outside ``skiplab/skips/`` tests a strategy's name.

Tensors: a family's layout puts channels at ``site.channel_dim`` (1 for ``(B, C, *S)``,
-1 for ``(B, T, C)``); a strategy never assumes more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, NamedTuple

import torch
from torch import nn

from ..validate import SpecError, boolean, choice, integer


RESHAPES = ("shortcut", "branch", "transition", "")


class OptionError(SpecError):
    """A strategy option has a bad value, or a width the strategy cannot take."""


class BlockWidths(NamedTuple):
    """Channel widths seen by one sublayer."""

    in_width: int  # width of the branch's input z_l
    features: int  # width of the new features f_l the branch produces
    out_width: int  # width of the state after the merge (per stream, for multi-stream strategies)


@dataclass(frozen=True)
class Option:
    """A strategy's hyperparameter: ``--NAME`` on the command line, a key in sweep files
    and in ``ModelSpec.options``."""

    name: str
    kind: type  # int, bool or str (one of ``choices``)
    default: Any  # a value, or None when ``default_from_width`` gives it
    help: str
    minimum: int = 1  # for ints
    sizes: bool = False  # a budget may resize it (dense's growth) as it resizes the width
    default_from_width: bool = False  # the default is the model's width (dense's growth k = w)
    choices: tuple[str, ...] = ()  # for str options

    def check(self, value: Any) -> Any:
        if self.kind is str:
            return choice(self.name, value, self.choices)
        return boolean(self.name, value) if self.kind is bool else integer(self.name, value, self.minimum)


@dataclass(frozen=True)
class Site:
    """Where a connection sits: sublayer ``index`` (1-based) of ``count``, in ``block`` of
    ``depth`` blocks; the widths its branch sees; the channel dim of the layout."""

    index: int
    count: int
    block: int
    depth: int
    last_in_block: bool
    widths: BlockWidths
    channel_dim: int = 1


# make_gate(in_width, out_width) -> a layer of the family's kind with a bias (highway's gate).
MakeGate = Callable[[int, int], nn.Module]


class Connection(nn.Module):
    """Merges one branch into the stream. As a drop-in module it also holds the branch:
    ``forward(stream) = write(stream, branch(read(stream)))``, so ``Residual(branch)`` is a
    whole residual block around any module."""

    channel_dim: int = 1

    def __init__(self, branch: nn.Module | None = None):
        super().__init__()
        self.branch = branch

    def read(self, stream: Any) -> torch.Tensor:
        return stream

    def write(self, stream: Any, f: torch.Tensor) -> Any:
        raise NotImplementedError

    def without_branch(self, stream: Any) -> Any:
        """The stream after this sublayer if its branch were removed (a lesion, Veit et al.,
        arXiv 1605.06431): by default the merge of a branch that outputs zeros (for add the
        identity, for dense the carried state and zero new channels)."""
        f = self.branch(self.read(stream))
        return self.write(stream, torch.zeros_like(f))

    def lesion(self):
        """Make this sublayer act as if its branch were removed until the returned handle's
        ``remove()`` (a forward hook)."""
        return self.register_forward_hook(lambda module, inputs, output: module.without_branch(inputs[0]))

    def family_parts(self) -> list[nn.Module]:
        """The modules in this connection that belong to the model's family, not to the
        strategy (the branch; a post-norm): their work is never counted as the merge's."""
        return [self.branch]

    def kaiming_(self) -> None:
        """Hook for ``init="kaiming"``: re-initialise the connection's own layers (not the
        branch, which the model initialises). The model calls it on every connection and
        never asks which kind it is (timm's ``zero_init_last`` pattern)."""

    def forward(self, stream: Any) -> Any:
        if self.branch is None:
            raise ValueError(f"{type(self).__name__}: no branch to wrap; call read/write, or pass branch=")
        return self.write(stream, self.branch(self.read(stream)))


class Strategy:
    """A skip strategy. Subclasses set the class attributes and override what differs;
    instances are stateless and live in the registry (``skiplab.skips.STRATEGIES``)."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line, shown by `skiplab strategies`
    rule: ClassVar[str]  # the update rule, in docs/design.md's notation
    source: ClassVar[str]  # paper or answer the strategy comes from
    options: ClassVar[tuple[Option, ...]] = ()
    # Its colour in every figure: Okabe & Ito's colour-blind-safe set
    # (https://jfly.uni-koeln.de/color/), a grey for the baseline, then Paul Tol's.
    color: ClassVar[str] = "#333333"
    width_step: ClassVar[int] = 1  # widths must be multiples of this (concat-half: 2) ...
    width_reason: ClassVar[str] = ""  # ... because of this
    # Is the stream a composite of residual mixing matrices whose gain is worth reporting
    # (hyper-connections, mHC)? Such connections implement ``mixing_matrix``.
    mixes_streams: ClassVar[bool] = False
    # Which direction of that gain holds by construction ("forward", "both"; "" for none),
    # and why: a report shows the direction that can vary instead of presenting a
    # guaranteed 1 as a finding.
    gain_by_construction: ClassVar[str] = ""
    gain_reason: ClassVar[str] = ""
    # Is the stream one tensor (so a family may normalise it after each merge, the
    # transformer's post-norm placement)? DenseFormer's list and hyper's copies are not.
    single_stream: ClassVar[bool] = True
    # How the stream crosses a change of shape (the stride-2 transitions between the stages of
    # a staged family, skiplab.families.resnet), one of RESHAPES:
    # "shortcut": the stream goes through the family's shortcut (subsample and zero-pad, or a
    #   projection) and is merged with a branch that strides (He et al., arXiv 1512.03385, Sec. 3.3);
    # "branch": nothing is carried, the striding branch's output is the state (a plain net);
    # "transition": the stream is read out, passed through the family's transition layer and
    #   started again (DenseNet's transition layers, Huang et al., arXiv 1608.06993, Sec. 3);
    # "": it cannot, for ``reshape_reason``.
    reshape: ClassVar[str] = ""
    reshape_reason: ClassVar[str] = "it declares no rule for a change of the stream's shape"
    # Does a fresh connection merge exactly as ``s + f`` does (the residual net), so that a
    # residual model rewired with it (``skiplab.rewire``) computes what it computed before?
    # add, and the stream designs whose papers initialise to the residual net (DenseFormer,
    # hyper-connections, mHC); not rezero (it starts without its branches), layerscale
    # (it starts at s + 0.1 f), highway, plain or the concatenations.
    starts_as_residual: ClassVar[bool] = False

    def single_tensor(self, opts: Mapping[str, Any]) -> bool:
        """Is the stream one tensor with these options (dense with memory="efficient"
        carries its features as pieces)?"""
        return self.single_stream

    # -- options -----------------------------------------------------------------------
    def declares(self, option: str) -> bool:
        """Does this strategy take ``option`` (dense's ``growth``, the concatenations' ``memory``)?"""
        return any(o.name == option for o in self.options)

    def resolve(self, given: Mapping[str, Any], width: int) -> dict[str, Any]:
        """Every option's value: ``given`` checked, defaults filled in. Raises OptionError
        for an unknown option or a bad value."""
        known = {o.name: o for o in self.options}
        for key in given:
            if key not in known:
                allowed = ", ".join(known) if known else "none"
                raise OptionError(f"{key}: skip {self.name!r} has no option {key!r} (its options: {allowed})")
        out = {}
        for o in self.options:
            if o.name in given and given[o.name] is not None:
                out[o.name] = o.check(given[o.name])
            else:
                out[o.name] = width if o.default_from_width else o.default
        return out

    def canonical(self, given: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The options as part of a model's identity: sorted, without None and without a
        value equal to a fixed default, so that ``{}`` and ``{"streams": 4}`` name the same
        model. (A default taken from the width, dense's growth, is kept when given: growth
        64 stays 64 when a budget later changes the width.)"""
        self.resolve(given, 1)  # unknown names and bad values raise here
        fixed = {o.name: o.default for o in self.options if not o.default_from_width}
        return tuple(sorted((k, v) for k, v in given.items()
                            if v is not None and not (k in fixed and v == fixed[k] and type(v) is type(fixed[k]))))

    def check_width(self, width: int) -> None:
        if width % self.width_step:
            raise OptionError(f"width: skip {self.name!r} needs a width divisible by {self.width_step} "
                              f"({self.width_reason}), got {width}")

    # -- widths (pure arithmetic) -------------------------------------------------------
    def widths(self, width: int, opts: Mapping[str, Any], l: int) -> BlockWidths:
        """Widths of sublayer ``l`` (1-based); the default keeps the stream's width."""
        return BlockWidths(width, width, width)

    def all_widths(self, width: int, opts: Mapping[str, Any], count: int) -> list[BlockWidths]:
        return [self.widths(width, opts, l) for l in range(1, count + 1)]

    def readout_width(self, width: int, opts: Mapping[str, Any], count: int) -> int:
        """Width of what the head sees after ``count`` sublayers."""
        return self.widths(width, opts, count).out_width if count else width

    # -- modules ------------------------------------------------------------------------
    def connection(self, branch: nn.Module, site: Site, opts: Mapping[str, Any], make_gate: MakeGate) -> Connection:
        raise NotImplementedError

    def init(self, x0: torch.Tensor, opts: Mapping[str, Any]) -> Any:
        return x0

    def readout(self, stream: Any, opts: Mapping[str, Any]) -> torch.Tensor:
        return stream

    def describe(self) -> dict[str, Any]:
        """What `skiplab strategies --json` shows."""
        return {"skip": self.name, "summary": self.summary, "rule": self.rule, "source": self.source,
                "options": {o.name: {"default": "width" if o.default_from_width else o.default, "help": o.help}
                            for o in self.options}}

    def __repr__(self) -> str:
        return f"Strategy({self.name!r})"
