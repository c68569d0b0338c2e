"""Every Python example in the README runs as written.

An example that reads a results store (it names ``skiplab-out``, the default folder) runs
in a temporary folder holding a small store of made-up results
(:func:`skiplab.report.synthetic.synthetic_store`): the example shows the API, not the
numbers. Those examples need pandas (the ``pandas`` extra) and are skipped without it."""

import pathlib
import re

import pytest

from skiplab.report.synthetic import synthetic_store
from skiplab.study import StudyPlan
from skiplab.train import TrainConfig

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def store_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    plan = StudyPlan(skips=("plain", "add", "dense"), depths=(2, 8), seeds=2, train=TrainConfig(epochs=1, evals=3))
    synthetic_store(folder / "skiplab-out", plan).close()
    return folder


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, request, monkeypatch):
    if '"skiplab-out"' in code:
        pytest.importorskip("pandas", reason="the pandas extra is not installed: pip install 'skiplab[pandas]'")
        monkeypatch.chdir(request.getfixturevalue("store_folder"))
    exec(compile(code, str(README), "exec"), {})
