"""The complexity-normalised error EDF of Radosavovic et al., "On Network Design Spaces for
Visual Recognition" (ICCV 2019, arXiv 1905.13214, Sec. 3): compare *distributions* of
models rather than single points, without letting the family that happens to hold the
bigger models win for that reason alone.

For a strategy's runs with errors ``e_i`` and complexities ``c_i``, the error EDF is
``F(e) = sum_i w_i [e_i < e]``, the weighted share of runs with error below ``e``. The
weights make the complexity distribution uniform: the complexity range is cut into bins,
and each of the ``m_j`` runs in bin ``j`` of the ``k`` bins that hold any of the strategy's
runs gets ``w_i = 1 / (k m_j)``, so every bin counts ``1/k`` however many runs it holds, and
the weights sum to 1.

Complexity here is trainable parameters (stored with every run). Bins: half a decade wide
on a log10 scale, with fixed edges at ``10^(j/2)`` (..., 10,000, 31,623, 100,000, 316,228,
...), the same for every strategy and every store, so two reports bin alike. A study's
matched-budget runs share one bin (their sizes differ by a few percent); its equal-width
runs spread over the bins their sizes reach.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

BINS_PER_DECADE = 2  # bin width: half a decade of parameters


def complexity_bin(complexity: float) -> int:
    """The bin of a complexity: ``j`` with ``10^(j/2) <= c < 10^((j+1)/2)``."""
    if not complexity > 0:
        raise ValueError(f"edf: complexity must be positive, got {complexity!r}")
    return math.floor(math.log10(complexity) * BINS_PER_DECADE + 1e-12)  # 1e-12: 10^5 is in bin 10, not 9


def bin_weights(complexities: Sequence[float]) -> list[float]:
    """One weight per run, ``1 / (k m_j)``: every occupied bin gets the same total weight."""
    bins = [complexity_bin(c) for c in complexities]
    counts = Counter(bins)
    return [1.0 / (len(counts) * counts[b]) for b in bins]


def edf(errors: Sequence[float], weights: Sequence[float]) -> tuple[list[float], list[float]]:
    """The weighted EDF as steps: the distinct errors, sorted, and at each the weighted share
    of runs with an error at or below it (``F`` just after its jump there)."""
    if len(errors) != len(weights):
        raise ValueError("edf: one weight per error")
    xs, ys, total = [], [], 0.0
    for e, w in sorted(zip(errors, weights)):
        total += w
        if xs and xs[-1] == e:
            ys[-1] = total
        else:
            xs.append(e)
            ys.append(total)
    return xs, ys


def edf_at(errors: Sequence[float], weights: Sequence[float], e: float) -> float:
    """``F(e) = sum_i w_i [e_i < e]``, the paper's definition, at one point."""
    return sum(w for x, w in zip(errors, weights) if x < e)
