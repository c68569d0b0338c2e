"""The ``skiplab`` command line: argument parsing only; the work is in the library.

Every command takes ``--json``. Bad input prints one line ``skiplab: error: ...`` on
stderr and exits with code 2. Each command lives in its own module with an
``add_parser(subparsers)`` function; COMMANDS lists them in help order.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Sequence

from . import build, cost, experiment, gradients, profile, runs, strategies, study, sweep, train
from ..export.extras import MissingExtra
from ..store import begin_command, interrupted_note
from .common import Parser, UsageError

COMMANDS = [strategies, build, cost, gradients, profile, train, study, experiment, sweep, runs]


def make_parser() -> Parser:
    parser = Parser(prog="skiplab", description="Should a skip connection add or concatenate? "
                    "Measure parameters, cost, gradients and accuracy for each strategy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    begin_command()
    try:
        args = make_parser().parse_args(argv)
        args.run(args)
    except (UsageError, ValueError, MissingExtra) as e:  # MissingExtra: an optional library, named
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"skiplab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what finished is stored; say so, and how to go on
        # a second Ctrl-C must not cut this line short with a traceback
        here = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if here else None
        try:
            clear = "\r\x1b[2K" if sys.stderr.isatty() else ""  # over a progress bar drawn in place
            print(f"{clear}skiplab: {interrupted_note()}", file=sys.stderr)
        finally:
            if here:
                signal.signal(signal.SIGINT, old)
        return 130
    return 0
