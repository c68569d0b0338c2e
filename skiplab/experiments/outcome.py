"""How every experiment turns its numbers into a verdict, the same way each time.

An experiment's claim predicts the *direction* of one or more comparisons over seeds
(e.g. "plain's training error at depth 20 is higher than at depth 2"). Each comparison is
:func:`skiplab.stats.compare` (Welch's t-test at the two-sided 0.05 level; shared/papers.md,
"Noise"). The verdict:

- ``supports``: every predicted comparison comes out in the predicted direction and clears
  the test;
- ``contradicts``: at least one clears the test in the opposite direction;
- ``inconclusive at this budget``: anything else (a tie, too few seeds for a test), or the
  run did not reach the regime the claim is about (its module's docstring states the
  criterion, and the result says whether it was met).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..stats import ALPHA, TEST, Comparison, compare, p_text

SUPPORTS, CONTRADICTS, INCONCLUSIVE = "supports", "contradicts", "inconclusive at this budget"


@dataclass(frozen=True)
class Prediction:
    """The claim predicts ``mean(b) > mean(a)`` (``higher=True``) or ``<``."""

    comparison: Comparison | None
    higher: bool

    @property
    def direction(self) -> int:
        """+1: as predicted and significant; -1: significant the other way; 0: neither."""
        c = self.comparison
        if c is None or c.winner is None:
            return 0
        up = c.winner == "b"  # the winner is the larger mean when higher is better
        return 1 if up == self.higher else -1


def predict(a: Sequence[float | None], b: Sequence[float | None], higher: bool) -> Prediction:
    return Prediction(compare(a, b), higher)


def decide(predictions: Sequence[Prediction], regime_met: bool = True) -> str:
    directions = [p.direction for p in predictions]
    if any(d < 0 for d in directions):
        return CONTRADICTS
    if not regime_met or not directions or not all(d > 0 for d in directions):
        return INCONCLUSIVE
    return SUPPORTS


def regime(criterion: str, met: bool, measured: str) -> dict[str, Any]:
    """The regime a default form must reach, what was measured, and whether it was met."""
    return {"criterion": criterion, "met": bool(met), "measured": measured}


def closing(verdict: str, reg: dict[str, Any] | None, extra: str = "") -> str:
    """The outcome's last sentence: the verdict, how it was decided, the regime."""
    how = (f"{TEST} over seeds at the two-sided {ALPHA:g} level: a difference counts where the test rejects "
           "equal means")
    if reg is not None:
        state = "met" if reg["met"] else "NOT met, so the verdict cannot be better than inconclusive"
        how += f"; regime: {reg['criterion']} (measured: {reg['measured']}; {state})"
    return f" Verdict: {verdict} the claim{extra} ({how})." if verdict != INCONCLUSIVE else \
        f" Verdict: {verdict}{extra} ({how})."


def pct(values: Sequence[float | None], digits: int = 1) -> str:
    """``12.3 +- 1.1%`` over seeds, ``12.3% (1 seed)`` with one, ``-`` with none."""
    from ..stats import mean_std, spread_text

    v = [x for x in values if x is not None]
    m, s = mean_std(v)
    text = spread_text(m, s, len(v), scale=100, digits=digits)
    if text == "-":
        return text
    return text.replace(" (1 seed)", "% (1 seed)") if s is None else text + "%"


def signed(c: Comparison | None, label: str, scale: float = 1.0, unit: str = "points", digits: int = 1) -> str:
    """``plain minus add +37.2 +- 0.2 points, p < 0.001``: the difference mean(b) - mean(a)
    with its sign and standard error, or ``...; 1 seed: no test``; ``label: no runs``."""
    if c is None:
        return f"{label}: no runs"
    d = f"{scale * c.diff:+.{digits}f}"
    unit = f" {unit}" if unit else ""
    if not c.tested:
        few = min(c.n_a, c.n_b)
        return f"{label} {d}{unit}; {few} seed{'s' if few != 1 else ''}: no test"
    return f"{label} {d} +- {scale * c.se:.{digits}f}{unit}, {p_text(c.p)}"
