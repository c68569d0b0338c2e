"""Reports built from the results store."""

from .markdown import write_markdown_report

__all__ = ["write_markdown_report"]
