"""A progress bar on stderr for long work: one line redrawn in place on a terminal,
a line every few seconds otherwise (logs stay readable), nothing when disabled (--json)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressBar:
    """``bar.update(done, note)`` redraws ``label [#####.....] done/total note, elapsed, left``."""

    def __init__(self, total: int, label: str = "", enabled: bool = True, stream: TextIO | None = None,
                 every: float = 5.0):
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every  # seconds between lines when not on a terminal
        self.start = self._last = time.monotonic()
        self._drawn = False

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        t = time.monotonic()
        if not (self.tty or force or done >= self.total or t - self._last >= self.every):
            return
        if self.tty and not force and done < self.total and t - self._last < 0.1:
            return  # a terminal redraw at most 10 times a second
        self._last = t
        elapsed = t - self.start
        left = f", ~{_duration(elapsed / done * (self.total - done))} left" if 0 < done < self.total else ""
        filled = int(20 * done / self.total)
        line = (f"{self.label} [{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total} {note}"
                f" ({_duration(elapsed)}{left})")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


class StepRate:
    """Steps per second for a progress note: ``tick(steps)`` with a running count of steps
    since ``reset()``, or ``add(steps)`` with steps just finished; the rate is over the time
    since the reset (seed-steps/s when each seed's step counts)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start, self.steps = time.monotonic(), 0

    def tick(self, steps: int) -> float:
        self.steps = steps
        elapsed = time.monotonic() - self.start
        return steps / elapsed if elapsed > 0 else 0.0

    def add(self, steps: int) -> float:
        return self.tick(self.steps + steps)
