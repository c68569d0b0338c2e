"""Reports built from the results store: ``write_report`` writes report.html, report.md
and the figures (PNG and SVG)."""

from .markdown import write_markdown_report
from .write import write_report, write_report_locked

__all__ = ["write_report", "write_report_locked", "write_markdown_report"]
