"""Comparisons that respect noise: the one place where skiplab decides "beat" or "tied".

Every sentence that compares two configurations (the report's verdict, best-per-depth
lines, experiment outcomes) asks :func:`compare`. A difference is a win only when Welch's
t-test (two means, unequal variances; Welch 1947) rejects equality at ``ALPHA``; otherwise
the sentence says "tied" and gives the difference, its standard error and p. With fewer
than two values on a side there is no spread and no test: the sentence says so rather
than print "+- 0.0". With n = 3 seeds a side the test's power is low, so "tied" is common
and is the honest answer (shared/papers.md, "Noise").
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import statistics
import warnings
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

from .errors import UserError

ALPHA = 0.05  # two-sided level of every test skiplab states
TEST = "Welch's t-test"


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation; std is None with fewer than two values."""
    v = _finite(values)
    if not v:
        return None, None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)


def spread_text(mean: float | None, std: float | None, n: int, scale: float = 1.0, digits: int = 1) -> str:
    """``71.3 +- 0.8`` with a spread; ``71.3 (1 seed)`` without one; ``-`` with nothing."""
    if mean is None or n == 0:
        return "-"
    if std is None or n < 2:
        return f"{scale * mean:.{digits}f} (1 seed)"
    return f"{scale * mean:.{digits}f} +- {scale * std:.{digits}f}"


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test of mean(a) == mean(b); needs >= 2 values a side.
    Identical constant samples give p = 1 (no evidence of a difference); different
    constant samples give p = 0 (a difference with no noise at all)."""
    from scipy import stats  # imported here: only comparisons need scipy

    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a), statistics.variance(b)
    if va == 0 and vb == 0:
        return 1.0 if ma == mb else 0.0
    with warnings.catch_warnings():
        # scipy warns of "precision loss" when a side's values are nearly identical (three
        # seeds that agree to the last digit): the p-value it returns is still the test's.
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


@dataclass(frozen=True)
class Comparison:
    """``b`` against ``a``: ``diff = mean(b) - mean(a)``; ``winner`` is "a", "b" or None."""

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    se: float | None  # standard error of the difference, sqrt(s_a^2/n_a + s_b^2/n_b)
    p: float | None  # None when a side has fewer than 2 values: no test; Holm-adjusted in a family
    alpha: float = ALPHA
    p_raw: float | None = None  # the test's own p, where ``p`` is adjusted for a family of tests
    family: int = 1  # how many tests ``p`` was adjusted over (1: not adjusted)

    @property
    def diff(self) -> float:
        return self.mean_b - self.mean_a

    @property
    def tested(self) -> bool:
        return self.p is not None

    @property
    def winner(self) -> str | None:
        if self.p is None or self.p >= self.alpha or self.diff == 0:
            return None
        return "b" if self.diff > 0 else "a"

    def numbers(self, scale: float = 1.0, unit: str = "points", digits: int = 1) -> str:
        """``difference 0.5 +- 1.2 points, p = 0.70`` (or ``difference 0.5 points; 1 seed: no test``)."""
        d = f"{scale * abs(self.diff):.{digits}f}"
        if not self.tested:
            few = min(self.n_a, self.n_b)
            return f"difference {d} {unit}; {few} seed{'s' if few != 1 else ''}: no test"
        adjusted = "adjusted " if self.family > 1 else ""
        return f"difference {d} +- {scale * self.se:.{digits}f} {unit}, {adjusted}{p_text(self.p)}"

    def sentence(self, name_a: str, name_b: str, scale: float = 1.0, unit: str = "points", digits: int = 1,
                 higher_is_better: bool = True) -> str:
        """``dense beat add by 3.1 +- 0.9 points, p = 0.004`` or ``add and dense tied (...)``."""
        w = self.winner
        if w is None:
            return f"{name_a} and {name_b} tied ({self.numbers(scale, unit, digits)})"
        better_is_b = (w == "b") == higher_is_better
        win, lose = (name_b, name_a) if better_is_b else (name_a, name_b)
        return f"{win} beat {lose} by {self.numbers(scale, unit, digits)[len('difference '):]}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.01 else f"p = {p:.2f}"


def compare(a: Sequence[float | None], b: Sequence[float | None], alpha: float = ALPHA) -> Comparison | None:
    """Compare the values ``b`` with ``a`` (e.g. test accuracies over seeds); None when a
    side has no value at all."""
    xa, xb = _finite(a), _finite(b)
    if not xa or not xb:
        return None
    ma, mb = statistics.fmean(xa), statistics.fmean(xb)
    if len(xa) < 2 or len(xb) < 2:
        return Comparison(ma, mb, len(xa), len(xb), None, None, alpha)
    se = math.sqrt(statistics.variance(xa) / len(xa) + statistics.variance(xb) / len(xb))
    c = Comparison(ma, mb, len(xa), len(xb), se, welch_p(xa, xb), alpha)
    family = _FAMILY.get()
    return c if family is None else family.decide(xa, xb, c)


class Family:
    """The comparisons one report (or one outcome) makes, corrected together for
    multiplicity: a report of 180 tests at 0.05 would call several "beat"s from noise
    alone. Used in two passes: ``with family.collecting():`` run every sentence-making
    function once (each :func:`compare` records its test's p), then ``with
    family.deciding():`` run them again: each comparison's ``p`` is now its Holm-adjusted
    p over the whole family (:func:`holm`), ``p_raw`` the test's own, and "beat" needs
    the adjusted p below alpha. A pair of samples compared twice is one test."""

    def __init__(self) -> None:
        self.raw: dict[tuple, float] = {}
        self.adjusted: dict[tuple, float] | None = None

    @staticmethod
    def _key(a: Sequence[float], b: Sequence[float]) -> tuple:
        return tuple(sorted((tuple(a), tuple(b))))

    def decide(self, a: Sequence[float], b: Sequence[float], c: Comparison) -> Comparison:
        key = self._key(a, b)
        if self.adjusted is None:  # collecting
            self.raw[key] = c.p
            return c
        if key not in self.adjusted:  # a comparison the first pass did not make: its own test
            return c
        return replace(c, p=self.adjusted[key], p_raw=c.p, family=len(self.adjusted))

    @property
    def size(self) -> int:
        return len(self.raw)

    @contextlib.contextmanager
    def collecting(self) -> Iterator["Family"]:
        token = _FAMILY.set(self)
        try:
            yield self
        finally:
            _FAMILY.reset(token)
        keys = list(self.raw)
        self.adjusted = dict(zip(keys, holm([self.raw[k] for k in keys])))

    @contextlib.contextmanager
    def deciding(self) -> Iterator["Family"]:
        if self.adjusted is None:
            raise RuntimeError("Family.deciding() before collecting()")
        token = _FAMILY.set(self)
        try:
            yield self
        finally:
            _FAMILY.reset(token)


_FAMILY: contextvars.ContextVar[Family | None] = contextvars.ContextVar("skiplab_comparison_family", default=None)


def test_statement(alpha: float = ALPHA, family: int = 1) -> str:
    """The sentence a report or outcome gives about how it decided (``family``: how many
    tests its p-values were adjusted over together)."""
    if family > 1:
        return (f"'beat' means {TEST} over seeds rejects equal means at the two-sided {alpha:g} level after "
                f"Holm's correction over this report's {family} comparisons (the p shown is the adjusted one; "
                "Holm keeps the chance of any false 'beat' in the whole report at most "
                f"{alpha:g}); otherwise 'tied', which does not show the two equal")
    return (f"'beat' means {TEST} over seeds rejects equal means at the two-sided {alpha:g} level; "
            "otherwise 'tied'")


def best_of(groups: dict[str, Sequence[float | None]], alpha: float = ALPHA,
            higher_is_better: bool = True) -> tuple[str | None, list[str]]:
    """The name with the best mean and the names statistically tied with it.

    Returns ``(best, tied)``: ``best`` is the leader by mean (None if nothing has values);
    ``tied`` lists the others that ``compare`` cannot separate from it (no test counts as
    tied). A leader with an empty ``tied`` list is "best"; otherwise the leaders share it.
    """
    means = {k: statistics.fmean(_finite(v)) for k, v in groups.items() if _finite(v)}
    if not means:
        return None, []
    sign = 1 if higher_is_better else -1
    best = max(means, key=lambda k: sign * means[k])
    tied = []
    for k in means:
        if k == best:
            continue
        c = compare(groups[best], groups[k], alpha)
        if c is None or c.winner is None:
            tied.append(k)
    return best, tied


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (Holm 1979).

    Rejecting where the adjusted p < alpha keeps the chance of *any* false "differ" in the
    whole family at most alpha, whatever the dependence between the tests. Chosen over
    Benjamini-Hochberg (which bounds only the expected share of false findings) because a
    reader takes each "beat" or "differ" as a claim of its own."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))  # monotone in rank
        adjusted[i] = running
    return adjusted


def equivalence_p(a: Sequence[float], b: Sequence[float], margin: float) -> float | None:
    """p-value of two one-sided Welch tests (TOST; Schuirmann 1987) that
    |mean(b) - mean(a)| < ``margin``: small p shows the means agree within the margin.
    None with fewer than two values a side. Unlike a Welch p above alpha, which only fails
    to show a difference, this can show agreement, and with 3 seeds a side it needs a
    margin several standard errors wide to do so."""
    from scipy import stats

    if margin <= 0:
        raise UserError(f"margin: must be > 0, got {margin!r}")
    xa, xb = _finite(a), _finite(b)
    if len(xa) < 2 or len(xb) < 2:
        return None
    va, vb = statistics.variance(xa) / len(xa), statistics.variance(xb) / len(xb)
    d = statistics.fmean(xb) - statistics.fmean(xa)
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0 if abs(d) < margin else 1.0
    # Welch-Satterthwaite degrees of freedom
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    lower = float(stats.t.sf((d + margin) / se, df))  # H0: d <= -margin
    upper = float(stats.t.cdf((d - margin) / se, df))  # H0: d >= +margin
    return max(lower, upper)
