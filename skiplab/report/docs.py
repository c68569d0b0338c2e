"""Result pages for the documentation site, written from a results store.

``skiplab report --format docs --out STORE --to docs/results/NAME [--title TITLE]`` calls
:func:`write_docs_page`: ``NAME/index.md`` holds the report's verdict, tables and figures
(``NAME/figures/*.png``) under a header that says which machine filled the store, with
which command (a study records its command line as store metadata ``study_command``) and
when, so that no number on the page can drift from its source. A store filled by
``--quick`` gives a page labelled a smoke test. ``docs/results/index.md`` lists every page
under the folder, between two marker lines; the text outside them is left as it is.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from ..errors import UserError
from ..store import Store
from ..study import COMMAND_KEY
from .content import ReportData, describe_hardware, describe_versions, distinct, load_report_data
from .figures import write_figures
from .markdown import markdown_report

LIST_START = "<!-- result pages: written by skiplab report --format docs -->"
LIST_END = "<!-- end of result pages -->"
INDEX_INTRO = """# Result pages

Each page here is written from a results store by
`skiplab report --format docs --out STORE --to docs/results/NAME`, with the machine, the
command and the date, so no number on it can drift from its source. Pages from a
`--quick` store are labelled smoke tests: their numbers prove nothing.
"""


def study_command(store: Store) -> str | None:
    """The command line a study recorded in the store, or None (filled from Python, or by
    a skiplab from before commands were recorded)."""
    command = store.meta(COMMAND_KEY)
    return command if isinstance(command, str) else None


def is_quick(command: str | None) -> bool:
    """Did ``command`` ask for the quick form (a smoke test)?"""
    if not command:
        return False
    try:
        return "--quick" in shlex.split(command)
    except ValueError:  # unbalanced quotes: a hand-edited store
        return "--quick" in command.split()


def default_title(data: ReportData, quick: bool) -> str:
    model = ((data.plan or {}).get("model") or {}).get("model")
    title = f"The {model} study" if model else "Stored runs"
    return title + (" (smoke test)" if quick else "")


def header_lines(data: ReportData, command: str | None, quick: bool) -> list[str]:
    """What a reader needs before the numbers: a smoke test's warning, the command, the
    machine, the versions and the dates the runs finished."""
    lines = []
    if quick:
        lines += ['!!! warning "Smoke test"',
                  "    This page comes from a `--quick` store: small models, a few epochs, few seeds. It shows",
                  "    that the job runs end to end; its numbers prove nothing.", ""]
    lines.append(f"- **Command**: `{command}`" if command else
                 "- **Command**: not recorded in the store (filled from Python, or by an older skiplab)")
    machines = distinct(data.runs, "hardware")
    for hw, n in machines:
        lines.append(f"- **Machine**: {describe_hardware(hw)}" + (f" ({n} runs)" if len(machines) > 1 else ""))
    for v, n in distinct(data.runs, "versions"):
        lines.append(f"- **Versions**: {describe_versions(v)}")
    if data.runs:
        first = min(r["started_at"] for r in data.runs)
        last = max(r["finished_at"] for r in data.runs)
        lines.append(f"- **Date**: runs from {first} to {last} ({len(data.runs)} runs)")
    else:
        lines.append("- **Date**: no runs stored")
    return lines


def page_text(data: ReportData, figures, folder: Path, title: str, command: str | None, quick: bool) -> str:
    """The page: the title, the header, then the report's Markdown from its question on (its
    own title replaced, its headings kept)."""
    body = markdown_report(data, figures, base=folder).split("\n", 1)[1].lstrip("\n")
    return "\n".join([f"# {title}", "", *header_lines(data, command, quick), "", body])


def update_index(results: Path) -> Path:
    """Rewrite the list of result pages in ``results/index.md`` (created when missing)."""
    index = results / "index.md"
    text = index.read_text() if index.exists() else INDEX_INTRO
    if LIST_START not in text:
        text = text.rstrip("\n") + f"\n\n{LIST_START}\n{LIST_END}\n"
    pages = []
    for page in sorted(results.glob("*/index.md")):
        first = page.read_text().split("\n", 1)[0]
        title = first[2:].strip() if first.startswith("# ") else page.parent.name
        pages.append(f"- [{title}]({page.parent.name}/index.md)")
    listing = "\n".join(pages) if pages else "(none yet)"
    head, rest = text.split(LIST_START, 1)
    tail = rest.split(LIST_END, 1)[1] if LIST_END in rest else "\n"
    index.write_text(f"{head}{LIST_START}\n{listing}\n{LIST_END}{tail}")
    return index


def write_docs_page(store: Store, to: str | os.PathLike, title: str | None = None) -> dict[str, Path]:
    """Write the result page for ``store`` into the folder ``to`` (``to/index.md`` and
    ``to/figures/``) and list it in the parent folder's ``index.md``. Returns the files
    written, keyed by their path relative to ``to`` (``index.md``, ``figures/NAME.png``, ...)
    and ``../index.md`` for the list."""
    folder = Path(to)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", folder.name or ""):
        raise UserError(f"report: --to must end in a page name of letters, digits, '.', '_' or '-', got {str(to)!r}")
    if not folder.parent.is_dir():  # as runs export: a mistyped path makes no stray folders
        raise UserError(f"report: --to {to}: the folder {folder.parent} does not exist; create it first")
    data = load_report_data(store)
    command = study_command(store)
    quick = is_quick(command)
    figures = write_figures(data, folder / "figures")
    page = folder / "index.md"
    text = page_text(data, figures, folder, title or default_title(data, quick), command, quick)
    try:
        page.write_text(text)
    except OSError as e:
        raise UserError(f"report: cannot write {page}: {e.strerror or e}") from None
    paths = {"index.md": page}
    for f in figures:
        paths[f.png.relative_to(folder).as_posix()] = f.png
    paths["../index.md"] = update_index(folder.parent)
    return paths
