"""Open ``report.html`` in a real, headless Chromium and say what it saw, optionally taking
a screenshot: the browser test (``tests/test_report_browser.py``) and the docs'
screenshot (``scripts/report_screenshot.py``) both go through here.

Needs Playwright for Python (``pip install playwright``; its package carries the driver)
and a Chromium on disk, by default Debian's ``/usr/bin/chromium``. Playwright's own
browser download (``playwright install``) is never used. Every request to the network is
refused and counted, so a page that needs one is caught, not silently served.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("SKIPLAB_CHROMIUM", "/usr/bin/chromium")
# Headless, no sandbox (containers run as root), and nothing that phones home on its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class BrowserView:
    """What the browser saw while loading the page."""

    title: str = ""
    console_errors: list[str] = field(default_factory=list)  # console messages of type "error"
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    network_requests: list[str] = field(default_factory=list)  # anything not file: or data: (refused)
    images: list[tuple[str, int]] = field(default_factory=list)  # (alt, naturalWidth); 0 = did not load
    sections: dict[str, str] = field(default_factory=dict)  # section id -> its heading's text
    height: int = 0  # the page's full height in CSS pixels


def browser_missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set SKIPLAB_CHROMIUM)"
    return None


def view_in_browser(page_path: str | os.PathLike, screenshot: str | os.PathLike | None = None,
                    width: int = 1280, height: int = 900, until: str | None = None) -> BrowserView:
    """Load ``page_path`` with a ``width`` x ``height`` viewport; if ``screenshot`` is
    given, save a PNG of the whole page, or of its top down to the bottom of the element
    that the CSS selector ``until`` picks."""
    reason = browser_missing()
    if reason:
        raise ValueError(f"browser: {reason}")
    from playwright.sync_api import sync_playwright

    view = BrowserView()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: view.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: view.page_errors.append(str(e)))

            def refuse(route) -> None:
                view.network_requests.append(route.request.url)
                route.abort()

            page.route("http://**/*", refuse)
            page.route("https://**/*", refuse)
            page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
            view.title = page.title()
            view.images = [tuple(x) for x in page.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.complete ? i.naturalWidth : 0])")]
            view.sections = page.evaluate(
                "Object.fromEntries(Array.from(document.querySelectorAll('section[id]'))"
                ".map(s => [s.id, (s.querySelector('h2') || {}).textContent || '']))")
            view.height = page.evaluate("document.documentElement.scrollHeight")
            if screenshot is not None:
                box = page.locator(until).first.bounding_box() if until else None
                if until and box is None:
                    raise ValueError(f"browser: nothing on the page matches {until!r}")
                clip = {"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"] + 16} if box else None
                page.screenshot(path=str(screenshot), full_page=True, clip=clip)
        finally:
            browser.close()
    return view
