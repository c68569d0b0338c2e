"""The one wall clock that training reads (run time, step times, compile time).

Code that times training calls ``clock.now()`` through this module, never
``time.perf_counter`` directly, so that a test can install a clock of its own
(``monkeypatch.setattr(skiplab.clock, "now", fake)``) and assert on times it set, rather
than on a loaded machine's real ones."""

from __future__ import annotations

import time


def now() -> float:
    """Seconds on a monotonic clock with the best resolution there is."""
    return time.perf_counter()
