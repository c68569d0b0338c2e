"""Highway: a learned gate mixes the new features with the carried state."""

from __future__ import annotations

import torch
from torch import nn

from .base import Connection, Strategy

# Srivastava et al. (arXiv 1505.00387, Sec. 2.2) start the transform gate closed with a
# negative bias (they used -1 to -3, more negative for deeper nets) so that signals are
# carried through at init; -2 sits in the middle of that range.
GATE_BIAS = -2.0


class Highway(Connection):
    """``s_l = T * f_l + (1 - T) * s_{l-1}``, ``T = sigmoid(gate(s_{l-1}))``
    (Srivastava et al., Highway Networks, arXiv 1505.00387, Eq. 3).

    ``gate`` maps the state to the branch's width (a Linear, or a conv of the branch's
    kernel size, as in the paper's convolutional highway layers); it must have a bias,
    which is set to ``gate_bias`` here. Branch and state widths must be equal.
    """

    def __init__(self, branch: nn.Module | None = None, gate: nn.Module | None = None,
                 gate_bias: float = GATE_BIAS):
        super().__init__(branch)
        if not isinstance(gate, nn.Module):
            raise ValueError("Highway: needs gate=, a module from the state to the branch's width with a bias "
                             "(a Linear, or a conv of the branch's kernel size)")
        if getattr(gate, "bias", None) is None:
            raise ValueError("Highway: the gate needs a bias (its negative init keeps the gate closed)")
        self.gate = gate
        with torch.no_grad():
            gate.bias.fill_(gate_bias)

    def write(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(s))
        return s + t * (f - s)  # = T f + (1 - T) s in 3 element-wise ops

    def kaiming_(self) -> None:
        # He-normal for the gate's weight with sigmoid's gain; the closed-gate bias stays.
        nn.init.kaiming_normal_(self.gate.weight, mode="fan_in", nonlinearity="sigmoid")


class HighwayStrategy(Strategy):
    name = "highway"
    color = "#CC79A7"
    summary = "Highway: s_l = T f(s_{l-1}) + (1 - T) s_{l-1}, T a sigmoid gate with negative bias"
    rule = ("s_l = T (.) f_l + (1 - T) (.) s_{l-1} = s_{l-1} + T (.) (f_l - s_{l-1}), "
            "T = sigmoid(gate(s_{l-1})), gate bias -2 at init")
    source = "Srivastava et al., Highway Networks, arXiv 1505.00387"
    reshape_reason = ("its gate reads the carried state, which a stride-2 transition gives another shape than the "
                      "branch's output, and no strided gate is defined")

    def connection(self, branch, site, opts, make_gate):
        return Highway(branch, make_gate(site.widths.in_width, site.widths.features))


HIGHWAY = HighwayStrategy()
