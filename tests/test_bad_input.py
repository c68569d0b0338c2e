"""Bad input, every command: exit code 2, exactly one line ``skiplab: error: ...`` on
stderr, no traceback, nothing on stdout, and nothing stored or changed on disk.

Method: each case builds its files (data files, sweep files, stores) in ``tmp_path``,
records the bytes of every file there, runs the command line in-process
(``skiplab.cli.main``) and compares. No case may start training: the errors that used to
surface inside a run (a ``failed`` row, exit 0) are now found by the pre-flight checks
(``skiplab.run.loop.preflight``), so each case takes well under a second or two. CUDA is
hidden (``torch.cuda.is_available`` patched to False) so ``--device cuda`` is bad input on
any machine, including one with a GPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from skiplab.cli import main
from skiplab.store import Store

# -- files a case can ask for, by name (each a function of the folder to write into) -----
GOOD_SWEEP = """
[sweep]
seeds = 1
[grid]
model = "mlp"
skip = "add"
depth = 1
width = 8
dataset = "digits"
[train]
epochs = 1
"""


def _sweep(text: str) -> Callable[[Path], None]:
    return lambda d: (d / "s.toml").write_text(text)


def _good_sweep_with(table: str, line: str) -> Callable[[Path], None]:
    """The good sweep with one line added to one table (appended: TOML allows a table once)."""
    head, _, rest = GOOD_SWEEP.partition(f"[{table}]\n")
    return _sweep(f"{head}[{table}]\n{line}\n{rest}")


def _npz(**arrays) -> Callable[[Path], None]:
    return lambda d: np.savez(d / "data.npz", **arrays)


def _write(name: str, content: bytes | str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        if isinstance(content, bytes):
            (d / name).write_bytes(content)
        else:
            (d / name).write_text(content)
    return make


def _corrupt_store(d: Path) -> None:
    (d / "out").mkdir()
    (d / "out" / "runs.db").write_bytes(b"not a database" * 100)


def _empty_store(d: Path) -> None:
    Store(d / "out").close()


def _folder(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).mkdir(parents=True)


def _both(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        for m in makers:
            m(d)
    return make


X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
Y = np.arange(40) % 4

# (id, argv with {d} for the case's folder, files to make first). Every case passes --out
# {d}/out where the command takes it, so "nothing stored" is checked, not assumed.
TRAIN = ["train", "--model", "mlp", "--depth", "1", "--width", "8", "--epochs", "1", "--seeds", "1",
         "--workers", "1", "--out", "{d}/out"]
SWEEP = ["sweep", "{d}/s.toml", "--out", "{d}/out"]
TRAIN_T = ["train", "--model", "transformer", "--depth", "1", "--width", "8", "--heads", "2", "--epochs", "1",
           "--seeds", "1", "--workers", "1", "--out", "{d}/out"]
EXPORT = ["runs", "export", "--out", "{d}/out"]
PROFILE = ["profile", "{d}/m.py:make"]
MODEL_FILE = "import torch\n\ndef make():\n    return torch.nn.Linear(6, 2)\n"
CASES: list[tuple[str, list[str], Callable[[Path], None] | None]] = [
    # -- the command itself
    ("no-command", [], None),
    ("unknown-command", ["nope"], None),
    ("json-without-command", ["--json"], None),
    ("strategies-extra-argument", ["strategies", "extra"], None),
    ("strategies-unknown-flag", ["strategies", "--bogus"], None),
    # -- build: model flags and spec values
    ("build-unknown-skip", ["build", "--skip", "residual"], None),
    ("build-empty-skip-list", ["build", "--skip", ","], None),
    ("build-empty-name-inside", ["build", "--skip", "add,,plain"], None),
    ("build-empty-name-first", ["build", "--skip", ",add"], None),
    ("build-empty-name-last", ["build", "--skip", "add,"], None),
    ("build-negative-depth", ["build", "--depth", "-1"], None),
    ("build-depth-not-integer", ["build", "--depth", "two"], None),
    ("build-zero-width", ["build", "--width", "0"], None),
    ("build-unknown-model", ["build", "--model", "rnn"], None),
    ("build-unknown-norm", ["build", "--norm", "group"], None),
    ("build-unknown-activation", ["build", "--activation", "swish-ish"], None),
    ("build-unknown-init", ["build", "--init", "xavier-ish"], None),
    ("build-odd-width-concat-half", ["build", "--skip", "concat-half", "--width", "7"], None),
    ("build-growth-without-dense", ["build", "--skip", "add", "--growth", "4"], None),
    ("build-even-kernel", ["build", "--model", "cnn1d", "--kernel-size", "4"], None),
    ("build-cnn2d-1d-shape", ["build", "--model", "cnn2d", "--input-shape", "1,8"], None),
    ("build-shape-not-integers", ["build", "--input-shape", "a,b"], None),
    ("build-concat-double-too-deep", ["build", "--skip", "concat-double", "--depth", "30"], None),
    ("build-zero-classes", ["build", "--classes", "0"], None),
    ("build-negative-aux-every", ["build", "--aux-every", "-1"], None),
    ("build-unknown-flag", ["build", "--unknown-flag"], None),
    # -- cost
    ("cost-both-budgets", ["cost", "--params", "1000", "--flops", "1000"], None),
    ("cost-bad-depth-range", ["cost", "--depths", "x..y"], None),
    ("cost-descending-depths", ["cost", "--depths", "5..1"], None),
    ("cost-zero-batch", ["cost", "--batch", "0"], None),
    ("cost-unreachable-budget", ["cost", "--params", "10"], None),
    ("cost-unknown-vary", ["cost", "--params", "100000", "--vary", "depth"], None),
    # -- gradients
    ("gradients-zero-seeds", ["gradients", "--seeds", "0"], None),
    ("gradients-zero-batch-size", ["gradients", "--batch-size", "0"], None),
    ("gradients-negative-steps", ["gradients", "--steps", "-1"], None),
    ("gradients-unknown-dataset", ["gradients", "--dataset", "nope"], None),
    ("gradients-plot-format", ["gradients", "--plot", "{d}/g.bmp"], None),
    ("gradients-missing-data-file", ["gradients", "--dataset", "{d}/missing.npz"], None),
    # -- train: flags, and what pre-flight finds before any run starts
    ("train-cuda-without-cuda", TRAIN + ["--device", "cuda"], None),
    ("train-unknown-device", TRAIN + ["--device", "tpu"], None),
    ("train-input-shape-misfit", TRAIN + ["--input-shape", "1,8,8"], None),
    ("train-cnn-shape-misfit", TRAIN + ["--dataset", "digits", "--model", "cnn1d", "--input-shape", "1,40"], None),
    ("train-too-few-classes", TRAIN + ["--classes", "3"], None),
    ("train-empty-skip-name", TRAIN + ["--skip", "add,,plain"], None),
    ("train-zero-seeds", TRAIN + ["--seeds", "0"], None),
    ("train-zero-epochs", TRAIN + ["--epochs", "0"], None),
    ("train-zero-lr", TRAIN + ["--lr", "0"], None),
    ("train-negative-weight-decay", TRAIN + ["--weight-decay", "-1"], None),
    ("train-zero-batch-size", TRAIN + ["--batch-size", "0"], None),
    ("train-unknown-optimizer", TRAIN + ["--optimizer", "lbfgs"], None),
    ("train-both-budgets", TRAIN + ["--params", "1000", "--flops", "1000"], None),
    ("train-unreachable-budget", TRAIN + ["--params", "10"], None),
    ("train-zero-workers", TRAIN + ["--workers", "0"], None),
    ("train-growth-without-dense", TRAIN + ["--growth", "4"], None),
    ("train-unknown-dataset", TRAIN + ["--dataset", "nope"], None),
    ("train-missing-npz", TRAIN + ["--dataset", "{d}/missing.npz"], None),
    ("train-missing-csv", TRAIN + ["--dataset", "{d}/missing.csv"], None),
    ("train-npz-not-a-zip", TRAIN + ["--dataset", "{d}/data.npz"], _write("data.npz", b"garbage" * 50)),
    ("train-npz-wrong-keys", TRAIN + ["--dataset", "{d}/data.npz"], _npz(a=X, b=Y)),
    ("train-npz-length-mismatch", TRAIN + ["--dataset", "{d}/data.npz"], _npz(x=X, y=Y[:30])),
    ("train-npz-one-class", TRAIN + ["--dataset", "{d}/data.npz"], _npz(x=X, y=np.zeros(40, int))),
    ("train-npz-nan", TRAIN + ["--dataset", "{d}/data.npz"], _npz(x=np.full((40, 6), np.nan), y=Y)),
    ("train-npz-float-labels", TRAIN + ["--dataset", "{d}/data.npz"], _npz(x=X, y=Y + 0.5)),
    ("train-csv-empty", TRAIN + ["--dataset", "{d}/d.csv"], _write("d.csv", "")),
    ("train-csv-header-only", TRAIN + ["--dataset", "{d}/d.csv"], _write("d.csv", "a,b,label\n")),
    ("train-csv-no-label-column", TRAIN + ["--dataset", "{d}/d.csv"], _write("d.csv", "a,b\n1,2\n3,4\n")),
    ("train-csv-other-label-column", TRAIN + ["--dataset", "{d}/d.csv", "--label-column", "y"],
     _write("d.csv", "a,b,label\n1,2,0\n3,4,1\n")),
    ("train-csv-text-feature", TRAIN + ["--dataset", "{d}/d.csv"],
     _write("d.csv", "a,label\n" + "".join(f"x{i},{i % 2}\n" for i in range(20)))),
    ("train-csv-ragged-row", TRAIN + ["--dataset", "{d}/d.csv"], _write("d.csv", "a,b,label\n1,2,0\n3,1\n")),
    ("train-csv-not-utf8", TRAIN + ["--dataset", "{d}/d.csv"], _write("d.csv", b"a,label\n\xff\xfe,1\n")),
    ("train-corrupt-store", TRAIN, _corrupt_store),
    # -- study
    ("study-cuda-without-cuda", ["study", "--device", "cuda", "--out", "{d}/out"], None),
    ("study-quick-cuda-without-cuda", ["study", "--quick", "--device", "cuda", "--out", "{d}/out"], None),
    ("study-unknown-device", ["study", "--device", "tpu", "--out", "{d}/out"], None),
    ("study-zero-workers", ["study", "--workers", "0", "--out", "{d}/out"], None),
    ("study-corrupt-store", ["study", "--quick", "--out", "{d}/out"], _corrupt_store),
    # -- report and runs: stores
    ("report-missing-store", ["report", "--out", "{d}/out"], None),
    ("report-corrupt-store", ["report", "--out", "{d}/out"], _corrupt_store),
    ("runs-no-action", ["runs"], None),
    ("runs-unknown-action", ["runs", "frobnicate"], None),
    ("runs-list-missing-store", ["runs", "list", "--out", "{d}/out"], None),
    ("runs-list-corrupt-store", ["runs", "list", "--out", "{d}/out"], _corrupt_store),
    ("runs-export-missing-store", ["runs", "export", "--out", "{d}/out", "--csv", "{d}/x.csv"], None),
    ("runs-export-no-csv-flag", ["runs", "export", "--out", "{d}/out"], _empty_store),
    ("runs-export-into-missing-folder", ["runs", "export", "--out", "{d}/out", "--csv", "{d}/no/x.csv"],
     _empty_store),
    ("runs-export-tensorboard-missing-store", ["runs", "export", "--out", "{d}/out", "--tensorboard", "{d}/tb"], None),
    ("runs-export-mlflow-missing-store", ["runs", "export", "--out", "{d}/out", "--mlflow", "{d}/ml"], None),
    ("runs-export-tensorboard-under-a-file", ["runs", "export", "--out", "{d}/out", "--tensorboard", "{d}/f/tb"],
     _both(_empty_store, _write("f", "a file, not a folder"))),
    ("runs-export-mlflow-under-a-file", ["runs", "export", "--out", "{d}/out", "--mlflow", "{d}/f/ml"],
     _both(_empty_store, _write("f", "a file, not a folder"))),
    ("runs-export-mlflow-network-uri", ["runs", "export", "--out", "{d}/out", "--mlflow", "http://localhost:5000"],
     _empty_store),
    ("runs-export-experiment-without-mlflow", ["runs", "export", "--out", "{d}/out", "--csv", "{d}/x.csv",
                                               "--experiment", "e"], _empty_store),
    # -- runs export: each target checked before any is written, and before MLflow is imported (issue 24)
    ("runs-export-mlflow-sqlite-folder", EXPORT + ["--mlflow", "sqlite:///{d}/ml"], _both(_empty_store, _folder("ml"))),
    ("runs-export-mlflow-sqlite-text-file", EXPORT + ["--mlflow", "sqlite:///{d}/notes.txt"],
     _both(_empty_store, _write("notes.txt", "a text file, not a database\n" * 3))),
    ("runs-export-mlflow-sqlite-short-file", EXPORT + ["--mlflow", "sqlite:///{d}/m.db"],
     _both(_empty_store, _write("m.db", "SQLite"))),
    ("runs-export-mlflow-sqlite-the-store", EXPORT + ["--mlflow", "sqlite:///{d}/out/runs.db"], _empty_store),
    ("runs-export-mlflow-folder-text-db", EXPORT + ["--mlflow", "{d}/ml"],
     _both(_empty_store, _folder("ml"), _write("ml/mlflow.db", "not a database"))),
    ("runs-export-mlflow-bare-word", EXPORT + ["--mlflow", "databricks"], _empty_store),
    ("runs-export-mlflow-bare-word-a-file", EXPORT + ["--mlflow", "notes.txt"],
     _both(_empty_store, _write("notes.txt", "text"))),
    ("runs-export-mlflow-sqlite-missing-folders", EXPORT + ["--mlflow", "sqlite:///{d}/no/such/dir/m.db"],
     _empty_store),
    ("runs-export-mlflow-sqlite-relative-missing-folder", EXPORT + ["--mlflow", "sqlite:///no/m.db"], _empty_store),
    ("runs-export-mlflow-folder-missing-parent", EXPORT + ["--mlflow", "{d}/no/such/ml"], _empty_store),
    ("runs-export-mlflow-file-uri-missing-parent", EXPORT + ["--mlflow", "file://{d}/no/such/ml"], _empty_store),
    ("runs-export-experiment-empty", EXPORT + ["--mlflow", "{d}/ml", "--experiment", ""], _empty_store),
    ("runs-export-experiment-blank", EXPORT + ["--mlflow", "{d}/ml", "--experiment", " \t "], _empty_store),
    ("runs-export-csv-then-bad-mlflow", EXPORT + ["--csv", "{d}/x.csv", "--mlflow", "databricks"], _empty_store),
    ("runs-export-tensorboard-then-bad-mlflow", EXPORT + ["--tensorboard", "{d}/tb", "--mlflow", "{d}/no/ml"],
     _empty_store),
    ("runs-export-csv-is-a-folder", EXPORT + ["--csv", "{d}/x"], _both(_empty_store, _folder("x"))),
    ("runs-export-csv-onto-the-store", EXPORT + ["--csv", "{d}/out/runs.db"], _empty_store),
    ("runs-export-tensorboard-missing-parent", EXPORT + ["--tensorboard", "{d}/no/such/tb"], _empty_store),
    ("runs-export-tensorboard-is-a-file", EXPORT + ["--tensorboard", "{d}/tb"], _both(_empty_store, _write("tb", "x"))),
    # -- sweep: files and flags
    ("sweep-missing-file", SWEEP, None),
    ("sweep-not-toml", SWEEP, _sweep("[grid\nskip = ")),
    ("sweep-unknown-table", SWEEP, _sweep(GOOD_SWEEP + "[extra]\nx = 1\n")),
    ("sweep-key-outside-table", SWEEP, _sweep("seeds = 2\n" + GOOD_SWEEP)),
    ("sweep-unknown-grid-key", SWEEP, _good_sweep_with("grid", "colour = 'red'")),
    ("sweep-unknown-skip", SWEEP, _sweep(GOOD_SWEEP.replace('skip = "add"', 'skip = ["add", "resnet"]'))),
    ("sweep-zero-seeds", SWEEP, _sweep(GOOD_SWEEP.replace("seeds = 1", "seeds = 0"))),
    ("sweep-zero-epochs", SWEEP, _sweep(GOOD_SWEEP.replace("epochs = 1", "epochs = 0"))),
    ("sweep-both-budgets", SWEEP, _good_sweep_with("grid", "params = 1000\nflops = 1000")),
    ("sweep-vary-without-budget", SWEEP, _good_sweep_with("grid", "vary = 'width'")),
    ("sweep-missing-dataset", SWEEP, _sweep(GOOD_SWEEP.replace('"digits"', '"{d}/missing.npz"'))),
    ("sweep-cuda-without-cuda", SWEEP, _good_sweep_with("train", "device = 'cuda'")),
    ("sweep-input-shape-misfit", SWEEP, _good_sweep_with("grid", "input_shape = [1, 40]")),
    ("sweep-too-few-classes", SWEEP, _good_sweep_with("grid", "classes = 3")),
    ("sweep-bad-resources", SWEEP, _sweep(GOOD_SWEEP + "[resources]\nnum_cpus = 0\n")),
    ("sweep-zero-workers", SWEEP + ["--workers", "0"], _sweep(GOOD_SWEEP)),
    ("sweep-address-without-ray", SWEEP + ["--address", "auto"], _sweep(GOOD_SWEEP)),
    ("sweep-unknown-backend", SWEEP + ["--backend", "slurm"], _sweep(GOOD_SWEEP)),
    ("sweep-corrupt-store", SWEEP, _both(_sweep(GOOD_SWEEP), _corrupt_store)),
    # strategy options a grid's strategies do not take: the command line's rule (issue 24)
    ("sweep-growth-on-add", SWEEP, _good_sweep_with("grid", "growth = 4")),
    ("sweep-streams-on-add", SWEEP, _good_sweep_with("grid", "streams = 2")),
    ("sweep-memory-on-add-and-plain", SWEEP,
     _sweep(GOOD_SWEEP.replace('skip = "add"', 'skip = ["add", "plain"]\nmemory = "efficient"'))),
    ("sweep-vary-growth-on-add", SWEEP, _good_sweep_with("grid", "params = 5000\nvary = 'growth'")),
    ("sweep-negative-vocab", SWEEP, _good_sweep_with("grid", "vocab = -3")),
    # -- the transformer family (issue 13): each refused before any training
    ("transformer-heads-not-dividing-width", ["build", "--model", "transformer", "--width", "30", "--heads", "4"], None),
    ("transformer-dense-growth-not-divisible", ["build", "--model", "transformer", "--skip", "dense",
                                                "--growth", "6"], None),
    ("transformer-post-norm-with-hyper", ["cost", "--model", "transformer", "--skip", "hyper",
                                          "--placement", "post"], None),
    ("transformer-heads-on-mlp", ["build", "--model", "mlp", "--heads", "2"], None),
    ("transformer-context-longer-than-text", TRAIN_T + ["--dataset", "{d}/short.txt", "--context", "4096"],
     _write("short.txt", "the quick brown fox jumps over the lazy dog. " * 60)),
    ("transformer-context-longer-than-sequence", TRAIN_T + ["--dataset", "mnist1d", "--context", "64"], None),
    ("transformer-vocab-mismatch", TRAIN_T + ["--dataset", "pydoc", "--vocab", "50"], None),
    ("transformer-classes-not-vocab", TRAIN_T + ["--dataset", "pydoc", "--classes", "7"], None),
    ("text-dataset-without-sequence-model", TRAIN + ["--dataset", "pydoc"], None),
    ("transformer-on-images", TRAIN_T + ["--dataset", "digits"], None),
    ("text-empty-file", TRAIN_T + ["--dataset", "{d}/empty.txt"], _write("empty.txt", "")),
    ("text-binary-file", TRAIN_T + ["--dataset", "{d}/bin.txt"], _write("bin.txt", bytes(range(256)) * 20)),
    ("text-too-short", TRAIN_T + ["--dataset", "{d}/tiny.txt"], _write("tiny.txt", "hello world")),
    ("study-unknown-family-plan", ["study", "--model", "cnn2d", "--out", "{d}/out"], None),
    ("transformer-vocab-zero-on-text", TRAIN_T + ["--dataset", "pydoc", "--vocab", "0"], None),
    ("transformer-negative-vocab", TRAIN_T + ["--dataset", "pydoc", "--vocab", "-3"], None),
    ("build-negative-vocab", ["build", "--vocab", "-3"], None),
    ("cost-negative-vocab", ["cost", "--model", "transformer", "--vocab", "-3"], None),
    # -- values with a sign: refused for the sign, not read as an unknown flag (issue 24)
    ("build-negative-input-shape", ["build", "--input-shape", "-3,32,32"], None),
    ("train-negative-input-shape", TRAIN + ["--input-shape", "-3,32,32"], None),
    ("gradients-negative-size-inside-shape", ["gradients", "--model", "cnn2d", "--input-shape", "3,-32,32"], None),
    ("cost-negative-depth-range", ["cost", "--depths", "-1..5"], None),
    ("profile-negative-input-shape", PROFILE + ["--input-shape", "-3,32,32"], _write("m.py", MODEL_FILE)),
    ("profile-negative-vocab", PROFILE + ["--input-shape", "6", "--dtype", "int64", "--vocab", "-3"],
     _write("m.py", MODEL_FILE)),
    ("runs-compare-negative-margin", ["runs", "compare", "{d}/out", "{d}/out", "--margin", "-1e-3"], _empty_store),
    # -- experiment
    ("experiment-unknown-name", ["experiment", "nope", "--out", "{d}/out"], None),
    ("experiment-zero-workers", ["experiment", "rezero", "--workers", "0", "--out", "{d}/out"], None),
    ("experiment-no-name", ["experiment", "--quick", "--out", "{d}/out"], None),
    ("experiment-missing-data-file", ["experiment", "rezero", "--quick", "--dataset", "{d}/missing.npz",
                                      "--out", "{d}/out"], None),
    ("experiment-unknown-dataset", ["experiment", "equivalence", "--quick", "--dataset", "nope",
                                    "--out", "{d}/out"], None),
    ("experiment-corrupt-store", ["experiment", "rezero", "--quick", "--out", "{d}/out"], _corrupt_store),
]


# The key part of the one line, for the cases where a message once misled or was a traceback
# (issue 24): each names the value at fault and what would be right.
WORDING = {
    "runs-export-mlflow-sqlite-folder": "/ml is a folder, not a database file",
    "runs-export-mlflow-sqlite-text-file": "notes.txt is not an SQLite database",
    "runs-export-mlflow-sqlite-short-file": "m.db is not an SQLite database",
    "runs-export-mlflow-sqlite-the-store": "runs.db is an SQLite database but not MLflow's",
    "runs-export-mlflow-folder-text-db": "mlflow.db is not an SQLite database",
    "runs-export-mlflow-bare-word": "--mlflow 'databricks': no folder of that name here, and not a URI; give "
                                    "sqlite:///FILE.db, a file: URI, or a folder (./databricks makes a new folder)",
    "runs-export-mlflow-bare-word-a-file": "is a file, not a folder",
    "runs-export-mlflow-sqlite-missing-folders": "/no/such/dir does not exist; create it first",
    "runs-export-mlflow-sqlite-relative-missing-folder": "the folder no does not exist",
    "runs-export-mlflow-folder-missing-parent": "/no/such does not exist",
    "runs-export-mlflow-file-uri-missing-parent": "/no/such does not exist",
    "runs-export-experiment-empty": "--experiment: an experiment needs a name, got ''",
    "runs-export-experiment-blank": "--experiment: an experiment needs a name, got ' \\t '",
    "runs-export-csv-then-bad-mlflow": "--mlflow 'databricks'",
    "runs-export-tensorboard-then-bad-mlflow": "/no does not exist",
    "runs-export-csv-is-a-folder": "is a folder; give a file name in it",
    "runs-export-csv-onto-the-store": "is the results store itself",
    "runs-export-tensorboard-missing-parent": "/no/such does not exist",
    "runs-export-tensorboard-is-a-file": "is a file, not a folder",
    "sweep-growth-on-add": "sweep: [grid] growth: only skip 'dense' uses it, not 'add'",
    "sweep-streams-on-add": "sweep: [grid] streams: only skips 'hyper', 'mhc', 'mhc-lite' use it, not 'add'",
    "sweep-memory-on-add-and-plain": "sweep: [grid] memory: only skips 'dense', ",
    "sweep-vary-growth-on-add": "sweep: [grid] vary: none of 'add' has a growth to vary",
    "sweep-negative-vocab": "vocab: must be an integer >= 0, got -3",
    "transformer-vocab-zero-on-text": "vocab: the dataset 'pydoc' is a token sequence of 103 symbols, but vocab 0",
    "transformer-negative-vocab": "vocab: must be an integer >= 0, got -3",
    "build-negative-vocab": "vocab: must be an integer >= 0, got -3",
    "cost-negative-vocab": "vocab: must be an integer >= 0, got -3",
    "build-negative-input-shape": "input_shape: sizes must be integers >= 1",
    "train-negative-input-shape": "input_shape: sizes must be integers >= 1",
    "gradients-negative-size-inside-shape": "input_shape: sizes must be integers >= 1",
    "cost-negative-depth-range": "depths: must be >= 0, got -1 in '-1..5'",
    "profile-negative-input-shape": "input_shape: sizes must be integers >= 1, got (-3, 32, 32)",
    "profile-negative-vocab": "vocab: token ids are drawn from [0, V): V must be an integer >= 1, got -3",
    "runs-compare-negative-margin": "--margin: expected a number > 0, got '-1e-3'",
}


def _files(d: Path) -> dict[str, str]:
    """Every file under ``d`` with a digest of its bytes, and every folder (an empty one
    made by mistake counts)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(d.rglob("*"))}


def test_enough_distinct_cases():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({tuple(c[1]) + (c[0] if c[2] else "",) for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES if c[1] and not c[1][0].startswith("-")}
    assert commands == {"strategies", "build", "cost", "gradients", "profile", "train", "study", "report", "runs",
                        "sweep", "experiment", "nope"}
    assert set(WORDING) <= {c[0] for c in CASES}


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name, argv, make", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch, no_cuda, name, argv,
                                                             make):
    monkeypatch.chdir(tmp_path)  # a relative path (--mlflow databricks) would be made here: seen, not missed
    if make:
        make(tmp_path)
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    before = _files(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err and out == "", (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("skiplab: error: "), err
    assert WORDING.get(name, "") in lines[0]
    assert _files(tmp_path) == before  # nothing stored, created or changed
    assert not (tmp_path / "out").exists() or before  # no empty store folder left behind either


# -- the pre-flight checks themselves, and the good calls next to the bad ones ----------
def test_preflight_checks_fit_and_device_before_any_run(monkeypatch):
    from skiplab.datasets import load_dataset
    from skiplab.fit import check_fits
    from skiplab.run.config import RunSpec, TrainConfig
    from skiplab.run.loop import preflight
    from skiplab.spec import ModelSpec, SpecError

    digits = load_dataset("digits")  # (1, 8, 8), 10 classes
    check_fits(ModelSpec(model="mlp", input_shape=(64,), classes=10), digits)  # an MLP flattens: same features
    check_fits(ModelSpec(model="mlp", input_shape=(1, 8, 8), classes=12), digits)  # spare outputs are harmless
    with pytest.raises(SpecError, match=r"input_shape: the model expects 1,40, the dataset 'digits' gives 1,8,8"):
        check_fits(ModelSpec(model="cnn1d", input_shape=(1, 40)), digits)
    with pytest.raises(SpecError, match=r"classes: the model has 3 outputs, the dataset 'digits' has 10 classes"):
        check_fits(ModelSpec(model="mlp", input_shape=(1, 8, 8), classes=3), digits)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = RunSpec(ModelSpec(model="mlp", input_shape=(1, 8, 8)), TrainConfig(device="cuda"), "digits")
    with pytest.raises(SpecError, match="device: cuda was asked for but torch sees no CUDA device"):
        preflight([run])
    preflight([run], device=False)  # runs bound for a cluster: its devices are not this machine's
    loads = []
    preflight([RunSpec(run.model, seed=s, dataset="digits") for s in range(3)],
              load=lambda *key: loads.append(key) or digits)
    assert loads == [("digits", "label")]  # each dataset loaded once


def test_study_takes_device_and_it_is_not_part_of_identity(monkeypatch, capsys):
    import skiplab.cli.study as cli_study
    from skiplab.study import quick_plan

    seen = {}

    def fake_run_study(out, plan, **kwargs):
        seen["plan"] = plan
        return {"counts": {}, "runs": 0, "report": "r.html", "seconds": 0.0}

    monkeypatch.setattr(cli_study, "run_study", fake_run_study)
    monkeypatch.setattr(cli_study, "write_report_locked", lambda out: {"report.html": "r.html", "report.md": "r.md"})
    assert main(["study", "--quick", "--device", "auto", "--out", "unused"]) == 0
    capsys.readouterr()
    plan = seen["plan"]
    assert plan.train.device == "auto" and all(r.train.device == "auto" for r in plan.runs())
    assert [r.spec_hash for r in plan.runs()] == [r.spec_hash for r in quick_plan().runs()]


def test_train_keeps_the_classes_and_shape_the_user_gave(tmp_path, capsys):
    """Once overwritten by the dataset's; now kept when they fit (an MLP given digits' 64
    features flat, two spare outputs)."""
    code = main(["train", "--model", "mlp", "--depth", "1", "--width", "8", "--epochs", "1", "--seeds", "1",
                 "--workers", "1", "--dataset", "digits", "--classes", "12", "--input-shape", "64",
                 "--out", str(tmp_path), "--json"])
    capsys.readouterr()
    assert code == 0
    with Store(tmp_path, create=False) as store:
        (run,) = store.runs()
    assert run["status"] == "complete"
    assert run["spec"]["model"]["classes"] == 12 and tuple(run["spec"]["model"]["input_shape"]) == (64,)
