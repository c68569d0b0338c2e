"""The training engines' accelerator options, checked on the CPU: torch.compile (agrees
with eager; falls back to eager, saying why), bf16 autocast (refused off CUDA; its code
path, forced on the CPU, trains), channels_last (the decision), how often the loss is read
back (the decision; the late reads themselves: test_engine, test_train), and which of them
are part of a run's identity. No test here needs a GPU."""

import dataclasses
import json

import pytest
import torch

import skiplab.run.loop
from skiplab import ModelSpec
from skiplab.cli import main
from skiplab.families import FAMILIES
from skiplab.run.batched import train_seeds
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.loop import preflight, train_model
from skiplab.run.step import SYNC_EVERY_ACCELERATOR, sync_interval, wants_channels_last
from skiplab.spec import SpecError
from skiplab.sweep import parse_sweep

MODEL = ModelSpec(model="mlp", depth=2, width=8, input_shape=(1, 8), classes=4, norm="batch", bias=False)


def _runs(seeds=(0, 1), **train):
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 40, "evals": 2, "lr": 1e-2, **train})  # 200 samples: 5 full batches
    return [RunSpec(MODEL, cfg, "tiny", seed=s) for s in seeds]


def _state(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in model.state_dict().values() if t.is_floating_point()])


def test_compile_and_precision_in_the_identity():
    """compile changes results only by rounding: not part of a run's identity, like the
    engine; bf16 changes them: part of it. Their defaults are absent from to_dict, so every
    run stored before they existed keeps its spec hash."""
    run = _runs()[0]
    assert "compile" not in run.to_dict()["train"] and "precision" not in run.to_dict()["train"]
    compiled = dataclasses.replace(run, train=dataclasses.replace(run.train, compile=True))
    assert compiled.spec_hash == run.spec_hash and compiled.to_dict()["train"]["compile"] is True
    assert RunSpec.from_dict(compiled.to_dict()) == compiled
    bf16 = dataclasses.replace(run, train=dataclasses.replace(run.train, precision="bf16", device="cuda"))
    assert bf16.spec_hash != dataclasses.replace(bf16, train=dataclasses.replace(bf16.train, precision="fp32")).spec_hash
    with pytest.raises(SpecError, match="^compile:"):
        TrainConfig(compile="yes")
    with pytest.raises(SpecError, match="^precision:"):
        TrainConfig(precision="fp16")


def test_bf16_is_refused_off_cuda_before_training(tiny, capsys):
    with pytest.raises(SpecError, match="^precision: bf16 autocast is offered on CUDA only"):
        TrainConfig(precision="bf16")  # device cpu, the default
    if not torch.cuda.is_available():  # auto resolves to the CPU here: refused before training
        auto = _runs(precision="bf16", device="auto")
        with pytest.raises(SpecError, match="^precision: bf16 autocast is offered on CUDA only"):
            preflight(auto, load=lambda *_: tiny)
        with pytest.raises(SpecError, match="^precision: bf16"):
            train_model(auto[0], tiny)
    for command in (["train", "--precision", "bf16", "--epochs", "0.1"], ["study", "--quick", "--precision", "bf16"]):
        assert main(command) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.splitlines() == [
            "skiplab: error: " + skiplab.run.config.BF16_CPU], err


def test_sweep_train_table_takes_the_options():
    sweep = parse_sweep({"sweep": {"seeds": 1}, "grid": {"skip": "add", "depth": 1, "width": 8},
                         "train": {"epochs": 0.1, "compile": True, "precision": "bf16", "device": "cuda"}})
    assert {(r.train.compile, r.train.precision) for r in sweep.runs} == {(True, "bf16")}
    with pytest.raises(ValueError, match=r"\[train\].*precision: bf16 autocast is offered on CUDA only"):
        parse_sweep({"train": {"precision": "bf16"}})


@pytest.mark.parametrize("command", ["train", "study"])
def test_the_cli_takes_compile_and_precision(command, capsys):
    import argparse

    from skiplab.cli import study as cli_study, train as cli_train
    p = argparse.ArgumentParser()
    (cli_train if command == "train" else cli_study).add_parser(p.add_subparsers())
    args = p.parse_args([command, "--compile", "--precision", "fp32"])
    assert (args.compile, args.precision) == (True, "fp32")
    args = p.parse_args([command])
    assert (args.compile, args.precision) == (False, "fp32")
    if command == "train":
        assert (cli_train.train_config(args).compile, cli_train.train_config(args).precision) == (False, "fp32")
        args = p.parse_args([command, "--compile"])
        assert cli_train.train_config(args).compile is True
    with pytest.raises(SystemExit):
        p.parse_args([command, "--precision", "fp16"])
    capsys.readouterr()


def test_sync_interval_and_channels_last_decisions(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert sync_interval(cpu) == 1 and sync_interval(cuda) == SYNC_EVERY_ACCELERATOR > 1
    monkeypatch.setattr(skiplab.run.step, "_SYNC_EVERY", 7)
    assert sync_interval(cpu) == sync_interval(cuda) == 7
    for name in FAMILIES:
        spec = ModelSpec(model=name)
        assert not wants_channels_last(spec, cpu)
        assert wants_channels_last(spec, cuda) == (name in ("cnn2d", "resnet")), name  # the 2-D convolutions


@pytest.mark.parametrize("fails_at", [1, 3])
def test_a_failed_compile_trains_eagerly_and_says_why(tiny, monkeypatch, fails_at):
    """Where torch.compile raises (at the first call, or at a later recompile), the run
    trains on eagerly: the same numbers as without --compile, and trained_by says why; a
    compile time only where the first step ran compiled."""
    def broken(fn, **_):
        calls = [0]

        def call(*args):
            calls[0] += 1
            if calls[0] >= fails_at:
                raise RuntimeError("no backend\nsecond line")
            return fn(*args)  # "compiled": the function itself, as far as numbers go
        return call
    eager = {e: train_seeds(_runs(engine=e), tiny) for e in ("batched", "loop")}
    monkeypatch.setattr(torch, "compile", broken)
    for engine in ("batched", "loop"):
        for (m, r), (m0, r0) in zip(train_seeds(_runs(engine=engine, compile=True), tiny), eager[engine]):
            assert r.trained_by == f"{engine}; compile failed: RuntimeError: no backend"
            assert (r.compile_seconds is None) == (fails_at == 1)
            assert r.curves == r0.curves and torch.equal(_state(m), _state(m0))


class FakeClock:
    """skiplab.clock's ``now``, standing still but for what a test adds: times asserted
    are the ones the test set, whatever the machine's load (no wall time is asserted)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    import skiplab.clock
    c = FakeClock()
    monkeypatch.setattr(skiplab.clock, "now", c)
    return c


def test_compile_time_counts_the_compilers_set_up(tiny, monkeypatch, fake_clock):
    """torch.compile's first use imports the compiler (seconds, before any step): the
    reported compile time holds it as well as the first step's excess, so that training time
    less compile time is the steady steps' (benchmarks/engine_throughput.py --compile)."""
    def slow_to_set_up(fn, **_):
        fake_clock.sleep(0.3)  # the compiler's import
        return lambda *args: fn(*args)
    monkeypatch.setattr(torch, "compile", slow_to_set_up)
    for engine in ("batched", "loop"):
        start = fake_clock.t
        r = train_seeds(_runs(engine=engine, compile=True), tiny)[0][1]
        # the fake clock moves only in the compiler: 0.3 s per compiled step function (one for
        # the batched group of 2 seeds, one per seed in the loop), nothing else
        assert r.trained_by == engine and r.compile_seconds == pytest.approx(0.3, abs=1e-12)
        assert fake_clock.t - start == pytest.approx(0.3 * (1 if engine == "batched" else 2), abs=1e-12)
        assert r.seconds == pytest.approx(0.3 / (2 if engine == "batched" else 1), abs=1e-12)  # a batch's share


def test_compile_time_counts_recompiles_for_a_new_shape(tiny, monkeypatch, fake_clock):
    """A smaller last batch recompiles (a new input shape): its excess over a typical step
    is compile time too. The fake compiler takes 0.25 s of the fake clock per new shape of
    its input, and a step takes no time on that clock."""
    def compiler(fn, **_):
        seen = set()

        def call(*args):
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            if shapes not in seen:
                seen.add(shapes)
                fake_clock.sleep(0.25)
            return fn(*args)
        return call
    monkeypatch.setattr(torch, "compile", compiler)
    for engine in ("batched", "loop"):
        full = train_seeds(_runs(engine=engine, compile=True), tiny)[0][1]  # 5 batches of 40: one shape
        ragged = train_seeds(_runs(engine=engine, compile=True, batch_size=64), tiny)[0][1]  # 64, 64, 64, 8
        assert full.compile_seconds == pytest.approx(0.25, abs=1e-12), (engine, full)
        assert ragged.compile_seconds == pytest.approx(0.5, abs=1e-12), (engine, ragged)


def test_bf16_autocast_path_trains_when_let_run_on_the_cpu(tiny, monkeypatch):
    """The bf16 path (forward under autocast, loss in fp32), which runs on CUDA, forced on
    the CPU to exercise it in both engines, with layer and batch norm: it trains, and its
    numbers are not fp32's."""
    monkeypatch.setattr(skiplab.run.config, "_BF16_ON_CPU", True)
    for norm, batched in (("layer", "batched"), ("batch", "batched")):
        model = dataclasses.replace(MODEL, norm=norm)
        runs = lambda **t: [dataclasses.replace(r, model=model) for r in _runs(epochs=5, **t)]  # noqa: E731
        fp32 = train_seeds(runs(), tiny)
        for engine, trained_by in (("batched", batched), ("loop", "loop")):
            for (m, r), (m0, r0) in zip(train_seeds(runs(precision="bf16", engine=engine), tiny), fp32):
                assert r.status == "complete" and r.trained_by.startswith(trained_by), r.trained_by
                assert r.test_accuracy > 0.45  # chance: 0.25; fp32 reaches 0.6 to 0.7 in these 25 steps
                assert r.train_loss != r0.train_loss and abs(r.train_loss - r0.train_loss) < 0.1 * r0.train_loss
                assert all(p.dtype == torch.float32 for p in m.parameters())  # autocast: the weights stay fp32


@pytest.mark.slow
# Inductor imports torch.jit.script_method on the CPU (a DeprecationWarning), and Dynamo warns
# where it breaks the graph (a UserWarning: seed_batched's functorch calls); pytest makes
# both errors, and the engine would then fall back to eager.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_compiled_runs_agree_with_eager(tiny):
    """torch.compile (inductor, on the CPU here) against eager: final parameters and batch
    norm statistics within 1e-4 relative, metrics and curves likewise, in both engines; the
    compile time is reported."""
    for engine in ("batched", "loop"):
        eager = train_seeds(_runs(engine=engine), tiny)
        compiled = train_seeds(_runs(engine=engine, compile=True), tiny)
        for (m, r), (m0, r0) in zip(compiled, eager):
            assert r.trained_by == engine and r.compile_seconds is not None and r0.compile_seconds is None
            assert ((_state(m) - _state(m0)).norm() / _state(m0).norm()).item() <= 1e-4
            assert [c[:3] for c in r.curves] == [c[:3] for c in r0.curves]
            for a, b in zip(r.curves, r0.curves):
                assert abs(a[3] - b[3]) <= 1e-4 * max(abs(b[3]), 1e-3), (a, b)
            assert abs(r.test_loss - r0.test_loss) <= 1e-4 * r0.test_loss
    json.dumps(r.summary())  # compile_seconds stores as JSON


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # Dynamo's, as above
def test_every_compiled_run_in_a_process_compiles(tiny, monkeypatch):
    """Dynamo keeps at most 8 compiled graphs per code object and then runs it eagerly
    without raising; the engines' loss functions share their code objects, so a process's
    ninth compiled run trained eagerly while reported as compiled. Each of 10 runs in this
    process must hand the compiler a graph of its own (a counting backend: no Inductor)."""
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn: real(fn, backend=counting))
    after = []
    for i in range(10):
        model = dataclasses.replace(MODEL, width=8 + i)  # a new model, as a sweep's next run
        cfg = TrainConfig(epochs=1, batch_size=40, evals=2, lr=1e-2, compile=True, engine="loop")
        train_seeds([RunSpec(model, cfg, "tiny", seed=0)], tiny)
        after.append(len(graphs))
    assert all(b > a for a, b in zip([0] + after, after)), after


def test_train_prints_compile_time_and_failed_compiles():
    from skiplab.cli.train import render
    runs = [{"seed": s, "status": "complete", "seconds": 2.0, "message": "", "engine": "batched",
             "compile_seconds": 12.34} for s in (0, 2)] + [
            {"seed": 3, "status": "complete", "seconds": 2.0, "message": "", "engine": "loop", "compile_seconds": 0.5},
            {"seed": 1, "status": "complete", "seconds": 2.0, "message": "",
             "engine": "loop: one seed: nothing to batch; compile failed: RuntimeError: no backend",
             "compile_seconds": None}]
    data = [{"skip": "add", "depth": 2, "width": 8, "params": 100, "runs": runs,
             "summary": {"metric": "test_accuracy", "test_accuracy_mean": 0.5, "test_accuracy_std": 0.1,
                         "complete": 4, "seeds": 4}}]
    text = render(data, "out")
    assert "add seed 1: trained eagerly: RuntimeError: no backend" in text
    assert "compile time (first step less the median step), s: add 12.3 (one batch of 2 seeds), add seed 3 0.5" in text
