"""Skips that add the branch to a stream of constant width: plain, add (ResNet), rezero,
layerscale. Each merge module wraps a ``branch`` and is usable on its own in any network::

    block = Residual(nn.Sequential(nn.Linear(64, 64), nn.ReLU()))   # x + F(x)
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Connection, Strategy


def _channel_view(g: torch.Tensor, f: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast against ``f`` along ``channel_dim``."""
    if f.shape[channel_dim] != g.shape[0]:
        raise ValueError(f"LayerScale: {g.shape[0]} scales (channels=), but the branch output {tuple(f.shape)} has "
                         f"{f.shape[channel_dim]} channels at channel_dim={channel_dim}")
    if channel_dim in (-1, f.dim() - 1):
        return g
    shape = [1] * f.dim()
    shape[channel_dim] = -1
    return g.view(shape)  # (C,) -> (1, C, 1, ...) for channel_dim 1, and so on


class Plain(Connection):
    """``s_l = f_l``: no skip; the baseline every other strategy is compared with."""

    def write(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return f

    def without_branch(self, s):
        # A removed plain block passes its input on (the net becomes one block shallower;
        # Veit et al., arXiv 1605.06431, Sec. 4, delete whole layers of VGG this way).
        return s


class Residual(Connection):
    """``s_l = P(s_{l-1}) + f_l`` (He et al., ResNet, arXiv 1512.03385, Eq. 1-2).

    ``projection`` (P) is needed only when the branch changes the width; it is then a
    counted layer, never a silent reshape. Without it, a width mismatch raises.
    """

    def __init__(self, branch: nn.Module | None = None, projection: nn.Module | None = None):
        super().__init__(branch)
        self.projection = projection

    def write(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        skip = s if self.projection is None else self.projection(s)
        if skip.shape != f.shape:
            raise ValueError(
                f"Residual: branch output {tuple(f.shape)} does not match the skip "
                f"{tuple(skip.shape)}; pass projection= to map the input to the branch's width")
        return skip + f


class ReZero(Connection):
    """``s_l = s_{l-1} + a_l * f_l`` with a scalar ``a_l = 0`` at init, so every block
    starts as the identity (Bachlechner et al., ReZero, arXiv 2003.04887). Note the
    consequence: at init the branch's own weights receive exactly zero gradient; only
    ``alpha`` learns on the first step."""

    def __init__(self, branch: nn.Module | None = None, init: float = 0.0):
        super().__init__(branch)
        self.alpha = nn.Parameter(torch.tensor(float(init)))

    def write(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return s + self.alpha * f


def layerscale_init(depth: int) -> float:
    """CaiT's initial scale: 0.1 up to depth 18, 1e-5 up to 24, 1e-6 beyond
    (Touvron et al., arXiv 2103.17239, Sec. 3)."""
    return 0.1 if depth <= 18 else 1e-5 if depth <= 24 else 1e-6


class LayerScale(Connection):
    """``s_l = s_{l-1} + g_l * f_l`` with one learnable scale per channel, small at init
    (Touvron et al., CaiT, arXiv 2103.17239). ``channels`` is the width of the channel dim."""

    def __init__(self, branch: nn.Module | None = None, channels: int = 1, init: float = 0.1, channel_dim: int = 1):
        super().__init__(branch)
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))
        self.channel_dim = channel_dim

    def write(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return s + _channel_view(self.gamma, f, self.channel_dim) * f



class PlainStrategy(Strategy):
    name = "plain"
    color = "#7f7f7f"
    summary = "no skip: s_l = f(s_{l-1}); the baseline"
    rule = "s_l = f_l(s_{l-1})"
    source = "baseline (no skip connection)"
    reshape = "branch"  # He et al.'s plain nets: the first conv of a stage strides, nothing is carried

    def connection(self, branch, site, opts, make_gate):
        return Plain(branch)


class AddStrategy(Strategy):
    name = "add"
    color = "#0072B2"
    summary = "ResNet: s_l = s_{l-1} + f(s_{l-1})"
    rule = "s_l = s_{l-1} + f_l(s_{l-1})"
    source = "He et al., ResNet, arXiv 1512.03385"
    reshape = "shortcut"  # the stream crosses a stage by the family's shortcut (He et al., Sec. 3.3)
    starts_as_residual = True

    def connection(self, branch, site, opts, make_gate):
        return Residual(branch)


class ReZeroStrategy(Strategy):
    name = "rezero"
    color = "#56B4E9"
    summary = "ReZero: s_l = s_{l-1} + a_l f(s_{l-1}), scalar a_l = 0 at init"
    rule = "s_l = s_{l-1} + a_l * f_l(s_{l-1}), a_l = 0 at init"
    source = "Bachlechner et al., ReZero, arXiv 2003.04887"
    reshape = "shortcut"  # the stream crosses a stage by the family's shortcut (He et al., Sec. 3.3)

    def connection(self, branch, site, opts, make_gate):
        return ReZero(branch)


class LayerScaleStrategy(Strategy):
    name = "layerscale"
    color = "#009E73"
    summary = "LayerScale: s_l = s_{l-1} + g_l * f(s_{l-1}), per-channel g_l small at init"
    rule = "s_l = s_{l-1} + g_l (.) f_l(s_{l-1}), g_l = 0.1 (depth<=18), 1e-5 (<=24), 1e-6"
    source = "Touvron et al., CaiT, arXiv 2103.17239"
    reshape = "shortcut"  # the stream crosses a stage by the family's shortcut (He et al., Sec. 3.3)

    def connection(self, branch, site, opts, make_gate):
        return LayerScale(branch, site.widths.features, layerscale_init(site.depth), site.channel_dim)


PLAIN, ADD, REZERO, LAYERSCALE = PlainStrategy(), AddStrategy(), ReZeroStrategy(), LayerScaleStrategy()
