"""The whole ``skiplab study`` with the batched engine against ``--engine loop``, side by side.

Runs both studies at the same time, each with one worker and one torch thread
(``--workers 1``, ``OMP_NUM_THREADS=1``), one per core of a 2-core machine, so that
whatever else loads the machine loads both alike; then compares the two stores:

* wall time of each (the command's own, from start to its last stored run), and the ratio;
* per cell of the study (group, strategy, depth), the test accuracies over the seeds, and
  Welch's t-test of equal means (``skiplab.stats``): the engines agree within 1e-4 over a
  few steps, but ten epochs of Adam amplify rounding (a bias before batch norm has no true
  gradient; see README, "The batched engine"), so the question is whether the batched
  study's numbers stay within the loop's spread: how many of the cells the test separates
  at the 0.05 level (about 1 in 20 by chance alone).

    python benchmarks/study_engines.py [--out DIR] [--compare-only] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from skiplab.stats import ALPHA, welch_p
from skiplab.store import Store, StoreError


def fail(message: str) -> None:
    print(f"study_engines: {message}", file=sys.stderr)
    sys.exit(2)


def run_both(out: Path, quick: bool) -> dict[str, float]:
    """Start the two studies together; their wall times in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs, start = {}, time.perf_counter()
    for engine in ("loop", "batched"):
        cmd = [sys.executable, "-m", "skiplab", "study", "--workers", "1", "--engine", engine,
               "--out", str(out / engine)] + (["--quick"] if quick else [])
        log = open(out / f"{engine}.log", "w")
        procs[engine] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    walls = {}
    while procs:
        for engine, (proc, log) in list(procs.items()):
            if proc.poll() is not None:
                walls[engine] = time.perf_counter() - start
                log.close()
                if proc.returncode:
                    fail(f"the {engine} study exited {proc.returncode}; see {out / engine}.log")
                del procs[engine]
        time.sleep(1)
    return walls


def cells(store_dir: Path) -> dict[tuple, list[float]]:
    """(group, skip, depth) -> test accuracies of the complete runs, by seed order."""
    out: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for run in Store(store_dir, create=False).runs():
        if run["status"] == "complete" and run["result"].get("test_accuracy") is not None:
            spec = run["spec"]
            out[(spec["group"], spec["model"]["skip"], spec["model"]["depth"])].append(
                (run["seed"], run["result"]["test_accuracy"]))
    return {k: [a for _, a in sorted(v)] for k, v in out.items()}


def span(store_dir: Path) -> float:
    """Seconds from the first stored run's start to the last one's finish."""
    runs = Store(store_dir, create=False).runs()
    first = min(datetime.fromisoformat(r["started_at"]) for r in runs)
    last = max(datetime.fromisoformat(r["finished_at"]) for r in runs)
    return (last - first).total_seconds()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="study-engines", help="folder for the two stores (default: %(default)s)")
    p.add_argument("--compare-only", action="store_true", help="compare the stores already in --out")
    p.add_argument("--quick", action="store_true", help="the quick study (a smoke test of this script)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    if not args.compare_only:
        walls = run_both(out, args.quick)
        print(f"wall time: loop {walls['loop']:.0f} s, batched {walls['batched']:.0f} s, "
              f"loop / batched {walls['loop'] / walls['batched']:.2f} (load average before {load:.2f}, "
              f"after {os.getloadavg()[0]:.2f})")
    try:
        loop_span, batched_span = span(out / "loop"), span(out / "batched")
    except StoreError as e:  # no study there yet, or not a store
        fail(str(e))
    print(f"first run started to last run stored: loop {loop_span:.0f} s, batched {batched_span:.0f} s, "
          f"loop / batched {loop_span / batched_span:.2f}")
    loop, batched = cells(out / "loop"), cells(out / "batched")
    separated, diffs = [], []
    print(f"{'group':<14} {'skip':<12} {'depth':>5} {'loop %':>14} {'batched %':>14} {'diff':>6} {'p':>6}")
    for key in sorted(loop, key=lambda k: (k[0], k[2], k[1])):
        a, b = loop[key], batched.get(key, [])
        if len(a) < 2 or len(b) < 2:
            continue
        pv = welch_p(a, b)
        d = 100 * (statistics.fmean(b) - statistics.fmean(a))
        diffs.append(abs(d))
        if pv < ALPHA:
            separated.append(key)
        print(f"{key[0]:<14} {key[1]:<12} {key[2]:>5} {100 * statistics.fmean(a):>7.1f} +- {100 * statistics.stdev(a):>3.1f} "
              f"{100 * statistics.fmean(b):>7.1f} +- {100 * statistics.stdev(b):>3.1f} {d:>+6.1f} {pv:>6.3f}")
    print(f"{len(separated)} of {len(diffs)} cells separated by Welch's t-test at {ALPHA}"
          + (": " + ", ".join(f"{g} {s} depth {d}" for g, s, d in separated) if separated else "")
          + f"; median |difference| {statistics.median(diffs):.1f} points, largest {max(diffs):.1f}")


if __name__ == "__main__":
    main()
