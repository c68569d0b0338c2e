"""Experiment figures (one per named experiment, from the stored result dict alone), the
figure that ``skiplab experiment`` writes, and the report's Experiments section. The
results here are small hand-written dicts in the shape each experiment stores; only
seed-costs (about a second) is run for real."""

import io
import json

import pytest

from skiplab.cli import main
from skiplab.experiments import EXPERIMENTS
from skiplab.experiments.figures import FIGURES, experiment_figure, write_experiment_figure
from skiplab.report import write_report
from skiplab.store import Store


def _table(keys, rows):
    return [dict(zip(keys, r)) for r in rows]


MINIMAL = {
    "equivalence": {"rows": _table(
        ["depth", "width", "max_abs_diff", "add_params", "dense_params", "param_ratio", "reverse_relative_error",
         "reverse_check_of_emulation"],
        [(2, 16, 9.5e-7, 1466, 2042, 1.39, 0.21, 5e-8), (6, 32, 2.9e-6, 8426, 25706, 3.05, 0.22, 7e-8)])},
    "degradation": {"table": _table(
        ["norm", "skip", "depth", "train_error", "train_error_std", "test_error", "test_error_std"],
        [(n, s, d, 0.5 + 0.01 * d, 0.01, 0.55 + 0.01 * d, None) for n in ("none", "batch") for s in ("plain", "add")
         for d in (2, 8)])},
    "lesion": {"rows": [{"skip": s, "seed": seed, "depth": 3, "test_accuracy": 0.5,
                         "lesioned_accuracy": [0.1 + 0.1 * seed, 0.3, 0.45]}
                        for s in ("plain", "add", "dense") for seed in (0, 1)]},
    "rezero": {"target_loss": 2.0, "table": _table(
        ["skip", "depth", "steps_to_target", "reached", "seeds", "final_train_loss"],
        [("plain", 30, None, 0, 1, 2.3), ("add", 30, 80.0, 1, 2, 1.9), ("rezero", 30, 64.0, 1, 1, 1.8)])},
    "deep-supervision": {"table": _table(
        ["skip", "aux_every", "depth", "test_accuracy", "train_accuracy"],
        [("plain", 0, 24, 0.14, 0.17), ("plain", 4, 24, 0.16, 0.17), ("add", 0, 24, 0.43, 0.47)])},
    "parameter-efficiency": {"table": _table(
        ["budget", "skip", "params", "test_accuracy"],
        [(b, s, b + 100, 0.4 + 0.01 * i) for b in (20_000, 80_000) for i, s in enumerate(("add", "dense"))])},
    "long-skips": {"noisy_mse": 0.25, "summary": {
        m: {"test_mse": 0.12 + i / 100, "test_mse_std": 0.001, "params": 22385 + 1000 * i, "flops": 744960 * (i + 1)}
        for i, m in enumerate(("none", "add", "concat"))}},
    "denseformer": {"table": [{"skip": s, "depth": d, "val_bpc_mean": 2.5 - 0.01 * i, "val_bpc_std": 0.01,
                               "curve": {"steps": [10, 20], "mean": [3.0, 2.5 - 0.01 * i]}}
                              for i, (s, d) in enumerate((("add", 4), ("dwa", 4), ("add", 6)))]},
    "hyper-gain": {"table": [{"skip": s, "depth": d, "init_forward": 1.0, "gain_forward_mean": g * d,
                              "gain_forward_std": 0.1, "gain_backward_mean": g * d + 0.1, "gain_backward_std": None,
                              "curve_forward": {"steps": [5, 10], "mean": [1.0, g * d]},
                              "curve_backward": {"steps": [5, 10], "mean": [1.0, g * d + 0.1]}}
                             for s, g in (("hyper", 1.5), ("mhc", 1.0 / 2)) for d in (2, 4)]},
    "norm-placement": {"unigram_bpc": 4.7, "table": [
        {"placement": p, "depth": d, "warmup": w, "val_bpc_mean": 2.5 + 0.1 * d * (p == "post") - 0.05 * bool(w),
         "val_bpc_std": 0.02, "diverged": int(p == "post" and d == 12 and not w),
         "curve": {"steps": [10, 20], "mean": [3.0, 2.5]}}
        for w in (0, 100) for p in ("pre", "post") for d in (2, 12)]},
    "dense-memory": {"budget_bytes": 3 * 2**20, "batch": 128, "table": [
        {"config": c, "skip": s, "memory": m, "depth": d, "test_accuracy": a, "test_accuracy_std": 0.01}
        for c, s, m, d, a in (("dense, naive", "dense", "naive", 4, 0.5), ("dense, efficient", "dense", "efficient",
                                                                           9, 0.55), ("add", "add", None, 3, 0.5))],
        "curves": {"dense, naive": [2**20 * d * d / 5 for d in range(1, 20)],
                   "dense, efficient": [2**20 * d / 3 for d in range(1, 20)],
                   "add": [2**20 * d for d in range(1, 20)]}},
    "seed-costs": {"ten_layer_blocks": {"plain": 90_000, "add": 90_000, "dense": 450_000},
                   "per_block_flops": {"concat-double": [1e6, 4e6, 1.6e7], "concat-half": [5e5] * 3,
                                       "add": [1e6] * 3}},
}


def test_every_experiment_has_a_figure():
    assert set(FIGURES) == set(EXPERIMENTS) == set(MINIMAL)


@pytest.mark.parametrize("name", list(MINIMAL))
def test_figure_renders_from_a_minimal_result(name):
    fig = experiment_figure(name, {"experiment": name, "quick": True, **MINIMAL[name]})
    fig.savefig(io.BytesIO(), format="png", dpi=30)  # the whole drawing runs, small and fast
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert axes and all(ax.get_xlabel() or ax.get_xticklabels() for ax in axes)
    assert any(ax.get_ylabel() for ax in axes)
    assert "(quick form)" in fig.get_suptitle()


def test_the_verdict_is_in_the_title():
    fig = experiment_figure("lesion", {"experiment": "lesion", "verdict": "inconclusive at this budget",
                                       **MINIMAL["lesion"]})
    assert fig.get_suptitle().endswith("\nverdict: inconclusive at this budget")
    assert "verdict" not in experiment_figure("lesion", MINIMAL["lesion"]).get_suptitle()


def test_missing_numbers_are_gaps_not_errors():
    """A run that did not finish leaves None in the table: drawn as a gap."""
    gaps = {"degradation": {"table": [dict(t, train_error=None, train_error_std=None)
                                      for t in MINIMAL["degradation"]["table"]]},
            "rezero": {"target_loss": 1.5, "table": [dict(t, steps_to_target=None, reached=0, final_train_loss=None)
                                                     for t in MINIMAL["rezero"]["table"]]},
            "parameter-efficiency": {"table": [dict(t, params=None, test_accuracy=None)
                                               for t in MINIMAL["parameter-efficiency"]["table"]]},
            "deep-supervision": {"table": [dict(t, test_accuracy=None) for t in MINIMAL["deep-supervision"]["table"]]},
            "denseformer": {"table": [dict(t, val_bpc_mean=None, val_bpc_std=None, curve={"steps": [], "mean": []})
                                      for t in MINIMAL["denseformer"]["table"]]},
            "hyper-gain": {"table": [dict(t, gain_forward_mean=None, gain_forward_std=None, curve_forward=None)
                                     for t in MINIMAL["hyper-gain"]["table"]]},
            "norm-placement": {"table": [dict(t, val_bpc_mean=None, val_bpc_std=None)
                                         for t in MINIMAL["norm-placement"]["table"]]}}
    for name, result in gaps.items():
        experiment_figure(name, result).savefig(io.BytesIO(), format="png", dpi=30)


def test_write_experiment_figure_writes_png_and_svg(tmp_path):
    png, svg = write_experiment_figure("lesion", MINIMAL["lesion"], tmp_path / "figures")
    assert png == tmp_path / "figures" / "experiment-lesion.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg.name == "experiment-lesion.svg" and "<svg" in svg.read_text()[:2000]
    with pytest.raises(ValueError, match="^experiment: no figure"):
        experiment_figure("nope", {})


def test_cli_experiment_writes_its_figure(tmp_path, capsys):
    assert main(["experiment", "seed-costs", "--quick", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["figure"] == {"png": str(tmp_path / "figures" / "experiment-seed-costs.png"),
                             "svg": str(tmp_path / "figures" / "experiment-seed-costs.svg")}
    assert (tmp_path / "figures" / "experiment-seed-costs.png").stat().st_size > 0
    assert (tmp_path / "figures" / "experiment-seed-costs.svg").stat().st_size > 0


def _add(store, name, quick, **result):
    store.add_experiment(name, quick, {"experiment": name, "quick": quick, "seconds": 3.0, **result},
                         "2026-01-01T00:00:00+00:00")


def test_report_shows_each_experiments_latest_result(tmp_path):
    with Store(tmp_path) as store:
        _add(store, "lesion", True, claim="old claim", outcome="an older outcome", **MINIMAL["lesion"])
        _add(store, "lesion", True, claim="blocks matter", outcome="Removing one block costs <b>3</b> & more.",
             **MINIMAL["lesion"])
        _add(store, "seed-costs", False, claim="costs", outcome="seed-costs outcome", **MINIMAL["seed-costs"])
        _add(store, "degradation", False, claim="no table", outcome="stored in another shape")  # cannot be drawn
        files = write_report(store, tmp_path)
    page, md = (tmp_path / "report.html").read_text(), (tmp_path / "report.md").read_text()
    section = page[page.index('<section id="experiments"><h2>Experiments</h2>'):page.index('<section id="provenance">')]
    assert "Removing one block costs &lt;b&gt;3&lt;/b&gt; &amp; more." in section  # escaped
    assert "an older outcome" not in section and "the latest of 2 stored results, the quick form" in section
    assert "the one stored result, the full form" in section and "seed-costs outcome" in section
    # in EXPERIMENTS order, each figure inlined; the result that cannot be drawn says so
    assert section.index(">degradation</h3>") < section.index(">lesion</h3>") < section.index(">seed-costs</h3>")
    assert 'id="fig-experiment-lesion"' in section and 'id="fig-experiment-seed-costs"' in section
    assert section.count("<img ") == 2 and "No figure: this result cannot be drawn" in section
    assert "Not run into this store yet: equivalence, rezero" in section and "<code>skiplab experiment NAME" in section
    assert {"figures/experiment-lesion.png", "figures/experiment-seed-costs.svg"} <= set(files)
    assert "figures/experiment-degradation.png" not in files
    exp_md = md[md.index("## Experiments"):]
    assert "**Outcome:** Removing one block costs" in exp_md and "(figures/experiment-lesion.png)" in exp_md
    assert "Shown: the latest of 2 stored results, the quick form (--quick)" in exp_md


def test_report_without_experiments_says_how_to_run_them(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "experiment-lesion.png").write_bytes(b"stale")  # from another store: removed
    with Store(tmp_path) as store:
        write_report(store, tmp_path)
    page, md = (tmp_path / "report.html").read_text(), (tmp_path / "report.md").read_text()
    section = page[page.index('<section id="experiments">'):page.index('<section id="provenance">')]
    assert "The store holds no experiment results." in section and "<code>skiplab experiment NAME --out DIR</code>" in section
    assert "## Experiments" in md and "`skiplab experiment NAME --out DIR`" in md
    assert not (tmp_path / "figures" / "experiment-lesion.png").exists()
