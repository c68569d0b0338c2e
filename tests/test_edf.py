"""The complexity-normalised error EDF (skiplab.report.edf; Radosavovic et al., arXiv
1905.13214) and the report's figure of it.

Method: bins, weights and EDF values on tiny sets worked out by hand in the test; the
figure's drawn steps compared with the EDF recomputed here from the stored runs (error =
1 - test accuracy, or bpc as it is; weights 1 / (k m_j) over half-decade bins)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from matplotlib.colors import same_color

from skiplab.report.content import load_report_data
from skiplab.report.edf import bin_weights, complexity_bin, edf, edf_at
from skiplab.report.figures import error_edf
from skiplab.report.synthetic import synthetic_store
from skiplab.run.config import TrainConfig
from skiplab.skips import STRATEGIES
from skiplab.study import StudyPlan

PLAN = StudyPlan(skips=("plain", "add"), depths=(2, 8), seeds=2, train=TrainConfig(epochs=1, evals=2))


def test_bins_are_half_decades_with_fixed_edges():
    assert [complexity_bin(c) for c in (1, 3.16, 3.17, 10, 99_999, 100_000, 316_227, 316_228)] == \
        [0, 0, 1, 2, 9, 10, 10, 11]
    with pytest.raises(ValueError, match="positive"):
        complexity_bin(0)


def test_every_occupied_bin_weighs_the_same():
    sizes = [100, 120, 150, 10_000, 12_000, 1_000_000]  # three runs in bin 4, two in bin 8, one in bin 12
    w = bin_weights(sizes)
    assert w == pytest.approx([1 / 9, 1 / 9, 1 / 9, 1 / 6, 1 / 6, 1 / 3])
    per_bin = Counter()
    for s, x in zip(sizes, w):
        per_bin[complexity_bin(s)] += x
    assert list(per_bin.values()) == pytest.approx([1 / 3] * 3) and sum(w) == pytest.approx(1.0)


def test_edf_values_by_hand():
    errors = [0.30, 0.10, 0.20, 0.10]
    weights = [0.1, 0.2, 0.3, 0.4]
    xs, ys = edf(errors, weights)
    assert xs == [0.10, 0.20, 0.30] and ys == pytest.approx([0.6, 0.9, 1.0])  # ties share one step
    # the paper's F(e) = sum_i w_i [e_i < e]: strictly below
    assert [edf_at(errors, weights, e) for e in (0.1, 0.15, 0.2, 0.31)] == pytest.approx([0.0, 0.6, 0.6, 1.0])


def _hand_edf(points):
    """(error, params) pairs -> the EDF steps, worked out here from the definition."""
    bins = [math.floor(math.log10(p) * 2 + 1e-12) for _, p in points]
    k, m = len(set(bins)), Counter(bins)
    weights = [1 / (k * m[b]) for b in bins]
    xs = sorted({e for e, _ in points})
    return xs, [sum(w for (e, _), w in zip(points, weights) if e <= x) for x in xs]


@pytest.mark.parametrize("lm", [False, True], ids=["accuracy", "bpc"])
def test_figure_draws_each_strategys_edf(tmp_path, lm):
    bpc = (lambda spec: 1.5 + 0.01 * spec.model.depth + 0.003 * spec.seed) if lm else None
    with synthetic_store(tmp_path, PLAN, bpc=bpc) as store:
        data = load_report_data(store)
    fig, caption = error_edf(data)
    ax = fig.axes[0]
    assert ax.get_xlabel() == ("validation bpc (bits per character)" if lm else "test error (%)")
    assert "Reading guide" in caption and "half a decade" in caption and "1905.13214" in caption
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    assert set(lines) == {"plain", "add"}
    for skip, line in lines.items():
        runs = [r for r in data.runs if r["spec"]["model"]["skip"] == skip]
        points = [((r["result"]["val_bpc"] if lm else 100 * (1 - r["result"]["test_accuracy"])), r["result"]["params"])
                  for r in runs]
        xs, ys = _hand_edf(points)
        drawn_x, drawn_y = list(line.get_xdata()), list(line.get_ydata())
        assert drawn_x[1:-1] == pytest.approx(xs) and drawn_y[1:-1] == pytest.approx(ys)
        assert drawn_y[0] == 0 and drawn_y[-1] == pytest.approx(1.0)
        assert same_color(line.get_color(), STRATEGIES[skip].color)  # each strategy's own colour
