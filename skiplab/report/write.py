"""The report's one entry point: ``write_report(store, out)`` writes ``out/report.html``,
``out/report.md`` and every figure as PNG and SVG under ``out/figures/``. Both
``skiplab study`` (at its end) and ``skiplab report`` call it, so they write the same thing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..store import Store
from .content import load_report_data
from .figures import write_figures
from .html import html_report
from .markdown import markdown_report, write_markdown
from ..errors import UserError


def write_report(store: Store, out: str | os.PathLike) -> dict[str, Path]:
    """Render the report for ``store`` into ``out``. Returns the files written, keyed by
    their path relative to ``out`` (``report.html``, ``report.md``, ``figures/NAME.png``, ...)."""
    out = Path(out)
    data = load_report_data(store)
    figures = write_figures(data, out / "figures")
    page = out / "report.html"
    tmp = page.with_suffix(f".html.{os.getpid()}.tmp")  # per process: two commands may write one report
    try:
        tmp.write_text(html_report(data, figures, source=str(store.path)), encoding="utf-8")
        os.replace(tmp, page)  # never a half-written page
    except OSError as e:
        raise UserError(f"report: cannot write {page}: {e.strerror or e}") from None
    paths = {"report.html": page, "report.md": write_markdown(markdown_report(data, figures, base=out), out)}
    for f in figures:
        for p in (f.png, f.svg):
            paths[p.relative_to(out).as_posix()] = p
    return paths


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (released when the process dies, however it dies)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_report_locked(out: str | os.PathLike) -> dict[str, Path]:
    """Open the store in ``out`` and write its report, one writer at a time: two studies
    finishing together on one folder take turns (their temporary files would collide)."""
    out = Path(out)
    with Store(out) as store, _locked(out / ".report.lock"):
        return write_report(store, out)
