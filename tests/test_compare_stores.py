"""``skiplab runs compare``: two stores of the same configurations, cell by cell.

The stores are synthetic (``skiplab.report.synthetic``) with accuracies a test sets, so
each answer is known: an identical store differs nowhere; a store with one cell moved by
far more than its spread differs there and only there; noise alone, over many cells, is
kept from claiming a difference by Holm's correction; agreement is claimed only with a
margin."""

from __future__ import annotations

import json
import random

import pytest

from skiplab.cli import main
from skiplab.compare_stores import compare_stores
from skiplab.report.synthetic import synthetic_store
from skiplab.run.config import TrainConfig
from skiplab.study import StudyPlan

PLAN = StudyPlan(skips=("plain", "add", "dense"), depths=(2, 8), seeds=3, train=TrainConfig(epochs=1, evals=1))
BASE = {("plain", 2): 0.50, ("plain", 8): 0.30, ("add", 2): 0.70, ("add", 8): 0.60, ("dense", 2): 0.70,
        ("dense", 8): 0.70}


def _store(path, shift=None, noise=0.01, seed=0):
    """Accuracy = BASE + seed-indexed offsets (spread 1 point) + ``shift`` of one cell."""
    offsets = random.Random(seed)
    table = {}

    def accuracy(spec):
        key = (spec.group, spec.model.skip, spec.model.depth, spec.seed)
        if key not in table:
            table[key] = BASE[key[1:3]] + offsets.gauss(0, noise) + (shift or {}).get(key[1:3], 0.0)
        return table[key]
    with synthetic_store(path, PLAN, accuracy=accuracy):
        pass
    return path


def test_the_same_store_differs_nowhere_and_is_shown_equal_only_with_a_margin(tmp_path):
    a = _store(tmp_path / "a")
    c = compare_stores(a, a)
    assert c["cells"] and not any(x["differ"] for x in c["cells"])
    assert all(x["diff"] == 0 and x["p"] == 1.0 for x in c["cells"])
    assert "not shown equal" in c["summary"] and "equivalent" not in c["cells"][0]
    eq = compare_stores(a, a, margin=5.0)  # 5 points against a spread of 1: two one-sided tests pass
    assert all(x["equivalent"] for x in eq["cells"]), [x["p_equivalent_holm"] for x in eq["cells"]]
    assert f"{len(eq['cells'])} of {len(eq['cells'])} shown equal within 5 points" in eq["summary"]


def test_one_moved_cell_differs_and_no_other(tmp_path):
    a = _store(tmp_path / "a", seed=1)
    b = _store(tmp_path / "b", shift={("dense", 8): 0.10}, seed=2)  # 10 points, spread 1
    c = compare_stores(a, b)
    moved = [(x["skip"], x["depth"]) for x in c["cells"] if x["differ"]]
    assert set(moved) == {("dense", 8)}  # in both of the study's groups, and nowhere else
    assert all(x["diff"] == pytest.approx(10.0, abs=3.0) for x in c["cells"] if x["differ"])
    assert "dense depth 8" in c["summary"]


def test_noise_alone_is_not_called_a_difference(tmp_path):
    """Of 20 pairs of stores drawn from one distribution (12 cells each), raw p < 0.05
    somewhere is likely (1 - 0.95^12 = 46% a pair); Holm keeps any "differ" at or under 5%
    a pair, so at most 3 of 20 (the chance of 4 or more is under 2%)."""
    flagged = raw = 0
    for k in range(20):
        c = compare_stores(_store(tmp_path / f"a{k}", seed=2 * k), _store(tmp_path / f"b{k}", seed=2 * k + 1))
        flagged += any(x["differ"] for x in c["cells"])
        raw += any(x["p"] < 0.05 for x in c["cells"])
    assert flagged <= 3 and raw > flagged, (flagged, raw)


def test_the_command_prints_a_table_and_json_and_refuses_bad_input(tmp_path, capsys):
    a, b = _store(tmp_path / "a"), _store(tmp_path / "b", seed=5)
    assert main(["runs", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "p (Holm)" in out and "configurations differ" in out and "not shown equal" in out
    assert main(["runs", "compare", str(a), str(b), "--margin", "3", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["margin"] == 3.0 and {"p", "p_holm", "p_equivalent", "equivalent", "differ"} <= set(d["cells"][0])
    for argv in (["runs", "compare", str(a), str(tmp_path / "none")],
                 ["runs", "compare", str(a), str(b), "--margin", "-1"],
                 ["runs", "compare", str(a), str(b), "--margin", "nan"],
                 ["runs", "compare", str(a)]):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own refusal
            code = e.code
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "none").exists()  # nothing created


def test_stores_with_nothing_in_common_are_refused_in_one_line(tmp_path):
    a = _store(tmp_path / "a")
    other = StudyPlan(skips=("add",), depths=(3,), seeds=2, train=TrainConfig(epochs=1, evals=1))
    with synthetic_store(tmp_path / "b", other, accuracy=lambda s: 0.5):
        pass
    with pytest.raises(ValueError, match="no configuration in common"):
        compare_stores(a, tmp_path / "b")
