"""The command line: good calls give the documented JSON; bad input gives exit code 2
and exactly one line ``skiplab: error: ...`` on stderr, never a traceback."""

import json
import subprocess
import sys

import pytest

from skiplab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_strategies_json(capsys):
    code, out, _ = run(capsys, "strategies", "--json")
    data = json.loads(out)
    assert code == 0 and [d["skip"] for d in data][:2] == ["plain", "add"] and len(data) == 13  # mhc-lite the 13th
    assert all(d["summary"] and d["source"] for d in data)


def test_strategies_table(capsys):
    code, out, _ = run(capsys, "strategies")
    assert code == 0 and "concat-half" in out and "ResNet" in out


def test_build_json_for_the_questions_example(capsys):
    code, out, _ = run(capsys, "build", "--model", "mlp", "--depth", "9", "--width", "100", "--norm", "none",
                       "--skip", "plain,add,dense", "--no-bias", "--json")
    data = {d["skip"]: d for d in json.loads(out)}
    assert code == 0
    assert [data[s]["params"]["blocks"] for s in ("plain", "add", "dense")] == [90_000, 90_000, 450_000]
    dense = data["dense"]
    assert set(dense["params"]) == {"stem", "blocks", "head", "aux", "total"}
    assert dense["per_block"][8] == {"block": 9, "name": "block 9", "params": 90_000, "in_width": 900, "features": 100,
                                     "out_width": 1000}


def test_build_table_cnn2d_growth(capsys):
    code, out, _ = run(capsys, "build", "--model", "cnn2d", "--depth", "2", "--width", "4",
                       "--skip", "dense,add", "--growth", "2", "--norm", "batch", "--input-shape", "3,6,9")
    assert code == 0 and "block 2" in out and "summary" in out and "4 -> 6 (+2 new)" in out


@pytest.mark.parametrize("argv", [
    [],
    ["nope"],
    ["build", "--skip", "residual"],
    ["build", "--skip", ","],
    ["build", "--depth", "-1"],
    ["build", "--depth", "two"],
    ["build", "--width", "0"],
    ["build", "--model", "rnn"],
    ["build", "--norm", "group"],
    ["build", "--skip", "concat-half", "--width", "7"],
    ["build", "--skip", "add", "--growth", "4"],
    ["build", "--model", "cnn1d", "--kernel-size", "4"],
    ["build", "--model", "cnn2d", "--input-shape", "1,8"],
    ["build", "--input-shape", "a,b"],
    ["build", "--skip", "concat-double", "--depth", "30"],
    ["build", "--unknown-flag"],
    ["strategies", "extra"],
    ["study", "--model", "resnet"],  # a family with no study plan is not offered (--help listed all five)
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("skiplab: error: "), err


def test_python_dash_m_no_traceback():
    r = subprocess.run([sys.executable, "-m", "skiplab", "build", "--depth", "-3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "skiplab: error: depth: must be an integer >= 0, got -3"
    r = subprocess.run([sys.executable, "-m", "skiplab", "strategies", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 13  # mhc-lite the 13th


def test_study_help_offers_only_the_families_it_has_a_plan_for(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    assert "--model {mlp,transformer}" in capsys.readouterr().out


def test_output_into_a_pipe_whose_reader_has_gone_ends_quietly():
    # `skiplab build | head -1`: the reader closed its end; exit as a shell tool killed by
    # SIGPIPE does (128 + 13), with no 'internal error' line and no log (it is no bug)
    for argv in (["build", "--depth", "3", "--width", "4"], ["build", "--depth", "30", "--width", "4", "--json"]):
        p = subprocess.Popen([sys.executable, "-m", "skiplab", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        p.stdout.close()  # before the command writes anything: its writes all fail
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 141 and err == "", err
        p.stderr.close()


@pytest.mark.parametrize("argv, message", [
    (["build", "--skip", "hyper", "--streams", "0"], "skiplab: error: streams: must be an integer >= 1, got 0"),
    (["build", "--skip", "add", "--streams", "4"],
     "skiplab: error: --streams: only skips 'hyper', 'mhc', 'mhc-lite' use it, not 'add'; add one to --skip or drop --streams"),
    (["build", "--skip", "add", "--growth", "4"],
     "skiplab: error: --growth: only skip 'dense' uses it, not 'add'; add one to --skip or drop --growth"),
    (["cost", "--skip", "mhc", "--iterations", "0"], "skiplab: error: iterations: must be an integer >= 1, got 0"),
])
def test_strategy_option_flags_bad_input(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.strip() == message


def test_strategy_option_flags_reach_their_strategies(capsys):
    code, out, _ = run(capsys, "build", "--skip", "dense,hyper,mhc", "--growth", "4", "--streams", "2", "--static",
                       "--iterations", "3", "--json")
    got = {d["skip"]: d["options"] for d in json.loads(out)}
    assert code == 0 and got == {"dense": {"growth": 4}, "hyper": {"static": True, "streams": 2},
                                 "mhc": {"iterations": 3, "streams": 2}}
