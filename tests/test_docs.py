"""The README and the documentation site (docs/, mkdocs.yml).

Quick tests:

- Every ```` ```python ```` block of the README and of every page under docs/ runs as written,
  each in a fresh namespace. A block that reads a results store (it names ``"skiplab-out"``,
  the default folder) runs in a temporary folder holding a small store of made-up results
  (:func:`skiplab.report.synthetic.synthetic_store`): it shows the API, not the numbers;
  those need pandas (the ``pandas`` extra) and are skipped without it. A block whose first
  line is ``# illustrative`` (it needs a GPU, a cluster or a download, or is a fragment) is
  only compiled: the convention is stated on the site's home page.
- Every strategy in the registry and every family has its page, and the page is in the nav
  (the registries are asked, not a list of names); every nav entry exists.
- The README stays short, keeps the two set-up commands CI relies on, and its links resolve.
- ``skiplab report --format docs`` writes a result page that names the machine, the command
  and the date, labels a ``--quick`` store a smoke test, and lists the page in the index.

Slow (``-m slow``): ``mkdocs build --strict`` into a temporary folder, then pages of the
built site opened in headless Chromium (Playwright, as ``tests/test_report_browser.py``;
never ``playwright install``), served from 127.0.0.1 with every other request refused: no
console errors, no page errors, every image decodes."""

import functools
import http.server
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest

from skiplab.cli import main
from skiplab.families import FAMILIES
from skiplab.report.content import load_report_data
from skiplab.report.docs import (LIST_END, LIST_START, default_title, header_lines, is_quick, page_text,
                                 study_command, update_index)
from skiplab.report.synthetic import synthetic_store
from skiplab.run.config import TrainConfig
from skiplab.skips import STRATEGIES
from skiplab.store import Store
from skiplab.study import StudyPlan

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ILLUSTRATIVE = "# illustrative"
REQUIRED = os.environ.get("SKIPLAB_REQUIRE_BROWSER") == "1"  # set by .ci/run: a skip there is a failure


def python_blocks() -> list[tuple[str, str]]:
    """(id, code) of every ```python block in the README and the docs' pages."""
    out = []
    for path in [README, *sorted(DOCS.rglob("*.md"))]:
        for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)):
            out.append((f"{path.relative_to(ROOT).as_posix()}:{i}", code))
    return out


BLOCKS = python_blocks()


def nav_pages() -> list[str]:
    """Every page the nav of mkdocs.yml names (read as text: the file's YAML uses no tags,
    but mkdocs' own loader is not needed to list ``name: page.md`` entries)."""
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1]
    return re.findall(r"^\s+- (?:[^\n:]+: )?([\w./-]+\.md)\s*$", nav, flags=re.M)


@pytest.fixture(scope="module")
def store_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    plan = StudyPlan(skips=("plain", "add", "dense"), depths=(2, 8), seeds=2, train=TrainConfig(epochs=1, evals=3))
    synthetic_store(folder / "skiplab-out", plan).close()
    return folder


# -- code blocks ------------------------------------------------------------------------
def test_there_are_blocks_in_the_readme_and_the_docs():
    where = {b.split(":")[0] for b, _ in BLOCKS}
    assert "README.md" in where and len(where) >= 5, where


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[b for b, _ in BLOCKS])
def test_python_block_runs(code, request, monkeypatch):
    where = request.node.callspec.id
    if code.startswith(ILLUSTRATIVE):
        compile(code, where, "exec")
        return
    if '"skiplab-out"' in code:
        pytest.importorskip("pandas", reason="the pandas extra is not installed: pip install 'skiplab[pandas]'")
        monkeypatch.chdir(request.getfixturevalue("store_folder"))
    exec(compile(code, where, "exec"), {})


# -- pages and nav ----------------------------------------------------------------------
@pytest.mark.parametrize("folder, names", [("strategies", STRATEGIES), ("families", FAMILIES)])
def test_every_strategy_and_family_has_a_page_in_the_nav(folder, names):
    nav = set(nav_pages())
    for name in names:
        page = f"{folder}/{name}.md"
        assert (DOCS / page).is_file(), f"no page for {name!r}: docs/{page}"
        assert page in nav, f"docs/{page} is not in mkdocs.yml's nav"
        assert f"`{name}`" in (DOCS / page).read_text().split("\n", 1)[0]  # its title names it


def test_every_nav_entry_exists_and_every_page_is_in_the_nav():
    nav = nav_pages()
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, missing
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    generated = {p for p in pages if re.fullmatch(r"results/[^/]+/index\.md", p)}  # listed by results/index.md
    assert pages - generated - set(nav) == set()


def test_design_page_replaces_design_md():
    """The source cites docs/design.md, not the design file that was never in the repository."""
    assert (DOCS / "design.md").is_file()
    gone = "DESIGN" + ".md"  # spelled so that this file does not cite it
    stale = [str(p.relative_to(ROOT)) for folder in ("skiplab", "tests", "benchmarks", "scripts", "examples")
             for p in (ROOT / folder).rglob("*.py") if gone in p.read_text()]
    assert not stale, stale


# -- the README -------------------------------------------------------------------------
def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 250


def test_readme_keeps_the_two_commands():
    text = README.read_text()
    setup = "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && "
    assert setup + ".venv/bin/pip install -e . && .venv/bin/skiplab study" in text
    # the test command .ci/run runs (`python -m pytest`, everything not marked slow)
    assert setup + ".venv/bin/pip install -e '.[test,tensorboard,mlflow,pandas]' && .venv/bin/python -m pytest" in text


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


# -- result pages -----------------------------------------------------------------------
def _store(path, command):
    plan = StudyPlan(skips=("plain", "add"), depths=(2, 8), seeds=2, train=TrainConfig(epochs=1, evals=3))
    store = synthetic_store(path, plan)
    if command is not None:
        store.set_meta("study_command", command)
    return store


def test_result_page_names_machine_command_and_date(tmp_path, capsys):
    """``skiplab report --format docs``: the page, its figures beside it, its line in the index."""
    _store(tmp_path / "full", "skiplab study --out full").close()
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    to = results / "full"
    assert main(["report", "--format", "docs", "--out", str(tmp_path / "full"), "--to", str(to),
                 "--title", "The full study"]) == 0
    assert capsys.readouterr().out.startswith(f"docs page: {to / 'index.md'}\n")
    text = (to / "index.md").read_text()
    assert text.startswith("# The full study\n")
    assert "- **Command**: `skiplab study --out full`" in text
    assert "- **Machine**: " in text and "- **Date**: runs from " in text
    assert "Smoke test" not in text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert figures and all((to / link).is_file() for link in figures), figures  # written beside the page
    index = (results / "index.md").read_text()
    assert f"{LIST_START}\n- [The full study](full/index.md)\n{LIST_END}" in index


def test_result_page_of_a_quick_store_is_a_smoke_test(tmp_path):
    """The page's text and the index, without drawing figures (the test above draws them)."""
    with _store(tmp_path / "q", "skiplab study --quick --out q") as store:
        data = load_report_data(store)
        command = study_command(store)
    assert is_quick(command) and not is_quick("skiplab study --out quick")
    text = page_text(data, (), tmp_path, default_title(data, True), command, True)
    assert text.startswith("# The mlp study (smoke test)\n")
    assert '!!! warning "Smoke test"' in text and "- **Command**: `skiplab study --quick --out q`" in text
    results = tmp_path / "results"
    (results / "q").mkdir(parents=True)
    (results / "q" / "index.md").write_text(text)
    (results / "index.md").write_text(f"# Mine\n\nkept\n\n{LIST_START}\n- old\n{LIST_END}\n\nafter\n")
    update_index(results)
    index = (results / "index.md").read_text()
    assert index == f"# Mine\n\nkept\n\n{LIST_START}\n- [The mlp study (smoke test)](q/index.md)\n{LIST_END}\n\nafter\n"


def test_result_page_without_a_recorded_command_says_so(tmp_path):
    with _store(tmp_path / "s", None) as store:
        data = load_report_data(store)
        assert study_command(store) is None
    assert "- **Command**: not recorded in the store" in "\n".join(header_lines(data, None, False))


def test_report_format_docs_bad_input(tmp_path, capsys):
    _store(tmp_path / "s", "skiplab study --out s").close()
    for argv, message in [(["--format", "docs"], "--format docs: name the page's folder with --to"),
                          (["--to", str(tmp_path / "r")], "--to: only with --format docs"),
                          (["--title", "T"], "--title: only with --format docs"),
                          (["--format", "docs", "--to", str(tmp_path / "bad name")], "--to must end in a page name"),
                          (["--format", "docs", "--to", str(tmp_path / "r" / "page")],
                           f"the folder {tmp_path / 'r'} does not exist; create it first")]:
        assert main(["report", "--out", str(tmp_path / "s"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("skiplab: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "bad name").exists()


def test_study_records_its_command(tmp_path, monkeypatch):
    """``skiplab study`` stores the command line it was given (here with the plan cut down
    to one tiny configuration, so that the test trains for a second, not a minute)."""
    import skiplab.cli.study as cli_study

    tiny = StudyPlan(skips=("add",), depths=(1,), seeds=1, budget_params=None,
                     train=TrainConfig(epochs=1, evals=1))
    monkeypatch.setattr(cli_study, "plan_for", lambda model, quick, preset=None: tiny)
    out = tmp_path / "out"
    assert main(["study", "--quick", "--out", str(out), "--workers", "1", "--json"]) == 0
    with Store(out, create=False) as store:
        assert store.meta("study_command") == f"skiplab study --quick --out {out} --workers 1 --json"


# -- the built site in a browser (slow) -------------------------------------------------
PAGES = ["index.html", "getting-started/index.html", "strategies/index.html", "strategies/dense/index.html",
         "families/transformer/index.html", "cost/index.html", "design/index.html", "api/skips/index.html",
         "results/quick-study/index.html", "study/index.html"]


@pytest.mark.slow
def test_site_builds_strictly_and_opens_in_chromium(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install 'skiplab[docs]'")
    from skiplab.report.browser import CHROMIUM, CHROMIUM_ARGS, browser_missing

    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    pages = [p for p in PAGES if (site / p).is_file()]
    assert len(pages) >= 7, pages
    missing = browser_missing()
    if missing:
        (pytest.fail if REQUIRED else pytest.skip)(f"browser test: {missing}")
    from playwright.sync_api import sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # one line per request on stderr otherwise
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    seen = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for page_path in pages:
                    errors, outside = [], []
                    page = browser.new_page()
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    page.on("pageerror", lambda e: errors.append(str(e)))

                    def route(r, outside=outside):
                        if r.request.url.startswith(base):
                            r.continue_()
                        else:  # nothing leaves the machine
                            outside.append(r.request.url)
                            r.abort()

                    page.route("**/*", route)
                    page.goto(base + page_path, wait_until="networkidle")
                    images = page.evaluate("Array.from(document.images).map(i => [i.src, i.complete ? i.naturalWidth : 0])")
                    title = page.title()
                    page.close()
                    assert errors == [], (page_path, errors)
                    assert outside == [], (page_path, outside)
                    assert all(width > 0 for _, width in images), (page_path, images)
                    seen[page_path] = (title, len(images))
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert all(title.endswith("skiplab") for title, _ in seen.values()), seen
    assert seen.get("results/quick-study/index.html", (None, 1))[1] >= 1  # the result page's figures show
