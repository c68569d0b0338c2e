"""How long ``write_report`` takes on a store of 200 runs (budget: 10 s).

Setup: a synthetic store (``skiplab.report.synthetic``: the real plan, spec hashes and
analytic costs, made-up accuracies and curves) of 5 strategies x 5 depths (2 to 100) x 2
budgets x 4 seeds = 200 runs, 5 curve points each; then the whole report: the store read,
6 figures drawn as PNG and SVG (5 before the error EDF), report.html with the PNGs
inlined, report.md. Building the store is not timed. The first render of a process also pays for matplotlib's first text
layout; each repeat renders into a fresh folder in the same process, and the first one is
shown apart.

Run: ``python benchmarks/report_render.py [repeats]``. Timings on a machine shared with
other jobs vary; take the median.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from skiplab.report import write_report
from skiplab.report.synthetic import synthetic_store
from skiplab.run.config import TrainConfig
from skiplab.study import StudyPlan

PLAN = StudyPlan(skips=("plain", "add", "rezero", "dense", "concat-half"), depths=(2, 8, 24, 50, 100), seeds=4,
                 train=TrainConfig(epochs=15, evals=5))
BUDGET_S = 10.0


def main(repeats: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = synthetic_store(Path(tmp) / "store", PLAN)
        n = len(store.runs())
        print(f"synthetic store: {n} runs, built in {time.perf_counter() - start:.2f} s (not timed below)")
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            files = write_report(store, Path(tmp) / f"out{r}")
            times.append(time.perf_counter() - start)
            size = files["report.html"].stat().st_size
            print(f"render {r + 1}: {times[-1]:.2f} s ({len(files)} files, report.html {size / 1e6:.2f} MB)")
        store.close()
    median = statistics.median(times)
    print(f"median of {repeats}: {median:.2f} s for {n} runs; budget {BUDGET_S:.0f} s: "
          + ("within" if median < BUDGET_S else "OVER"))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
