"""The ``skiplab`` command line: argument parsing only; the work is in the library.

Every command takes ``--json``. Bad input (a :class:`skiplab.errors.UserError`: a spec,
flag, dataset, file or store skiplab cannot take) prints one line ``skiplab: error: ...``
on stderr and exits with code 2. Any other exception is a bug inside skiplab: one line
``skiplab: internal error: ...`` naming a log file that holds its traceback, exit 1
(``--debug`` prints the traceback too). Each command lives in its own module with an
``add_parser(subparsers)`` function; COMMANDS lists them in help order.
"""

from __future__ import annotations

import datetime as dt
import os
import select
import shlex
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path
from typing import Sequence

from . import build, compare, cost, experiment, gradients, profile, rewire, runs, strategies, study, sweep, train
from ..errors import UserError
from ..export.extras import MissingExtra
from ..store import StoreWarning, begin_command, interrupted_note
from .common import Parser

COMMANDS = [strategies, build, cost, gradients, profile, rewire, compare, train, study, experiment, sweep, runs]


def make_parser() -> Parser:
    parser = Parser(prog="skiplab", description="Should a skip connection add or concatenate? "
                    "Measure parameters, cost, gradients and accuracy for each strategy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def log_folders(out: str | None) -> list[Path]:
    """Where an internal error's log goes, in order of preference: ``OUT/logs`` when the
    command has an ``--out`` folder that exists (the user looks there, and sends it with
    the store), else ``$XDG_CACHE_HOME/skiplab/logs`` (``~/.cache``), else the temp folder."""
    folders = [Path(out) / "logs"] if out and Path(out).is_dir() else []
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return folders + [Path(cache) / "skiplab" / "logs", Path(tempfile.gettempdir()) / "skiplab-logs"]


def write_log(e: BaseException, argv: Sequence[str], out: str | None) -> Path | None:
    """Write the command line and ``e``'s traceback to a new log file; its path, or None
    if no folder could take it."""
    from ..version import __version__

    stamp = dt.datetime.now(dt.timezone.utc)
    text = (f"skiplab {__version__}, {stamp.isoformat(timespec='seconds')}, pid {os.getpid()}\n"
            f"command: skiplab {' '.join(argv)}\n\n" + "".join(traceback.format_exception(e)))
    for folder in log_folders(out):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"error-{stamp:%Y%m%dT%H%M%S}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def _show_warning(fallback):
    """``warnings.showwarning`` for a command: a store's warning (a row skipped) as one line."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, StoreWarning):
            print(f"skiplab: warning: {message}", file=sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone (a pipe into ``head``: poll reports an error on the
    pipe's write end); if so, stdout is pointed at the null device, so that Python's flush at
    exit does not fail again (the Python docs' advice on SIGPIPE,
    https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is no file
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


def main(argv: Sequence[str] | None = None) -> int:
    begin_command()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    with warnings.catch_warnings():  # restores showwarning when the command ends
        warnings.showwarning = _show_warning(warnings.showwarning)
        warnings.simplefilter("default", StoreWarning)  # shown, once each, whatever -W says
        try:
            args = make_parser().parse_args(argv)
            args.command_line = "skiplab " + shlex.join(argv)  # as typed, for stores to record
            args.run(args)
        except (UserError, MissingExtra) as e:  # MissingExtra: an optional library, named
            if getattr(args, "debug", False):
                traceback.print_exc()
            print(f"skiplab: error: {_first_line(e)}", file=sys.stderr)
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
        except Exception as e:  # noqa: BLE001 - a bug inside skiplab: its traceback kept, not shown as the user's fault
            if isinstance(e, BrokenPipeError) and _stdout_closed():
                return 128 + signal.SIGPIPE  # `skiplab ... | head`: the reader has what it wanted, as for a shell tool
            if getattr(args, "debug", False):
                traceback.print_exc()
            out = getattr(args, "out", None)
            log = write_log(e, argv, out if isinstance(out, str) else None)
            where = f"traceback in {log}" if log else "no log could be written; run again with --debug"
            print(f"skiplab: internal error: {type(e).__name__}: {_first_line(e)} ({where})", file=sys.stderr)
            return 1
    return 0
