"""report.html in a real browser: a tiny study's report, opened in headless Chromium
through Playwright with every network request refused. No console errors, no page
errors, no request leaves the machine, every figure decodes (naturalWidth > 0), the
experiment's figure among them, every section is there; a screenshot is saved in the test's folder for a person to look at.

Skipped, saying why, only where Playwright or Chromium is absent; .ci/run installs both
and sets SKIPLAB_REQUIRE_BROWSER=1, under which their absence fails the test instead."""

import os

import pytest

from skiplab.experiments import run_experiment
from skiplab.report import write_report_locked
from skiplab.report.browser import browser_missing, view_in_browser
from skiplab.report.figures import FIGURES
from skiplab.report.html import SECTIONS
from skiplab.run.config import TrainConfig
from skiplab.study import StudyPlan, run_study

REQUIRED = os.environ.get("SKIPLAB_REQUIRE_BROWSER") == "1"  # set by .ci/run: a skip there is a failure


def test_report_opens_offline_in_chromium(tmp_path):
    missing = browser_missing()
    if missing:
        (pytest.fail if REQUIRED else pytest.skip)(f"browser test: {missing}")
    out = tmp_path / "study"
    run_experiment("seed-costs", str(out), quick=True)  # about a second; its figure joins the report's
    run_study(out, StudyPlan(skips=("plain", "add", "dense"), depths=(1, 3), seeds=2, budget_params=20000,
                             train=TrainConfig(epochs=1, evals=2)), workers=1)
    write_report_locked(out)
    shot = tmp_path / "report.png"
    view = view_in_browser(out / "report.html", screenshot=shot)
    assert view.console_errors == [] and view.page_errors == []
    assert view.network_requests == []
    assert len(view.images) == len(FIGURES) + 1
    assert "Seed costs: the answers' cost arithmetic" in [alt for alt, _ in view.images]
    assert all(width > 0 for _, width in view.images), view.images
    assert view.sections == dict(SECTIONS)
    assert view.title == "skiplab report: add or concatenate?"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and view.height > 2000
