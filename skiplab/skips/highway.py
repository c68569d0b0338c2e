"""Highway: a learned gate mixes the new features with the carried state."""

from __future__ import annotations

import torch
from torch import nn

from ..tape import Sym, Tape
from .base import BlockWidths, Strategy, same_width

# Srivastava et al. (arXiv 1505.00387, Sec. 2.2) start the transform gate closed with a
# negative bias (they used -1 to -3, more negative for deeper nets) so that signals are
# carried through at init; -2 sits in the middle of that range.
GATE_BIAS = -2.0


class Highway(nn.Module):
    """``s_l = T * f_l + (1 - T) * s_{l-1}``, ``T = sigmoid(gate(s_{l-1}))``
    (Srivastava et al., Highway Networks, arXiv 1505.00387, Eq. 3).

    ``gate`` maps the state to the branch's width (a Linear, or a conv of the branch's
    kernel size, as in the paper's convolutional highway layers); it must have a bias,
    which is set to ``gate_bias`` here. Branch and state widths must be equal.
    """

    def __init__(self, branch: nn.Module, gate: nn.Module, gate_bias: float = GATE_BIAS):
        super().__init__()
        if getattr(gate, "bias", None) is None:
            raise ValueError("Highway: the gate needs a bias (its negative init keeps the gate closed)")
        self.branch = branch
        self.gate = gate
        with torch.no_grad():
            gate.bias.fill_(gate_bias)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(s))
        return s + t * (self.branch(s) - s)  # = T f + (1 - T) s in 3 element-wise ops

    @staticmethod
    def trace(tape: Tape, s: Sym, f: Sym, w: BlockWidths, layer) -> Sym:
        layer(tape, s, f.channels)  # the gate layer (keeps s, as the branch does)
        t = tape.new(f.channels, f.positions)
        d = tape.new(f.channels, f.positions)  # f - s: a subtraction keeps nothing
        tape.save(t, d)  # sigmoid keeps its output t; t * d keeps t and d
        tape.merge += 3 * f.elements  # -, *, +
        return tape.new(f.channels, f.positions)


def _wrap(branch, w, make_layer, depth):
    return Highway(branch, make_layer(w.in_width, w.features))


HIGHWAY = Strategy(
    name="highway",
    summary="Highway: s_l = T f(s_{l-1}) + (1 - T) s_{l-1}, T a sigmoid gate with negative bias",
    rule="s_l = T (.) f_l + (1 - T) (.) s_{l-1} = s_{l-1} + T (.) (f_l - s_{l-1}), T = sigmoid(gate(s_{l-1})), gate bias -2 at init",
    source="Srivastava et al., Highway Networks, arXiv 1505.00387",
    widths=same_width,
    wrap=_wrap, trace=Highway.trace)
