"""Regenerate the docs' screenshot of exported runs in TensorBoard (docs/tensorboard.png).

Runs the quick study (``skiplab study --quick``, about a minute on 2 CPU cores) into a
fresh folder, or takes an existing results folder with ``--store DIR``; exports it with
``skiplab runs export --tensorboard``; starts TensorBoard on a free local port; opens its
Time Series view in headless Chromium (Playwright, Debian's /usr/bin/chromium), filtered to
the matched-budget runs at depth 8 of four strategies and to their test accuracy and loss;
saves the page; stops TensorBoard.

Usage: python scripts/export_screenshot.py [--store DIR] [--png FILE]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from skiplab.export import export_tensorboard
from skiplab.report.browser import CHROMIUM, CHROMIUM_ARGS
from skiplab.study import quick_plan, run_study

ROOT = Path(__file__).resolve().parents[1]
RUNS = "matched-params/(plain|add|dense|hyper)-depth8"  # TensorBoard's run filter (a regex)
TAGS = "^test/(accuracy|loss)$"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"export_screenshot: TensorBoard did not answer at {url} within {seconds:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=None, help="an existing results folder (default: run the quick study)")
    p.add_argument("--png", default=str(ROOT / "docs/tensorboard.png"), help="where to save it")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.store) if args.store else Path(tmp) / "study"
        if not args.store:
            run_study(out, quick_plan())
        logdir = Path(tmp) / "tb"
        export_tensorboard(out, logdir)
        port = free_port()
        tensorboard = Path(sys.executable).with_name("tensorboard")
        server = subprocess.Popen([str(tensorboard), "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}/"
            wait_until_serving(base)
            query = urllib.parse.urlencode({"runFilter": RUNS, "tagFilter": TAGS, "smoothing": 0})
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{base}?{query}#timeseries")
                page.wait_for_selector("text=test/accuracy", timeout=60_000)
                page.get_by_text("Ignore outliers in chart scaling").click()  # show every point: off
                page.wait_for_timeout(4000)  # the charts draw after their data arrive
                page.screenshot(path=args.png)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{args.png}: TensorBoard's Time Series view of {RUNS}, tags {TAGS}")


if __name__ == "__main__":
    main()
