"""Command line; see :mod:`skiplab.cli.main`."""

from .main import main

__all__ = ["main"]
