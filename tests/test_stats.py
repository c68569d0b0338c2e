"""skiplab.stats: Welch's t-test decides "beat" vs "tied"; checked against a hand
computation of Welch's statistic and against scipy's reference implementation."""

import math
import statistics

import pytest
from scipy import stats as sps

from skiplab import stats
from skiplab.stats import best_of, compare, spread_text


def test_clear_win_is_a_win():
    a, b = [0.60, 0.61, 0.62], [0.70, 0.71, 0.72]
    c = compare(a, b)
    assert c.winner == "b" and c.p < 0.001
    assert c.sentence("add", "dense", scale=100).startswith("dense beat add by 10.0 +- 0.8 points")


def test_overlapping_samples_tie():
    a, b = [0.60, 0.65, 0.70], [0.61, 0.66, 0.69]
    c = compare(a, b)
    assert c.winner is None
    text = c.sentence("add", "dense", scale=100)
    assert text.startswith("add and dense tied (difference 0.3 +- ")
    assert "p = " in text and "beat" not in text


def test_one_seed_has_no_test_and_no_zero_spread():
    c = compare([0.7], [0.8])
    assert c.winner is None and c.p is None and c.se is None
    assert c.sentence("a", "b", scale=100) == "a and b tied (difference 10.0 points; 1 seed: no test)"
    assert spread_text(0.7, None, 1, scale=100) == "70.0 (1 seed)"
    assert "+- 0.0" not in spread_text(0.7, None, 1, scale=100)
    assert spread_text(None, None, 0) == "-"


def test_p_matches_hand_computed_welch():
    a, b = [1.0, 2.0, 4.0, 3.5], [2.0, 5.0, 6.5]
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(b) - statistics.fmean(a)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    p = 2 * sps.t.sf(abs(t), df)
    c = compare(a, b)
    assert c.p == pytest.approx(p, rel=1e-12)
    assert c.se == pytest.approx(math.sqrt(va + vb))


def test_lower_is_better_flips_the_winner():
    c = compare([2.0, 2.01, 2.02], [1.5, 1.51, 1.52])  # b has the lower loss
    assert c.sentence("add", "dwa", unit="bpc", digits=2, higher_is_better=False).startswith("dwa beat add")


def test_best_of_lists_statistical_ties():
    best, tied = best_of({"add": [0.70, 0.71, 0.72], "dense": [0.705, 0.715, 0.71], "plain": [0.1, 0.11, 0.12]})
    assert best == "dense" or best == "add"
    assert tied and "plain" not in tied


def test_constant_samples():
    assert compare([0.5, 0.5], [0.5, 0.5]).winner is None
    assert compare([0.5, 0.5], [0.6, 0.6]).winner == "b"


def test_holm_adjusts_in_the_given_order_and_is_monotone():
    # Holm 1979: sorted p (0.01, 0.02, 0.04) x (3, 2, 1) = (0.03, 0.04, 0.04), running maximum
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_equivalence_needs_a_margin_wider_than_the_noise():
    a, b = [0.70, 0.71, 0.72], [0.705, 0.715, 0.725]
    wide, narrow = stats.equivalence_p(a, b, 0.05), stats.equivalence_p(a, b, 0.006)
    # se = sqrt(2 x 0.01^2 / 3) = 0.0082, df = 4; 5 points: t = (0.05 - 0.005) / se = 5.5, p = 0.0026
    # (shown equal); 0.6 points: t = (0.006 - 0.005) / se = 0.12, p = 0.45 (not shown)
    assert wide == pytest.approx(0.00264, abs=2e-5) and narrow == pytest.approx(0.454, abs=2e-3)
    # a difference larger than the margin is never shown equal
    assert stats.equivalence_p([0.5, 0.51, 0.52], [0.6, 0.61, 0.62], 0.05) > 0.5
    assert stats.equivalence_p([0.5], [0.5, 0.6], 0.1) is None
    with pytest.raises(ValueError, match="margin"):
        stats.equivalence_p(a, b, 0)
