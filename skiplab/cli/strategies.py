"""``skiplab strategies``: the registry, one line each."""

from __future__ import annotations

import argparse

from ..skips import STRATEGIES
from ..textable import table
from .common import add_json_flag, emit


def run(args: argparse.Namespace) -> None:
    data = [{"skip": s.name, "summary": s.summary, "rule": s.rule, "source": s.source}
            for s in STRATEGIES.values()]
    emit(args, data, table(["skip", "what it does"], [[d["skip"], d["summary"]] for d in data]))


def add_parser(sub) -> None:
    p = sub.add_parser("strategies", help="list the skip strategies",
                       description="List the skip strategies with their update rules.")
    add_json_flag(p)
    p.set_defaults(run=run)
