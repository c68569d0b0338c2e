"""``skiplab strategies``: the registry, one line each."""

from __future__ import annotations

import argparse

from ..skips import STRATEGIES
from ..textable import table
from .common import add_json_flag, emit


def run(args: argparse.Namespace) -> None:
    data = [s.describe() for s in STRATEGIES.values()]
    rows = [[d["skip"], d["summary"], ", ".join(f"--{name} ({o['default']})" for name, o in d["options"].items())
             or "-"] for d in data]
    emit(args, data, table(["skip", "what it does", "options (default)"], rows))


def add_parser(sub) -> None:
    p = sub.add_parser("strategies", help="list the skip strategies",
                       description="List the skip strategies with their update rules.")
    add_json_flag(p)
    p.set_defaults(run=run)
