"""Regenerate the docs' screenshot of the report (docs/figures/report-screenshot.png).

Runs the quick study (``skiplab study --quick``, about a minute on 2 CPU cores) into a
fresh folder, or takes an existing results folder with ``--store DIR``, builds the report
there, opens report.html in headless Chromium (Playwright, Debian's /usr/bin/chromium) and
saves the top of the page: title, question, verdict and the first figure (cost).

Usage: python scripts/report_screenshot.py [--store DIR] [--png FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from skiplab.report import write_report
from skiplab.report.browser import view_in_browser
from skiplab.store import Store
from skiplab.study import quick_plan, run_study

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=None, help="an existing results folder (default: run the quick study)")
    p.add_argument("--png", default=str(ROOT / "docs/figures/report-screenshot.png"), help="where to save it")
    p.add_argument("--width", type=int, default=1280, help="viewport width in pixels (default: %(default)s)")
    p.add_argument("--until", default="#fig-cost-vs-depth",
                   help="CSS selector of the element the screenshot ends with (default: %(default)s)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.store) if args.store else Path(tmp)
        if not args.store:
            run_study(out, quick_plan())  # the caller writes the report: below
        with Store(out, create=False) as store:
            write_report(store, out)
        view = view_in_browser(out / "report.html", screenshot=args.png, width=args.width, until=args.until)
    problems = view.console_errors + view.page_errors + view.network_requests
    if problems or not all(w > 0 for _, w in view.images):
        raise SystemExit(f"report_screenshot: the page did not render cleanly: {problems} {view.images}")
    print(f"{args.png}: the top of a {args.width}x{view.height}-pixel page, down to {args.until}; "
          f"{len(view.images)} figures")


if __name__ == "__main__":
    main()
