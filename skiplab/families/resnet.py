"""The resnet family: staged 2-D convolutional nets as the papers build them for CIFAR,
layout (B, C, H, W).

A stem, then ``stages`` stages of n blocks, each stage at half the height and width of the
one before, then a global-average-pool head. How the stream crosses the stride-2
transition between two stages is the strategy's declared fact (``Strategy.reshape``):

* ``shortcut`` (add, rezero, layerscale) and ``branch`` (plain): He et al.'s CIFAR nets
  (arXiv 1512.03385, Sec. 4.2). Stem conv -> norm -> act; basic blocks, whose branch is
  conv -> norm -> act -> conv -> norm and whose merge is followed by the activation (the
  ReLU after the addition, Fig. 2); stage widths w, 2w, 4w (16, 32, 64); the first conv
  of every later stage strides 2. There the stream goes through a shortcut: option ``A``
  subsamples it and pads the new channels with zeros (parameter-free, the paper's CIFAR
  nets), option ``B`` projects it by a stride-2 1x1 conv -> norm (Sec. 3.3); a plain net
  carries nothing. Depth counts the weighted layers as Table 6 does: 6n + 2 with 3
  stages (ResNet-20, 32, 44, 56, 110).
* ``transition`` (dense, and the other concatenations): DenseNet-BC (Huang et al., arXiv
  1608.06993, Sec. 3 and 4). Stem: a conv alone (every layer normalises its own input);
  dense blocks of bottleneck layers, norm -> act -> 1x1 conv to 4k -> norm -> act -> conv
  to k; between two blocks a transition layer, norm -> act -> 1x1 conv to floor(theta m)
  of its m channels (compression theta = 0.5) -> 2x2 average pool, after which the
  strategy starts its stream again; head norm -> act -> pool -> Linear. Depth: 6n + 4
  with 3 blocks (DenseNet-BC-100: n = 16). Its stem has 2k channels: ``--width 24
  --growth 12`` is the paper's k = 12.

Kernels are 3x3 (``kernel_size``) and the width defaults to 16, the papers' CIFAR sizes.
The strategies that cannot cross a change of shape (their reason is theirs) are refused.
Costs need nothing here: they are counted on the built model (``skiplab.cost``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Head, init_kaiming, make_activation
from ..skips.base import BlockWidths, Connection, Option
from .base import AfterMerge
from .conv import ConvFamily, GlobalAvgPool

SHORTCUTS = ("A", "B")
COMPRESSION = 0.5  # DenseNet-BC's theta (Huang et al., Sec. 3, "Compression"; the BC nets of Table 2)
BOTTLENECK = 4  # DenseNet-B's 1x1 conv makes 4k feature maps (Huang et al., Sec. 3, "Bottleneck layers")


class BasicBranch(nn.Sequential):
    """The branch of He et al.'s basic block (Fig. 2, left): conv (stride 1 or 2) -> norm ->
    act -> conv -> norm. The activation after the merge is the family's (:class:`After`)."""

    def __init__(self, layer: nn.Module, norm: nn.Module, activation: str, layer2: nn.Module, norm2: nn.Module):
        super().__init__()
        self.layer, self.norm, self.act, self.layer2, self.norm2 = layer, norm, make_activation(activation), layer2, norm2


class Bottleneck(nn.Sequential):
    """DenseNet-B's layer (Huang et al., Sec. 3): norm -> act -> 1x1 conv to ``BOTTLENECK``
    x features -> norm -> act -> conv to the features. As a sequence of norms and
    activations, then a conv, it runs on a memory-efficient dense state as it is (Pleiss et
    al., arXiv 1707.06990: the first norm and activation are what backward recomputes)."""

    def __init__(self, norm: nn.Module, activation: str, layer: nn.Module, norm2: nn.Module, layer2: nn.Module):
        super().__init__()
        self.norm, self.act, self.layer = norm, make_activation(activation), layer
        self.norm2, self.act2, self.layer2 = norm2, make_activation(activation), layer2


class ZeroPadShortcut(nn.Module):
    """He et al.'s option A (Sec. 3.3, and the CIFAR nets of Sec. 4.2): the identity with
    every other row and column, and ``extra`` zero channels appended. No parameters."""

    def __init__(self, extra: int):
        super().__init__()
        self.extra = extra

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return F.pad(s[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.extra))  # (B, C, H, W) -> (B, C + extra, H/2, W/2)

    def extra_repr(self) -> str:
        return f"extra={self.extra}"


class After(AfterMerge):
    """The activation after the merge: ``act(write(stream, f))`` (He et al., Fig. 2: the
    ReLU follows the addition)."""

    def __init__(self, inner: Connection, act: nn.Module):
        super().__init__(inner, act, "act")


class Strided(Connection):
    """A stage's first sublayer where the stream crosses by a shortcut: the branch strides,
    and the stream goes through ``shortcut`` before the merge (None: nothing is carried,
    the plain net's case)."""

    def __init__(self, inner: Connection, shortcut: nn.Module | None):
        nn.Module.__init__(self)
        self.inner, self.shortcut = inner, shortcut
        self.channel_dim = inner.channel_dim

    @property
    def branch(self) -> nn.Module:  # type: ignore[override]
        return self.inner.branch

    def carried(self, stream):
        return stream if self.shortcut is None else self.shortcut(stream)

    def read(self, stream):
        return self.inner.read(stream)

    def write(self, stream, f):
        return self.inner.write(self.carried(stream), f)

    def without_branch(self, stream):
        f = self.branch(self.read(stream))
        return self.inner.write(self.carried(stream), torch.zeros_like(f))

    def family_parts(self):
        return [*self.inner.family_parts(), *([self.shortcut] if self.shortcut is not None else [])]

    def kaiming_(self) -> None:
        self.inner.kaiming_()
        if self.shortcut is not None:
            init_kaiming(self.shortcut, "identity")


class Restart(Connection):
    """A stage's first sublayer where the stream restarts (DenseNet's transitions): the
    strategy's readout of the stream goes through ``transition`` and becomes a new stream
    (``strategy.init``), which the inner connection takes as it would any (its own forward:
    a concatenation's memory handling). ``read`` and ``write`` are the inner connection's,
    so a diagnostic that taps them (skiplab.gradients) sees the two routes after the
    transition."""

    def __init__(self, inner: Connection, transition: nn.Module, strategy, opts, activation: str):
        nn.Module.__init__(self)
        self.inner, self.transition = inner, transition
        self.strategy, self.opts, self.activation = strategy, dict(opts), activation
        self.channel_dim = inner.channel_dim

    @property
    def branch(self) -> nn.Module:  # type: ignore[override]
        return self.inner.branch

    # read and write: the inner connection's, also when set (a tap) or deleted (its removal)
    read = property(lambda self: self.inner.read, lambda self, fn: setattr(self.inner, "read", fn),
                    lambda self: delattr(self.inner, "read"))
    write = property(lambda self: self.inner.write, lambda self, fn: setattr(self.inner, "write", fn),
                     lambda self: delattr(self.inner, "write"))

    def restart(self, stream):
        return self.strategy.init(self.transition(self.strategy.readout(stream, self.opts)), self.opts)

    def forward(self, stream):
        return self.inner(self.restart(stream))

    def without_branch(self, stream):
        return self.inner.without_branch(self.restart(stream))

    def family_parts(self):
        return [*self.inner.family_parts(), self.transition]

    def kaiming_(self) -> None:
        self.inner.kaiming_()
        init_kaiming(self.transition, self.activation)


class ResNet(ConvFamily):
    name = "resnet"
    summary = ("staged CNN-2D as on CIFAR: ResNet's basic blocks (add: depth 6n+2) or DenseNet-BC's bottlenecks and "
               "transitions (dense: 6n+4); stride-2 transitions between stages")
    layout = "(B, C, H, W)"
    spatial_dims = 2
    conv, batch_norm = nn.Conv2d, nn.BatchNorm2d
    default_input_shape = (3, 32, 32)  # CIFAR-10
    input_form = "(channels, height, width)"
    channels_last = True  # as cnn2d: NHWC convolutions on CUDA
    default_width = 16  # He et al.'s CIFAR nets: 16, 32, 64 channels
    default_kernel_size = 3  # both papers' 3x3 convolutions
    # Every conv feeds a batch norm, which removes a per-channel constant (Ioffe & Szegedy, arXiv
    # 1502.03167): the papers' counts have no conv bias (ResNet-56's 0.85M; 0.86M with them).
    default_bias = False
    options = (
        Option("stages", int, 3, "stages of blocks; each after the first halves height and width (the papers' "
               "CIFAR nets: 3)"),
        Option("shortcut", str, "A", "where a stage changes the shape, the stream of add, rezero and layerscale "
               "goes through A: subsample and zero-pad, parameter-free, or B: a 1x1 stride-2 projection (He et al., "
               "Sec. 3.3); the other strategies have none and keep A", choices=SHORTCUTS),
    )

    # -- depth, stages and widths (pure arithmetic) -------------------------------------------
    @staticmethod
    def _restarts(spec) -> bool:
        return spec.strategy.reshape == "transition"

    def _layers(self, spec, n: int) -> int:
        """Weighted layers with n blocks per stage, counted as the papers count them: two
        convs per block, the stem, the head's Linear, and DenseNet's transition convs (a
        projection shortcut is not counted, as ResNet-34 B is still 34)."""
        stages = spec.stages
        return 2 * stages * n + 2 + (stages - 1 if self._restarts(spec) else 0)

    def _per_stage(self, spec) -> int:
        """Blocks per stage that ``spec.depth`` names; ValueError naming the depths allowed."""
        n, rest = divmod(spec.depth - self._layers(spec, 0), 2 * spec.stages)
        if rest or n < 1:
            examples = ", ".join(str(self._layers(spec, n)) for n in (1, 2, 3)) + ", ..."
            if self._restarts(spec):
                form = (f"DenseNet-BC's count (Huang et al., arXiv 1608.06993): 2 x {spec.stages} x n + "
                        f"{self._layers(spec, 0)} for {spec.stages} dense blocks of n bottleneck layers")
                known = " (100: DenseNet-BC-100)" if spec.stages == 3 else ""
            else:
                form = (f"He et al.'s count (arXiv 1512.03385): 2 x {spec.stages} x n + 2 for {spec.stages} stages "
                        f"of n two-conv blocks")
                known = " (20, 56, 110: ResNet-20, -56, -110)" if spec.stages == 3 else ""
            raise ValueError(f"depth: resnet with skip {spec.skip!r} counts weighted layers as {form}, n >= 1: "
                             f"{examples}{known}; got {spec.depth}")
        return n

    def default_depth(self, spec) -> int:
        # the papers' smallest CIFAR nets: ResNet-20 (n = 3), DenseNet-BC-100 (n = 16)
        return self._layers(spec, 16 if self._restarts(spec) else 3)

    def blocks(self, spec) -> int:
        return self._per_stage(spec) * spec.stages

    def _stage_widths(self, spec) -> list[tuple[int, list[BlockWidths]]]:
        """Per stage: the width its stream starts at, and its sublayers' widths."""
        strategy, opts, n = spec.strategy, spec.opts, self._per_stage(spec)
        out: list[tuple[int, list[BlockWidths]]] = []
        for s in range(spec.stages):
            if not s:
                base = spec.width
            elif self._restarts(spec):  # the transition compresses what the last stage read out
                base = int(COMPRESSION * strategy.readout_width(out[-1][0], opts, n))
            else:  # He et al.: the number of filters doubles as the feature map halves
                base = spec.width << s
            widths = [strategy.widths(base, opts, j) for j in range(1, n + 1)]
            if s and not self._restarts(spec):  # the strided branch reads the previous stage's stream
                widths[0] = widths[0]._replace(in_width=out[-1][1][-1].out_width)
            out.append((base, widths))
        return out

    def block_widths(self, spec) -> list[BlockWidths]:
        return [w for _, widths in self._stage_widths(spec) for w in widths]

    def readout_width(self, spec, count: int) -> int:
        return self.block_widths(spec)[count - 1].out_width if count else spec.width

    def _where(self, spec, site) -> tuple[int, int]:
        """(stage, block in the stage) of a sublayer, 0-based."""
        return divmod(site.index - 1, self._per_stage(spec))

    # -- rules ------------------------------------------------------------------------------------
    def resolve_shape(self, spec):
        shape, settled = super().resolve_shape(spec)
        if spec.strategy.reshape != "shortcut" and spec.shortcut != SHORTCUTS[0]:
            # a strategy without a shortcut builds the same model with either: one identity
            settled = {**settled, "shortcut": SHORTCUTS[0]}
        return shape, settled

    def check_spec(self, spec) -> None:
        strategy = spec.strategy
        if not strategy.reshape:
            raise ValueError(f"skip: {spec.skip!r} cannot cross the stride-2 transitions between resnet's stages: "
                             f"{strategy.reshape_reason}")
        self._per_stage(spec)
        smallest = 2 ** (spec.stages - 1)
        if min(spec.input_shape[1:]) < smallest:
            raise ValueError(f"input_shape: resnet halves height and width {spec.stages - 1} times, so both must be "
                             f"at least {smallest}, got {spec.input_shape!r}")
        stages = self._stage_widths(spec)
        for s in range(1, len(stages)):
            base = stages[s][0]
            carried = stages[s - 1][1][-1].out_width
            if base < 1 or base % strategy.width_step:
                why = strategy.width_reason or "a stage needs at least one channel"
                raise ValueError(f"width: resnet's transition to stage {s + 1} compresses {carried} channels to "
                                 f"{base} (DenseNet-BC's compression {COMPRESSION}), which skip {spec.skip!r} cannot "
                                 f"take ({why}); raise the width")

    # -- parts ------------------------------------------------------------------------------------
    def _conv(self, spec, in_width: int, out_width: int, kernel: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(in_width, out_width, kernel, stride=stride, padding=kernel // 2, bias=spec.bias)

    def stem(self, spec, in_channels):
        if self._restarts(spec):  # DenseNet: a convolution alone; each layer normalises its input
            return self.layer(spec, in_channels, spec.width, spec.bias)
        return self.transform(spec, in_channels, spec.width)  # He et al.: conv -> BN -> ReLU

    def branch(self, spec, site):
        w, k = site.widths, spec.kernel_size
        if self._restarts(spec):
            hidden = BOTTLENECK * w.features
            return Bottleneck(self.norm(spec, w.in_width), spec.activation, self._conv(spec, w.in_width, hidden, 1),
                              self.norm(spec, hidden), self._conv(spec, hidden, w.features, k))
        stage, j = self._where(spec, site)
        stride = 2 if stage and not j else 1
        return BasicBranch(self._conv(spec, w.in_width, w.features, k, stride), self.norm(spec, w.features),
                           spec.activation, self._conv(spec, w.features, w.features, k), self.norm(spec, w.features))

    def place(self, connection, spec, site):
        stage, j = self._where(spec, site)
        first = stage > 0 and j == 0
        w = site.widths
        if self._restarts(spec):
            if not first:
                return connection
            carried = spec.block_widths()[site.index - 2].out_width
            transition = nn.Sequential(self.norm(spec, carried), make_activation(spec.activation),
                                       self._conv(spec, carried, w.in_width, 1), nn.AvgPool2d(2))
            return Restart(connection, transition, spec.strategy, spec.opts, spec.activation)
        if first:
            shortcut = None
            if spec.strategy.reshape == "shortcut":
                if spec.shortcut == "A":
                    shortcut = ZeroPadShortcut(w.out_width - w.in_width)
                else:
                    shortcut = nn.Sequential(self._conv(spec, w.in_width, w.out_width, 1, stride=2),
                                             self.norm(spec, w.out_width))
            connection = Strided(connection, shortcut)
        return After(connection, make_activation(spec.activation))

    def head(self, spec, width):
        if self._restarts(spec):  # DenseNet: the last block's features are normalised and activated first
            pool = nn.Sequential(self.norm(spec, width), make_activation(spec.activation), GlobalAvgPool(2))
            return Head(width, spec.classes, spec.bias, pool)
        return Head(width, spec.classes, spec.bias, self.pool())


RESNET_FAMILY = ResNet()
