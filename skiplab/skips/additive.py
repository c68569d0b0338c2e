"""Skips that keep the state's width: plain, add (ResNet), rezero, layerscale.

Each merge module wraps a ``branch`` and is usable on its own in any network::

    block = Residual(nn.Sequential(nn.Linear(64, 64), nn.ReLU()))   # x + F(x)
"""

from __future__ import annotations

import torch
from torch import nn

from ..tape import Sym, Tape
from .base import BlockWidths, Strategy, same_width


class Plain(nn.Module):
    """``s_l = f_l``: no skip; the baseline every other strategy is compared with."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.branch(s)

    @staticmethod
    def trace(tape: Tape, s: Sym, f: Sym, w: BlockWidths, layer) -> Sym:
        return f  # nothing to merge, nothing kept


class Residual(nn.Module):
    """``s_l = P(s_{l-1}) + f_l`` (He et al., ResNet, arXiv 1512.03385, Eq. 1-2).

    ``projection`` (P) is needed only when the branch changes the width; it is then a
    counted layer, never a silent reshape. Without it, a width mismatch raises.
    """

    def __init__(self, branch: nn.Module, projection: nn.Module | None = None):
        super().__init__()
        self.branch = branch
        self.projection = projection

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        f = self.branch(s)
        skip = s if self.projection is None else self.projection(s)
        if skip.shape != f.shape:
            raise ValueError(
                f"Residual: branch output {tuple(f.shape)} does not match the skip "
                f"{tuple(skip.shape)}; pass projection= to map the input to the branch's width")
        return skip + f

    @staticmethod
    def trace(tape: Tape, s: Sym, f: Sym, w: BlockWidths, layer) -> Sym:
        tape.merge += f.elements  # one add per element; an add keeps nothing for backward
        return tape.new(f.channels, f.positions)


class ReZero(nn.Module):
    """``s_l = s_{l-1} + a_l * f_l`` with a scalar ``a_l = 0`` at init, so every block
    starts as the identity (Bachlechner et al., ReZero, arXiv 2003.04887). Note the
    consequence: at init the branch's own weights receive exactly zero gradient; only
    ``alpha`` learns on the first step."""

    def __init__(self, branch: nn.Module, init: float = 0.0):
        super().__init__()
        self.branch = branch
        self.alpha = nn.Parameter(torch.tensor(float(init)))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s + self.alpha * self.branch(s)

    @staticmethod
    def trace(tape: Tape, s: Sym, f: Sym, w: BlockWidths, layer) -> Sym:
        tape.params += 1
        tape.merge += 2 * f.elements  # a * f, then + s
        tape.save(f)  # a * f keeps f for a's gradient
        return tape.new(f.channels, f.positions)


def layerscale_init(depth: int) -> float:
    """CaiT's initial scale: 0.1 up to depth 18, 1e-5 up to 24, 1e-6 beyond
    (Touvron et al., arXiv 2103.17239, Sec. 3)."""
    return 0.1 if depth <= 18 else 1e-5 if depth <= 24 else 1e-6


class LayerScale(nn.Module):
    """``s_l = s_{l-1} + g_l * f_l`` with one learnable scale per channel, small at init
    (Touvron et al., CaiT, arXiv 2103.17239). ``channels`` is the width of dim 1."""

    def __init__(self, branch: nn.Module, channels: int, init: float = 0.1):
        super().__init__()
        self.branch = branch
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        f = self.branch(s)
        g = self.gamma.view(1, -1, *([1] * (f.dim() - 2)))  # (C,) -> (1, C, 1, ...)
        return s + g * f

    @staticmethod
    def trace(tape: Tape, s: Sym, f: Sym, w: BlockWidths, layer) -> Sym:
        tape.params += f.channels
        tape.merge += 2 * f.elements  # g * f, then + s
        tape.save(f)  # g * f keeps f for g's gradient
        return tape.new(f.channels, f.positions)


PLAIN = Strategy(
    name="plain", summary="no skip: s_l = f(s_{l-1}); the baseline",
    rule="s_l = f_l(s_{l-1})", source="baseline (no skip connection)",
    widths=same_width, wrap=lambda branch, w, make_layer, depth: Plain(branch),
    trace=Plain.trace)

ADD = Strategy(
    name="add", summary="ResNet: s_l = s_{l-1} + f(s_{l-1})",
    rule="s_l = s_{l-1} + f_l(s_{l-1})", source="He et al., ResNet, arXiv 1512.03385",
    widths=same_width, wrap=lambda branch, w, make_layer, depth: Residual(branch),
    trace=Residual.trace)

REZERO = Strategy(
    name="rezero", summary="ReZero: s_l = s_{l-1} + a_l f(s_{l-1}), scalar a_l = 0 at init",
    rule="s_l = s_{l-1} + a_l * f_l(s_{l-1}), a_l = 0 at init",
    source="Bachlechner et al., ReZero, arXiv 2003.04887",
    widths=same_width, wrap=lambda branch, w, make_layer, depth: ReZero(branch),
    trace=ReZero.trace)

LAYERSCALE = Strategy(
    name="layerscale",
    summary="LayerScale: s_l = s_{l-1} + g_l * f(s_{l-1}), per-channel g_l small at init",
    rule="s_l = s_{l-1} + g_l (.) f_l(s_{l-1}), g_l = 0.1 (depth<=18), 1e-5 (<=24), 1e-6",
    source="Touvron et al., CaiT, arXiv 2103.17239",
    widths=same_width,
    wrap=lambda branch, w, make_layer, depth: LayerScale(branch, w.features, layerscale_init(depth)),
    trace=LayerScale.trace)
