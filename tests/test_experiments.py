"""Named experiments: the equivalence construction is exact (in float64 at the default
form's depths); experiments train on the dataset they are pointed at, from any working
directory and in worker processes; failed runs are called failed; options that do not
apply are refused; and each experiment's fast form finds its effect in the predicted
direction (fixed seeds, sizes chosen so that the direction is far outside the noise)."""

import json

import numpy as np
import pytest
import torch

import skiplab.run.runner
from skiplab import ModelSpec, build_model
from skiplab.cli import main
from skiplab.experiments import EXPERIMENTS, run_experiment
from skiplab.experiments.equivalence import BOUND, dense_from_add, max_abs_diff, reverse_gap
from skiplab.experiments.outcome import CONTRADICTS, INCONCLUSIVE, SUPPORTS, decide, predict, signed
from skiplab.store import Store


def tiny_npz(path, n=240, length=16, classes=4, seed=0):
    """A small learnable .npz in the format skiplab reads (x: (N, 1, L), y: integer labels)."""
    r = np.random.default_rng(seed)
    y = r.integers(0, classes, n)
    t = np.arange(length)
    x = r.normal(size=(n, 1, length)) + 1.5 * np.sin(t * (y[:, None, None] + 1) / 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x.astype("float32"), y=y)
    return path


# -- equivalence: exact construction ------------------------------------------------------
@pytest.mark.parametrize("model, shape", [("mlp", (1, 40)), ("cnn1d", (2, 12))])
@pytest.mark.parametrize("depth, width", [(1, 3), (4, 8), (9, 16)])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_dense_emulates_random_add_networks_exactly(model, shape, depth, width, norm):
    add = build_model(ModelSpec(model=model, depth=depth, width=width, skip="add", norm=norm, input_shape=shape,
                                aux_every=2), seed=depth)
    if norm == "batch":  # non-trivial running statistics, as after training
        add.train()
        with torch.no_grad():
            for _ in range(3):
                add(torch.randn(64, *shape))
    dense = dense_from_add(add)
    x = torch.randn(50, *shape, generator=torch.Generator().manual_seed(1))
    assert max_abs_diff(add, dense, x) < 1e-5
    # Concatenation pays for it: the dense copy has more parameters from block 2 on.
    if depth > 1:
        assert sum(p.numel() for p in dense.parameters()) > sum(p.numel() for p in add.parameters())


def test_equivalence_meets_its_bound_in_float64_at_the_default_depths():
    """The default form's deepest net (depth 24, width 64): float64 is far inside the
    bound; float32's summation order alone is not guaranteed to be, which is why the
    comparison is made in float64. The models themselves stay float32."""
    add = build_model(ModelSpec(model="mlp", depth=24, width=64, skip="add", norm="batch", input_shape=(1, 40)),
                      seed=3)
    add.train()
    with torch.no_grad():
        for _ in range(3):
            add(3 * torch.randn(256, 1, 40))  # running statistics far from the init's
    dense = dense_from_add(add)
    x = 3 * torch.randn(1000, 1, 40, generator=torch.Generator().manual_seed(2))
    d64 = max_abs_diff(add, dense, x, torch.float64)
    assert d64 < BOUND * 1e-3 and d64 < max_abs_diff(add, dense, x, torch.float32)
    assert next(add.parameters()).dtype == torch.float32 and next(dense.parameters()).dtype == torch.float32


def test_reverse_does_not_hold_at_equal_width():
    dense = build_model(ModelSpec(model="mlp", depth=3, width=16, skip="dense", norm="none"), seed=0)
    assert reverse_gap(dense, torch.randn(200, 40)) > 0.1  # a random [A, B] is no W (s_0 + f_1)
    emulation = dense_from_add(build_model(ModelSpec(model="mlp", depth=3, width=16, skip="add", norm="none"), seed=0))
    assert reverse_gap(emulation, torch.randn(200, 40)) < 1e-5  # ... unless A = B, i.e. it came from add


def test_equivalence_needs_add():
    with pytest.raises(ValueError, match="^skip:"):
        dense_from_add(build_model(ModelSpec(skip="plain")))


# -- the verdict ------------------------------------------------------------------------------
def test_verdict_follows_the_test_and_the_regime():
    low, high = [0.10, 0.11, 0.12], [0.50, 0.52, 0.51]
    up, down, tie = predict(low, high, higher=True), predict(high, low, higher=True), predict(low, low, higher=True)
    assert decide([up]) == SUPPORTS and decide([up, up]) == SUPPORTS
    assert decide([up, down]) == CONTRADICTS and decide([down]) == CONTRADICTS
    assert decide([up, tie]) == INCONCLUSIVE and decide([]) == INCONCLUSIVE
    assert decide([up], regime_met=False) == INCONCLUSIVE  # not in the claim's regime: no support
    assert decide([predict([0.1], [0.9], higher=True)]) == INCONCLUSIVE  # 1 seed: no test, no verdict
    assert signed(up.comparison, "b minus a", 100).startswith("b minus a +40.0 +- 0.8 points, p < 0.001")
    assert signed(predict([0.1], [0.3], True).comparison, "d", 100) == "d +20.0 points; 1 seed: no test"
    assert "+- 0.0" not in signed(predict([0.1], [0.3], True).comparison, "d", 100)


# -- where the user points them -------------------------------------------------------------
def test_relative_dataset_path_from_another_cwd_in_worker_processes(tmp_path, monkeypatch):
    """The path is resolved once: worker processes train on it (nothing fails), every
    stored spec names the absolute file, and a resume from another folder reuses them."""
    npz = tiny_npz(tmp_path / "sub" / "my.npz")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    form = dict(depths=(1, 2), width=8, epochs=1, seeds=1, norms=("none",))
    r = run_experiment("degradation", "out", workers=2, dataset="sub/my.npz", form=form)
    assert r["failed_runs"] == 0 and r["training_runs"] == 4 and "failed" not in r["outcome"]
    assert r["dataset"] == str(npz.resolve())
    with Store(tmp_path / "out") as s:
        runs = s.runs()
    assert len(runs) == 4 and {x["status"] for x in runs} == {"complete"}
    assert {x["spec"]["dataset"] for x in runs} == {str(npz.resolve())}
    monkeypatch.chdir(tmp_path / "elsewhere")  # the same runs, named from elsewhere: reused, not repeated
    again = run_experiment("degradation", str(tmp_path / "out"), workers=1, dataset="../sub/my.npz", form=form)
    assert again["table"] == r["table"]
    with Store(tmp_path / "out") as s:
        assert len(s.runs()) == 4


@pytest.mark.parametrize("name, workers, form", [
    ("lesion", 2, dict(depth=2, width=8, epochs=1, seeds=1)),  # models trained in workers, sent back
    ("long-skips", 1, dict(epochs=1, seeds=1, channels=4)),  # its own U-Net, in this process
])
def test_experiments_that_operate_on_their_models_store_their_runs(tmp_path, monkeypatch, name, workers, form):
    """lesion and long-skips put their training runs in the runs table, on the dataset given."""
    npz = tiny_npz(tmp_path / "d" / "my.npz")
    monkeypatch.chdir(tmp_path / "d")
    r = run_experiment(name, str(tmp_path / "out"), workers=workers, dataset="my.npz", form=form)
    with Store(tmp_path / "out") as s:
        runs = s.runs()
    assert len(runs) == r["training_runs"] == 3
    assert {x["status"] for x in runs} == {"complete"} and {x["spec"]["dataset"] for x in runs} == {str(npz)}
    assert {x["spec"]["group"] for x in runs} == {f"exp:{name}"}
    if name == "lesion":  # its models (Context.train_models) went through the engine (one seed each: the loop)
        assert {x["result"].get("trained_by") for x in runs} == {"loop: one seed: nothing to batch"}


def _boom_for(monkeypatch, fails):
    """Make training raise for the runs ``fails(spec)`` picks (in this process): the
    runner's ``train_seeds`` trains a configuration's seeds, which fail together."""
    real = skiplab.run.batched.train_seeds

    def train_seeds(specs, data, on_step=None):
        if any(map(fails, specs)):
            raise RuntimeError("boom: disk on fire")
        return real(specs, data, on_step)
    monkeypatch.setattr(skiplab.run.runner, "train_seeds", train_seeds)


def test_every_run_failed_is_one_line_exit_1_and_the_first_runs_traceback_logged(tmp_path, monkeypatch, capsys):
    """Not the user's mistake (the inputs were checked before training): an internal
    error, its log holding the first run's stored traceback."""
    npz = tiny_npz(tmp_path / "my.npz")
    _boom_for(monkeypatch, lambda spec: True)
    code = main(["experiment", "degradation", "--quick", "--workers", "1", "--dataset", str(npz),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("skiplab: internal error: RuntimeError: experiment degradation: all 16 training runs "
                          "failed; the first: RuntimeError: boom: disk on fire")
    log, = (tmp_path / "out" / "logs").glob("error-*.log")
    assert str(log) in err
    assert 'raise RuntimeError("boom: disk on fire")' in log.read_text()  # the run's own traceback, as stored
    with Store(tmp_path / "out") as s:
        assert s.experiments() == [] and {r["status"] for r in s.runs()} == {"failed"}


def test_some_runs_failed_are_counted_and_never_called_diverged(tmp_path, monkeypatch):
    npz = tiny_npz(tmp_path / "my.npz")
    _boom_for(monkeypatch, lambda spec: spec.model.skip == "add")
    r = run_experiment("rezero", str(tmp_path / "out"), workers=1, dataset=str(npz),
                       form=dict(depths=(2,), width=8, epochs=1, seeds=2))
    assert "add: every run failed" in r["outcome"] and "diverged" not in r["outcome"]
    assert "2 of 6 training runs failed and are left out (the first: RuntimeError: boom" in r["outcome"]
    assert r["failed_runs"] == 2 and r["verdict"] == INCONCLUSIVE


@pytest.mark.parametrize("flag, value", [("--workers", "2"), ("--dataset", "digits")])
def test_options_that_do_not_apply_are_refused(tmp_path, capsys, flag, value):
    assert main(["experiment", "seed-costs", flag, value, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skiplab: error: {flag}: does not apply to experiment seed-costs") and err.count("\n") == 1
    assert not (tmp_path / "runs.db").exists() or Store(tmp_path).experiments() == []


def test_every_experiment_declares_its_options():
    # the training experiments take both; the arithmetic one neither, and says why
    assert {n for n, e in EXPERIMENTS.items() if e.uses_data} == set(EXPERIMENTS) - {"seed-costs"}
    assert {n for n, e in EXPERIMENTS.items() if e.uses_workers} == set(EXPERIMENTS) - {"seed-costs"}
    assert EXPERIMENTS["seed-costs"].why_not


def test_bad_workers_and_missing_dataset(tmp_path, capsys):
    assert main(["experiment", "lesion", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert "--workers: must be an integer >= 1" in capsys.readouterr().err
    assert main(["experiment", "lesion", "--dataset", str(tmp_path / "nope.npz"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skiplab: error: dataset:") and "nope.npz" in err and err.count("\n") == 1


def test_unknown_experiment(tmp_path, capsys):
    assert main(["experiment", "nope", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("skiplab: error: ")


# -- the direction of each effect, in a fast form ---------------------------------------------
def _run(tmp_path, name, **form):
    return run_experiment(name, str(tmp_path), workers=1, form=form)


def test_seed_costs_outcome_is_built_from_numbers(tmp_path):
    r = run_experiment("seed-costs", str(tmp_path), quick=True)
    assert r["ten_layer_blocks"] == {"plain": 90_000, "add": 90_000, "dense": 450_000}
    assert set(r["per_block_ratio"]["concat-double"]) == {4.0} and set(r["per_block_ratio"]["concat-half"]) == {1.0}
    assert "450,000" in r["outcome"] and r["flops_laws"]["concat-double"]["law"] == "exponential"
    assert r["verdict"] == SUPPORTS and "Verdict: supports the claim" in r["outcome"]


def test_degradation_direction(tmp_path):
    """Without a norm, a depth-20 plain MLP stays near chance after 3 epochs, while the
    same depth with additive skips and the depth-2 plain net train (ResNet, Fig. 1)."""
    r = _run(tmp_path, "degradation", depths=(2, 20), width=32, epochs=3, seeds=1, norms=("none",))
    err = {(t["skip"], t["depth"]): t["train_error"] for t in r["table"]}
    assert err[("plain", 20)] > err[("add", 20)] + 0.05
    assert err[("plain", 20)] > err[("plain", 2)] + 0.05
    # 1 seed: no test, and 3 epochs do not fit the training set: the verdict cannot be "supports"
    assert "1 seed: no test" in r["outcome"] and not r["regime"]["met"] and r["verdict"] == INCONCLUSIVE


def test_equivalence_direction(tmp_path):
    r = _run(tmp_path, "equivalence", configs=((2, 8), (12, 16)), epochs=1, seeds=2)
    assert r["max_abs_diff"] < BOUND and all(row["max_abs_diff"] < BOUND for row in r["rows"])
    for net in r["nets"]:  # a dense net trained on its own is no add net; the dense copy of one is
        assert net["reverse_relative_error"] > 0.05 > 100 * net["reverse_check_of_emulation"]
    assert r["verdict"] != CONTRADICTS


def test_dense_memory_fits_a_deeper_efficient_net_in_the_same_memory(tmp_path):
    """The depths come from the exact cost model and the measured saves of the built
    models stay within the budget (the experiment's regime); accuracies are reported."""
    r = _run(tmp_path, "dense-memory", naive_depth=3, width=32, growth=8, epochs=1, seeds=2, max_depth=30)
    depth = {t["config"]: t for t in r["table"]}
    assert depth["dense, efficient"]["depth"] >= 2 * depth["dense, naive"]["depth"] == 6
    assert all(t["measured_bytes"] <= r["budget_bytes"] for t in r["table"])
    assert depth["dense, naive"]["activation_bytes"] == r["budget_bytes"]
    assert r["regime"]["met"] and all(t["seeds"] == 2 for t in r["table"])
    assert "efficient dense" in r["outcome"] and r["verdict"] in (SUPPORTS, INCONCLUSIVE, CONTRADICTS)


@pytest.mark.slow
def test_rezero_direction(tmp_path):
    """At depth 60 without a norm, rezero reaches the loss target within 4 epochs; add's
    forward signal explodes and plain stays at chance (ReZero, Fig. 3)."""
    r = _run(tmp_path, "rezero", depths=(60,), epochs=4, seeds=2, target=0.87)
    cell = {t["skip"]: t for t in r["table"]}
    assert cell["rezero"]["reached"] == 2
    mean = {s: sum(t["steps_censored"]) / len(t["steps_censored"]) for s, t in cell.items()}
    assert mean["rezero"] < mean["add"] and mean["rezero"] < mean["plain"]


def test_lesion_direction(tmp_path):
    """Removing a block costs a plain net far more than a residual one (Veit et al.)."""
    r = _run(tmp_path, "lesion", depth=6, width=32, epochs=4, seeds=2, skips=("plain", "add"))
    assert r["summary"]["plain"]["mean_drop"] > r["summary"]["add"]["mean_drop"] + 0.05


@pytest.mark.slow
def test_deep_supervision_direction(tmp_path):
    """A depth-30 plain net trains a little with auxiliary heads, add far more."""
    r = _run(tmp_path, "deep-supervision", depth=30, width=32, epochs=3, seeds=2, aux_every=3)
    acc = {(t["skip"], t["aux_every"]): t["train_accuracy"] for t in r["table"]}
    assert acc[("add", 0)] > acc[("plain", 3)] > acc[("plain", 0)]


@pytest.mark.slow
def test_parameter_efficiency_direction(tmp_path):
    """The robust direction at this size: more parameters buy every strategy accuracy,
    and each is sized to its budget (whether dense beats add is the default form's
    question, and on MNIST-1D not a foregone one)."""
    r = _run(tmp_path, "parameter-efficiency", budgets=(5000, 40000), epochs=3, seeds=2)
    by = {(t["budget"], t["skip"]): t for t in r["table"]}
    for s in ("add", "dense", "concat-half"):
        assert by[(40000, s)]["test_accuracy"] > by[(5000, s)]["test_accuracy"]
        for b in (5000, 40000):
            assert abs(by[(b, s)]["params"] - b) / b < 0.1


@pytest.mark.slow
def test_long_skips_direction(tmp_path):
    """Long skips, added or concatenated, lower a U-Net's denoising error; concatenating
    costs more parameters and FLOPs than adding."""
    r = _run(tmp_path, "long-skips", epochs=2, seeds=2, channels=8)
    s = r["summary"]
    assert s["add"]["test_mse"] < s["none"]["test_mse"] and s["concat"]["test_mse"] < s["none"]["test_mse"]
    assert s["concat"]["params"] > s["add"]["params"] and s["concat"]["flops"] > s["add"]["flops"]
    with Store(tmp_path) as store:
        assert len([x for x in store.runs() if x["spec"]["group"] == "exp:long-skips"]) == 6


# -- the language-model experiments (transformers on a text) -------------------------------------
TEXT_EXPERIMENTS = ("denseformer", "hyper-gain", "norm-placement")


def tiny_txt(path, n=6000, seed=0):
    """A small learnable text: words from a short list, so characters follow each other."""
    r = np.random.default_rng(seed)
    words = ["skip", "add", "concat", "dense", "residual", "stream", "norm", "layer", "the", "a", "of"]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ""
    while len(text) < n:
        text += " ".join(r.choice(words, 12)) + ".\n"
    path.write_text(text)
    return path


def test_each_experiment_declares_its_default_data():
    assert {n for n, e in EXPERIMENTS.items() if e.takes_text} == set(TEXT_EXPERIMENTS)
    assert {EXPERIMENTS[n].default_dataset for n in TEXT_EXPERIMENTS} == {"pydoc"}
    assert {e.default_dataset for n, e in EXPERIMENTS.items() if n not in TEXT_EXPERIMENTS} == {"mnist1d"}


@pytest.mark.parametrize("name", TEXT_EXPERIMENTS)
def test_language_model_experiments_refuse_numeric_data_in_one_line(tmp_path, capsys, name):
    assert main(["experiment", name, "--quick", "--dataset", "digits", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skiplab: error: dataset: 'digits' is numeric; experiment {name} trains character "
                          "language models and takes a text") and err.count("\n") == 1
    assert not (tmp_path / "o" / "runs.db").exists() or Store(tmp_path / "o").experiments() == []


def test_a_users_text_file_from_another_cwd_names_its_runs_by_path_and_hash(tmp_path, monkeypatch):
    txt = tiny_txt(tmp_path / "d" / "my.txt")
    monkeypatch.chdir(tmp_path / "d")
    form = dict(depth=1, add_depths=(1, 2), width=16, heads=2, context=16, epochs=1, batch_size=64, evals=1, seeds=1,
                warmup=0)
    r = run_experiment("denseformer", str(tmp_path / "out"), workers=2, dataset="my.txt", form=form)
    from skiplab.datasets import dataset_ref
    ref = dataset_ref(str(txt))
    assert r["dataset"] == ref and ref.startswith(str(txt) + "@") and r["failed_runs"] == 0
    with Store(tmp_path / "out") as s:
        runs = s.runs()
    assert len(runs) == 4 and {x["spec"]["dataset"] for x in runs} == {ref}
    longer = [x for x in runs if x["spec"]["train"]["epochs"] == 2]  # the trained-regime check: add at depth 1 twice as long
    assert [(x["spec"]["model"]["skip"], x["spec"]["model"]["depth"], x["seed"]) for x in longer] == [("add", 1, 0)]
    assert {x["status"] for x in runs} == {"complete"} and all(x["result"]["val_bpc"] > 0 for x in runs)
    assert {(t["skip"], t["depth"]) for t in r["table"]} == {("add", 1), ("dwa", 1), ("add", 2)}
    # 1 seed: no test, so no verdict, and the outcome says so with the stored numbers
    assert r["verdict"] == INCONCLUSIVE and "1 seed: no test" in r["outcome"]
    bpc = {(t["skip"], t["depth"]): t["val_bpc_mean"] for t in r["table"]}
    assert f"dwa depth 1 {bpc[('dwa', 1)]:.3f} bpc" in r["outcome"]
    with pytest.raises(ValueError, match="^experiment denseformer: add_depths"):
        run_experiment("denseformer", str(tmp_path / "out"), workers=1, dataset="my.txt", form={**form, "add_depths": (1,)})


def test_norm_placement_trains_each_placement_with_and_without_warmup(tmp_path):
    txt = tiny_txt(tmp_path / "my.txt")
    form = dict(depths=(1,), width=16, heads=2, context=16, epochs=2, batch_size=64, evals=1, warmup=3, seeds=2)
    r = run_experiment("norm-placement", str(tmp_path / "out"), workers=2, dataset=str(txt), form=form)
    with Store(tmp_path / "out") as s:
        runs = s.runs()
    longer = [x for x in runs if x["spec"]["train"]["epochs"] == 4]  # the trained-regime check's run
    assert [(x["spec"]["model"]["placement"], x["spec"]["train"].get("warmup", 0), x["seed"]) for x in longer] \
        == [("pre", 0, 0)]
    runs = [x for x in runs if x not in longer]
    got = sorted((x["spec"]["model"]["placement"], x["spec"]["train"].get("warmup", 0), x["seed"]) for x in runs)
    assert got == sorted((p, w, seed) for p in ("pre", "post") for w in (0, 3) for seed in (0, 1))
    assert all("warmup" not in x["spec"]["train"] for x in runs if x["spec"]["train"].get("warmup", 0) == 0)
    assert len(r["gaps"]["without_warmup"]) == len(r["gaps"]["with_warmup"]) == 2
    assert r["uniform_bpc"] == pytest.approx(np.log2(len(set(txt.read_text()))))
    assert r["unigram_bpc"] < r["uniform_bpc"]  # a text's character frequencies carry information
    assert r["verdict"] in (SUPPORTS, CONTRADICTS, INCONCLUSIVE) and "Verdict: " in r["outcome"]


def test_unigram_bpc_is_the_entropy_of_character_frequencies():
    from skiplab.datasets.text import TextDataset
    from skiplab.experiments.transformers import unigram_bpc
    tokens = torch.tensor([0, 1] * 500)  # two symbols, equally frequent: 1 bit each (smoothing aside)
    data = TextDataset("t", tokens[:900], tokens[900:], "ab", "0" * 64)
    assert unigram_bpc(data) == pytest.approx(1.0, abs=1e-2)


@pytest.mark.slow
def test_hyper_gain_direction(tmp_path):
    """Trained hyper-connections' composite gain moves away from 1 (its init); mHC's
    doubly stochastic mixing keeps its forward gain at 1 (mHC, Fig. 3)."""
    r = _run(tmp_path, "hyper-gain", depths=(2,), width=16, heads=2, context=64, epochs=1, batch_size=128,
             evals=2, seeds=2, lr=3e-3, warmup=0)  # the default's 100 warm-up steps are longer than this run
    cell = {t["skip"]: t for t in r["table"]}
    assert cell["hyper"]["init_forward"] == pytest.approx(1.0) and cell["mhc"]["init_forward"] == pytest.approx(1.0)
    assert cell["hyper"]["gain_forward_mean"] > 1.1 > cell["mhc"]["gain_forward_mean"]
    assert abs(cell["mhc"]["gain_forward_mean"] - 1) < 1e-4
    assert len(cell["hyper"]["curve_forward"]["steps"]) == 2  # the gain at each evaluation, from the store
    assert "by construction" in r["outcome"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_quick_form_runs_and_is_stored(tmp_path, name):
    options = dict(workers=2) if EXPERIMENTS[name].uses_workers else {}
    r = run_experiment(name, str(tmp_path), quick=True, **options)
    assert r["outcome"] and r["claim"] and "Verdict: " in r["outcome"]
    if name == "equivalence":
        assert r["max_abs_diff"] < 1e-5
    with Store(tmp_path) as s:
        assert [e["name"] for e in s.experiments()] == [name]
        assert json.loads(json.dumps(s.experiments()[0]["result"]))["verdict"] == r["verdict"]
    from skiplab.experiments.figures import write_experiment_figure
    png, svg = write_experiment_figure(name, r, tmp_path / "figures")  # the real result's shape draws
    assert png.stat().st_size > 0 and svg.stat().st_size > 0


def _jobs(specs):
    """A task function: seed 1's worker dies (as one killed by the OOM killer or SIGKILL)."""
    import os

    from skiplab.experiments.context import run_output
    if any(s["seed"] == 1 for s in specs):
        os._exit(1)
    return [run_output(s, "h", "complete", {"status": "complete", "seed": s["seed"], "test_accuracy": None}, [], "t")
            for s in specs]


@pytest.mark.slow
def test_a_worker_that_dies_is_retried_then_stored_as_failed(tmp_path):
    from skiplab.experiments.context import Context
    spec = {"model": {"model": "mlp", "skip": "x", "depth": 1, "width": 1}, "dataset": "d", "seed": 0}
    with Store(tmp_path) as store:
        ctx = Context(None, False, store, workers=2, name="t")
        outs = ctx.run_jobs(_jobs, [(("h", 0), spec), (("h", 1), {**spec, "seed": 1})])
        assert [o["status"] for o in outs] == ["complete", "failed"]
        message = outs[1]["result"]["message"]
        assert message == "worker process died (exit code 1) 3 times"  # the first try and 2 retries
        assert {(r["seed"], r["status"]) for r in store.runs()} == {(0, "complete"), (1, "failed")}
        assert ctx.failed and "1 of 2 training runs failed" in ctx.failure_note()
