"""DenseFormer's depth-weighted average (DWA): dense connectivity at constant width.

Pagliardini et al., "DenseFormer", arXiv 2402.02622, Sec. 3: blocks stay ordinary residual
blocks, ``X_i = B_i(Y_{i-1})``, and after each block the next input is a learned weighted
average of every earlier block output, ``Y_i = sum_{j=0..i} alpha_{i,j} X_j`` (``Y_0 = X_0``,
the embedding). With ``alpha_{i,i} = 1`` and the rest 0 at init the model *is* the residual
net. It adds ``sum_{i=1..d} (i + 1) = d (d + 3) / 2`` scalars; the contrast with ``dense``
(concatenation) is the seed question asked again by the 2024 literature: both let block i
see every earlier output, one by a weighted sum at constant width, one by a growing concat.

The stream is ``(X_0..X_i, current)``: the block outputs so far and the residual stream
inside the current block. Dilation and period (the paper's sparsity options) are 1.
"""

from __future__ import annotations

import torch
from torch import nn

from ..batching import over_leading_dims
from ..validate import integer
from .base import Connection, Strategy


def _weights(alpha: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    """alpha_j, one per term; alpha (k,), or (S, k) with the seeds first (the batched
    engine, through ``skiplab.batching``), each seed's weights shaped to its slice of x."""
    weights = alpha.unbind(-1)
    return [w.view(*w.shape, *[1] * (x.dim() - w.dim())) for w in weights]


class _WeightedSum(torch.autograd.Function):
    """``sum_j alpha_j X_j`` with a hand-written backward (d/dX_j = alpha_j g,
    d/dalpha_j = <g, X_j>): the arithmetic autograd would do, without its per-operation
    bookkeeping, which is most of the time for the small tensors here (DWA's i + 1 terms
    per block make it quadratic in depth). It keeps what autograd would keep: every X_j.
    Written with ``setup_context`` so that torch.func's vmap can run it (the batched
    engine): https://pytorch.org/docs/stable/notes/extending.func.html"""

    generate_vmap_rule = True  # forward and backward are plain tensor code: vmap runs them as they are

    @staticmethod
    def forward(alpha: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        weights = _weights(alpha, xs[0])
        y = weights[0] * xs[0]
        for w, x in zip(weights[1:], xs[1:]):
            y = torch.addcmul(y, w, x)  # a multiply-add per term
        return y

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)  # alpha, X_0..X_i

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        alpha, *xs = ctx.saved_tensors
        weights = _weights(alpha, xs[0])
        if not ctx.needs_input_grad[0]:
            d_alpha = None
        elif alpha.dim() == 1:
            d_alpha = torch.stack([torch.vdot(grad.flatten(), x.flatten()) for x in xs])
        else:  # each seed's <g, X_j>
            d_alpha = torch.stack([(grad * x).flatten(alpha.dim() - 1).sum(-1) for x in xs], -1)
        return (d_alpha, *(w * grad if need else None for w, need in zip(weights, ctx.needs_input_grad[1:])))


class DWA(Connection):
    """One residual sublayer; when it ends a block, also the block's depth-weighted average.

    ``block``: the 1-based index i of the block this sublayer belongs to; ``ends_block``:
    whether the average follows it (the last sublayer of a block). Stream:
    ``(outputs, current)``, ``outputs`` a tuple of the block outputs ``X_0..X_{i-1}``.
    """

    def __init__(self, branch: nn.Module | None = None, block: int = 1, ends_block: bool = True):
        super().__init__(branch)
        self.block, self.ends_block = integer("block", block, 1), ends_block
        if ends_block:
            # alpha_{i,0..i}: 1 on the block's own output, 0 on the earlier ones (Sec. 3.1)
            init = torch.zeros(block + 1)
            init[-1] = 1.0
            self.alpha = nn.Parameter(init)

    def read(self, stream):
        return stream[1]

    def write(self, stream, f):
        outputs, current = stream
        x = current + f  # the residual sublayer: X = Y + F(Y)
        if not self.ends_block:
            return outputs, x
        outputs = (*outputs, x)
        if len(outputs) != self.alpha.shape[-1]:
            # zip would drop the block's own output, or weight nothing but zeros, in silence
            raise ValueError(f"DWA(block={self.block}) averages X_0..X_{self.block}, but its stream holds "
                             f"{len(outputs)} outputs with this block's: the i-th block's DWA needs block=i")
        # Y_i = sum_j alpha_{i,j} X_j (Eq. 1); under the batched engine, one node for all seeds
        return outputs, over_leading_dims(_WeightedSum.apply, self.alpha, *outputs)

    @staticmethod
    def expand(x0: torch.Tensor):
        """The stream before the first block: ``((X_0,), X_0)``."""
        return (x0,), x0

    @staticmethod
    def reduce(stream) -> torch.Tensor:
        """What the head sees: the last average ``Y_d``."""
        return stream[1]


class DWAStrategy(Strategy):
    name = "dwa"
    color = "#882255"  # Tol's wine
    summary = "DenseFormer: residual blocks, each followed by a learned weighted average of all earlier block outputs"
    rule = "X_i = Y_{i-1} + f_i(Y_{i-1}), Y_i = sum_{j<=i} alpha_ij X_j, alpha_ii = 1 and the rest 0 at init"
    source = "Pagliardini et al., DenseFormer, arXiv 2402.02622"
    single_stream = False  # the earlier block outputs and the current one
    reshape_reason = ("its weighted averages sum every earlier block output, and outputs on either side of a "
                      "stride-2 transition have different shapes")
    starts_as_residual = True  # alpha_ii = 1, the rest 0

    def connection(self, branch, site, opts, make_gate):
        return DWA(branch, block=site.block, ends_block=site.last_in_block)

    def init(self, x0, opts):
        return DWA.expand(x0)

    def readout(self, stream, opts):
        return DWA.reduce(stream)


DWA_STRATEGY = DWAStrategy()
