"""mHC-lite: mHC with H_res an exact convex combination of permutation matrices.

Yang and Gao, "mHC-lite: You Don't Need 20 Sinkhorn-Knopp Iterations", arXiv 2601.05732.
mHC's stream and maps (arXiv 2512.24880, Eq. 3 and 5-7; see :mod:`skiplab.skips.mhc`), with
H_res built by the Birkhoff-von Neumann theorem (every doubly-stochastic matrix is a convex
combination of permutation matrices) instead of by Sinkhorn-Knopp:

    x_{l+1} = H_res x_l + H_post^T F(H_pre x_l),
    x' = RMSNorm(vec x_l),  H_pre = sigmoid(a_pre (x' phi_pre) + b_pre),  H_post = 2 sigmoid(a_post (x' phi_post) + b_post),
    w = softmax(a_res (x' phi_res) + b_res)  in R^{n!},   H_res = sum_k w_k P_k,

with phi_res in R^{nC x n!} and P_1..P_{n!} the n x n permutation matrices
(``itertools.permutations`` order, the identity first). Each P_k has one 1 in every row and
column, and the weights are non-negative and sum to 1, so every row and column of H_res
sums to exactly 1 (to float rounding) and the entries are non-negative: doubly stochastic
with no iteration and no approximation gap, where 20 Sinkhorn-Knopp iterations leave
mHC's column sums off by up to a few percent for near-diagonal matrices
(tests/test_streams.py). Products of such matrices stay doubly stochastic, so the
composite gain prod H_res is 1 forward and backward by construction. Both H_res and its
gradient are one matrix product per token batch: no custom kernel.

n! grows fast: the option allows n <= 6 (720 permutations; the paper uses n = 4, 24).

Init (skiplab's choice, as for mHC, so that the model starts as the residual net and as
mHC starts): phi = 0, a = 0.01, b_pre = logit(1/n), b_post = 0; b_res = 0 except on the
identity permutation, whose logit is set so that H_res starts where mHC's does (off the
diagonal e^-6 / (1 + (n - 1) e^-6), about 0.0025 for n = 4).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ..validate import integer
from .base import Connection, OptionError
from .hyper import STREAMS, CopiesStrategy
from .mhc import GATE_INIT, MHC, OFF_DIAGONAL

MAX_STREAMS = 6  # 720 permutations; phi_res has n! columns


def permutation_matrices(n: int) -> torch.Tensor:
    """The n! permutation matrices (n!, n, n), ``P_k[i, sigma_k(i)] = 1``, identity first."""
    perms = list(itertools.permutations(range(n)))
    P = torch.zeros(len(perms), n, n)
    for k, sigma in enumerate(perms):
        P[k, torch.arange(n), torch.tensor(sigma)] = 1.0
    return P


def identity_logit(n: int) -> float:
    """b_res on the identity permutation (0 on the others) that gives mHC's initial H_res:
    with weight w on each of the n! - 1 other permutations, H_res = (w_id - w) I + w (n-1)! J,
    so the off-diagonal entries are w (n-1)!; mHC's are t = e^b / (1 + (n-1) e^b),
    b = OFF_DIAGONAL (its rows after one Sinkhorn-Knopp iteration, exact for that symmetric
    start). Solving (n-1)! / (e^beta + n! - 1) = t for beta."""
    if n == 1:
        return 0.0  # one permutation: H_res = 1 whatever the logit
    t = math.exp(OFF_DIAGONAL) / (1 + (n - 1) * math.exp(OFF_DIAGONAL))
    return math.log(math.factorial(n - 1) / t - math.factorial(n) + 1)


class MHCLite(MHC):
    """One layer's mHC-lite connection around ``branch``: :class:`~skiplab.skips.mhc.MHC`'s
    stream, read and write, with H_res from softmax weights over the n! permutations.
    ``phi`` stacks phi_pre (n), phi_post (n) and phi_res (n!) rows; ``b_res`` has n! entries."""

    def __init__(self, branch: nn.Module | None = None, *, channels: int, streams: int = 4, channel_dim: int = 1):
        Connection.__init__(self, branch)
        n = self.streams = integer("streams", streams, 1)
        if n > MAX_STREAMS:
            raise OptionError(f"streams: mhc-lite combines all n! permutation matrices; n <= {MAX_STREAMS} "
                              f"({math.factorial(MAX_STREAMS)} of them), got {n}")
        integer("channels", channels, 1)
        self.channel_dim = channel_dim
        k = math.factorial(n)
        self.phi = nn.Parameter(torch.zeros(2 * n + k, n * channels))  # phi_pre, phi_post, phi_res stacked
        self.a = nn.Parameter(torch.full((3,), GATE_INIT))  # a_pre, a_post, a_res
        self.b_pre = nn.Parameter(torch.full((n,), math.log(1 / n) - math.log(1 - 1 / n) if n > 1 else 10.0))
        self.b_post = nn.Parameter(torch.zeros(n))
        b_res = torch.zeros(k)
        b_res[0] = identity_logit(n)  # permutation 0 is the identity
        self.b_res = nn.Parameter(b_res)
        # a constant, rebuilt with the module (not in its state_dict)
        self.register_buffer("perms", permutation_matrices(n).reshape(k, n * n), persistent=False)

    def maps_tokens_last(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """H_pre (n, tokens), H_post (n, tokens) and H_res (n, n, tokens)."""
        n = self.streams
        p = self.projections(rows)  # RMSNorm(vec x_l) [phi_pre, phi_post, phi_res], (2n + n!, tokens)
        pre = torch.sigmoid(self.a[0] * p[:n] + self.b_pre.unsqueeze(1))
        s = torch.sigmoid(self.a[1] * p[n:2 * n] + self.b_post.unsqueeze(1))
        # The n! weights and their combination in float64: in float32 the weights of 24
        # permutations summed to 1 - 7.6e-7 at init (the identity's near 1 and 23 small ones,
        # each rounded the same way when added), a row-sum gap that compounds over depth;
        # in float64 H_res's rows and columns are 1 to float32's own rounding (tests/test_streams.py)
        w = torch.softmax((self.a[2] * p[2 * n:] + self.b_res.unsqueeze(1)).double(), 0)  # weights of the n! permutations
        res = (self.perms.t().double() @ w).to(p.dtype).view(n, n, -1)  # sum_k w_k P_k, every token at once
        return pre, s + s, res


class MHCLiteStrategy(CopiesStrategy):
    name = "mhc-lite"
    color = "#88CCEE"  # Tol's cyan
    summary = "mHC-lite: mHC with H_res a convex combination of the n! permutation matrices (exactly doubly stochastic)"
    rule = ("x <- H_res x + H_post^T f(H_pre x), maps from RMSNorm(vec x); H_res = sum_k softmax(.)_k P_k over the "
            "n! permutations, H_pre = sigmoid, H_post = 2 sigmoid")
    source = "Yang and Gao, mHC-lite, arXiv 2601.05732"
    # Non-negative, and every row and column sums to 1 exactly: so does every product, and
    # the composite gain is 1 both ways whatever training does.
    gain_by_construction = "both"
    gain_reason = "each H_res is a convex combination of permutation matrices: rows and columns sum to 1"
    options = (STREAMS,)  # n <= MAX_STREAMS, checked in resolve

    def resolve(self, given, width):
        out = super().resolve(given, width)
        if out["streams"] > MAX_STREAMS:
            raise OptionError(f"streams: skip {self.name!r} combines all n! permutation matrices; n <= "
                              f"{MAX_STREAMS} ({math.factorial(MAX_STREAMS)} of them), got {out['streams']}")
        return out

    def connection(self, branch, site, opts, make_gate):
        return MHCLite(branch, streams=opts["streams"], channels=site.widths.in_width, channel_dim=site.channel_dim)


MHC_LITE = MHCLiteStrategy()
