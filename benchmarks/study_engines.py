"""The whole ``skiplab study`` with the batched engine against ``--engine loop``, side by side.

Runs both studies at the same time, each with one worker and one torch thread
(``--workers 1``, ``OMP_NUM_THREADS=1``), one per core of a 2-core machine, so that
whatever else loads the machine loads both alike; then compares the two stores:

* wall time of each (the command's own, from start to its last stored run), and the ratio;
* per cell of the study (group, strategy, depth), the test accuracies over the seeds, by
  ``skiplab runs compare``'s comparison (``skiplab.compare_stores``: Welch's t-test per
  cell, Holm-adjusted over the cells): the engines agree within 1e-4 over a few steps, but
  ten epochs of Adam amplify rounding (a bias before batch norm has no true gradient; see
  docs/engines.md), so the question is whether the batched study's numbers
  stay within the loop's spread. A cell not separated is not shown equal: ``--margin M``
  tests agreement within M points (two one-sided tests).

    python benchmarks/study_engines.py [--out DIR] [--compare-only] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from skiplab.compare_stores import compare_stores
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
    p.add_argument("--margin", type=float, help="also test agreement within this many accuracy points")
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
    c = compare_stores(out / "loop", out / "batched", margin=args.margin)
    print(f"{'group':<14} {'skip':<12} {'depth':>5} {'loop %':>14} {'batched %':>14} {'diff':>6} {'p':>6} {'Holm':>6}")
    for d in sorted(c["cells"], key=lambda d: (d["group"], d["depth"], d["skip"])):
        print(f"{d['group']:<14} {d['skip']:<12} {d['depth']:>5} {100 * d['mean_a']:>7.1f} +- {100 * d['std_a']:>3.1f} "
              f"{100 * d['mean_b']:>7.1f} +- {100 * d['std_b']:>3.1f} {d['diff']:>+6.1f} {d['p']:>6.3f} {d['p_holm']:>6.3f}")
    print(c["summary"])

if __name__ == "__main__":
    main()
