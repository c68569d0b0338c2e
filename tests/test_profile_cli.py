"""``skiplab profile FILE.py:FACTORY`` and ``skiplab gradients FILE.py:FACTORY --blocks``:
the docs' example file (docs/profile.md) runs through the command line, and every bad input is one line
on stderr with exit code 2."""

import json
import pathlib
import textwrap

import pytest

from skiplab.cli import main

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "my_resnet.py"
SMALL = ["--input-shape", "3,8,8", "--batch", "2"]


def test_example_file_through_the_cli(capsys):
    assert main(["profile", f"{EXAMPLE}:make_model", *SMALL, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    stages = [m for m in d["modules"] if m["name"] in ("stages.0", "stages.1", "stages.2")]
    # six residual adds, one per basic block, each B x C x H x W
    adds = 2 * (2 * 16 * 8 * 8 + 2 * 32 * 4 * 4 + 2 * 64 * 2 * 2)
    assert sum(m["merge_flops"] for m in stages) == d["total"]["merge_flops"] == adds
    assert d["total"]["params"] == sum(m["own"]["params"] for m in d["modules"])
    assert main(["profile", f"{EXAMPLE}:make_model", *SMALL, "--depth-group", "1", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "stages" in out and "(1 more)" in out and "total" in out


def _write(tmp_path, body):
    f = tmp_path / "net.py"
    f.write_text(textwrap.dedent(body))
    return f


MODELS = """
    import torch
    from torch import nn

    def good():
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    def broken():
        raise RuntimeError("no weights for you")

    def not_a_model():
        return 42

    def tokens():
        return nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))

    number = 3
"""


@pytest.mark.parametrize("argv, message", [
    (["missing.py:good", "--input-shape", "4"], "missing.py: no such file"),
    (["{f}:absent", "--input-shape", "4"], "has no 'absent'; it defines broken, good, not_a_model, tokens"),
    (["{f}", "--input-shape", "4"], "give the model as FILE.py:FACTORY"),
    (["{f}:broken", "--input-shape", "4"], "the factory raised RuntimeError: no weights for you"),
    (["{f}:not_a_model", "--input-shape", "4"], "returned an int, not a torch.nn.Module"),
    (["{f}:number", "--input-shape", "4"], "'number' is an int, not a callable"),
    (["{f}:good", "--input-shape", "5"], "the model rejects an input of shape (32, 5) float32: RuntimeError: mat1 and mat2"),
    (["{f}:good", "--input-shape", "4,x"], "'4,x' is not comma-separated integers"),
    (["{f}:good", "--input-shape", "0"], "input_shape: sizes must be integers >= 1"),
    # a size with a sign is a value to refuse for its sign, not an unknown flag ("expected one argument")
    (["{f}:good", "--input-shape", "-3,32,32"], "input_shape: sizes must be integers >= 1, got (-3, 32, 32)"),
    (["{f}:good", "--input-shape", "-4"], "input_shape: sizes must be integers >= 1, got (-4,)"),
    (["{f}:good", "--input-shape=-3,32,32"], "input_shape: sizes must be integers >= 1, got (-3, 32, 32)"),
    (["{f}:tokens", "--input-shape", "6", "--dtype", "int64", "--vocab", "-3"],
     "vocab: token ids are drawn from [0, V): V must be an integer >= 1, got -3"),
    (["{f}:good"], "the following arguments are required: --input-shape"),
    (["{f}:tokens", "--input-shape", "6", "--dtype", "int64"], "--vocab V"),
    (["{f}:tokens", "--input-shape", "6", "--vocab", "10"], "token ids need an integer dtype"),
    (["{f}:good", "--input-shape", "4", "--batch", "0"], "batch: must be an integer >= 1"),
    (["{f}:good", "--input-shape", "4", "--top", "0"], "--top: must be >= 1"),
])
def test_profile_bad_input_is_one_line(tmp_path, capsys, argv, message):
    f = _write(tmp_path, MODELS)
    assert main(["profile", *(a.format(f=f) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skiplab: error: ") and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err


def test_profile_token_model_and_import_error(tmp_path, capsys):
    f = _write(tmp_path, MODELS)
    assert main(["profile", f"{f}:tokens", "--input-shape", "6", "--dtype", "int64", "--vocab", "10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["inputs"] == [{"shape": [32, 6], "dtype": "int64"}] and d["total"]["params"] == 40 + 50
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_anywhere\n")
    assert main(["profile", f"{bad}:make", "--input-shape", "4"]) == 2
    assert "importing it raised ModuleNotFoundError" in capsys.readouterr().err


def test_a_user_file_that_calls_sys_exit_is_one_line_and_exit_2(tmp_path, capsys):
    # SystemExit is no Exception: it ended skiplab with the script's code and said nothing
    script = tmp_path / "script.py"
    script.write_text("import sys\nsys.exit(4)\n")
    assert main(["profile", f"{script}:make", "--input-shape", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{script}: importing it called sys.exit(4)" in err, err
    factory = _write(tmp_path, "def make():\n    raise SystemExit(3)\n")
    assert main(["profile", f"{factory}:make", "--input-shape", "4"]) == 2
    assert f"{factory}:make: the factory called sys.exit(3)" in capsys.readouterr().err
    assert main(["profile", f"{tmp_path}:make", "--input-shape", "4"]) == 2  # a folder, not a file
    assert f"{tmp_path}: is a folder; give the model as FILE.py:FACTORY" in capsys.readouterr().err


# -- skiplab gradients on a model from a file ----------------------------------------------
DEEP = """
    from torch import nn

    class Net(nn.Module):
        def __init__(self, residual):
            super().__init__()
            self.residual = residual
            self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(6))
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            for layer in self.layers:
                x = x + layer(x) if self.residual else layer(x)
            return self.head(x)

    def plain():
        return Net(False)

    def residual():
        return Net(True)
"""


def test_gradients_on_a_model_from_a_file(tmp_path, capsys):
    f = _write(tmp_path, DEEP)
    ratios = {}
    for name in ("plain", "residual"):
        assert main(["gradients", f"{f}:{name}", "--blocks", "layers.*", "--input-shape", "8",
                     "--seeds", "2", "--batches", "1", "--batch-size", "16", "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["blocks"] == [f"layers.{i}" for i in range(6)] and len(d["weight_grad_norm"]) == 6
        assert all(lo <= m <= hi for lo, m, hi in zip(d["weight_grad_norm_min"], d["weight_grad_norm"],
                                                     d["weight_grad_norm_max"]))
        ratios[name] = d["first_last_ratio"]
    # the residual net passes the gradient to its first block better than the plain one
    assert ratios["residual"] > ratios["plain"]
    assert main(["gradients", f"{f}:residual", "--blocks", "layers.*", "--input-shape", "8",
                 "--seeds", "1", "--batches", "1", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "layers.5" in out and "first/last = " in out


def test_block_norm_is_the_norm_of_all_its_parameter_gradients(tmp_path):
    import math
    import torch
    from skiplab.block_gradients import block_gradients
    from skiplab.user_model import load_model
    f = _write(tmp_path, DEEP)
    r = block_gradients(lambda seed: load_model(f"{f}:residual", seed=seed),
                        lambda seed, i: torch.randn(4, 8, generator=torch.Generator().manual_seed(seed)),
                        "layers.*", seeds=1, batches=1)
    # the reference: the same model, batch and random labels, by hand
    model = load_model(f"{f}:residual", seed=0).train()
    logits = model(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)))
    labels = torch.randint(0, 4, (4,), generator=torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(logits, labels).backward()
    want = [math.sqrt(sum(float(p.grad.double().square().sum()) for p in layer.parameters()))
            for layer in model.layers]
    assert r.weight_grad_norm.mean == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("argv, message", [
    (["{f}:residual", "--input-shape", "8"], "--blocks: say which modules are the blocks"),
    (["{f}:residual", "--blocks", "layer.*", "--input-shape", "8"], "no module matches 'layer.*'; the model's "
                                                                      "children are layers, head"),
    (["{f}:residual", "--blocks", "layers.*"], "--input-shape: give the per-sample input shape"),
    (["{f}:residual", "--blocks", "layers.*", "--input-shape", "8", "--steps", "3"], "--steps: only for skiplab's"),
    (["{f}:residual", "--blocks", "layers.*.1", "--input-shape", "8"], "hold no trainable parameters"),
    (["{f}:residual", "--blocks", "layers.*", "--input-shape", "7"], "the model rejects an input of shape"),
    (["--blocks", "layers.*"], "--blocks: applies to a model from a file"),
    (["{f}:nothing", "--blocks", "layers.*", "--input-shape", "8"], "has no 'nothing'"),
])
def test_gradients_bad_input_is_one_line(tmp_path, capsys, argv, message):
    f = _write(tmp_path, DEEP)
    assert main(["gradients", *(a.format(f=f) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skiplab: error: ") and err.count("\n") == 1 and message in err, err
