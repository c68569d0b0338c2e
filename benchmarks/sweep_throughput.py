"""Sweep throughput: runs per minute of one sweep file on the local backend with 1 and
2 workers and on a local Ray instance with 2 CPUs, measured one after the other in one
process, each into a fresh temporary store, and the ratios to local with 1 worker.

Wall time is the whole ``run_sweep`` call as a user sees it: process-pool start-up, or
Ray's start-up (timed also on its own, and left out in a second figure), every run, and
storing each result. Also checks that all three stored identical results (every run
trains with one torch thread, the sweep's ``num_cpus``, on either backend).

    python benchmarks/sweep_throughput.py [FILE.toml] [--repeats 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from skiplab.store import Store
from skiplab.sweep import LOCAL_OBJECT_STORE_BYTES, load_sweep, run_ray, run_sweep

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep-small.toml"


def results(store: Store) -> dict:
    return {(r["spec_hash"], r["seed"]): (r["status"], r["result"].get("test_accuracy"), r["result"].get("test_loss"))
            for r in store.runs()}


def timed_local(sweep, workers: int) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as d, Store(d) as store:
        start = time.perf_counter()
        counts = run_sweep(sweep, store, "local", workers=workers)
        seconds = time.perf_counter() - start
        assert counts.get("complete") == len(sweep.runs), counts
        return seconds, results(store)


def timed_ray(sweep, cpus: int) -> tuple[float, float, dict]:
    """(seconds with Ray's start-up, seconds of start-up alone, results)."""
    import ray

    with tempfile.TemporaryDirectory() as d, Store(d) as store:
        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.ERROR)
        up = time.perf_counter() - start
        try:
            counts = run_ray(sweep, store)  # uses the instance just started
        finally:
            ray.shutdown()
        seconds = time.perf_counter() - start
        assert counts.get("complete") == len(sweep.runs), counts
        return seconds, up, results(store)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", default=str(EXAMPLE), help="sweep file (default: examples/sweep-small.toml)")
    p.add_argument("--repeats", type=int, default=1, help="times each backend runs the sweep (median reported)")
    args = p.parse_args()
    sweep = load_sweep(args.file)
    n = len(sweep.runs)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{args.file}: {n} runs")
    times: dict[str, list[float]] = {"local x1": [], "local x2": [], "ray 2 CPUs": [], "ray 2 CPUs, after start-up": []}
    same = True
    for _ in range(args.repeats):
        t1, local1 = timed_local(sweep, 1)
        times["local x1"].append(t1)
        t2, local2 = timed_local(sweep, 2)
        times["local x2"].append(t2)
        tr, up, remote = timed_ray(sweep, 2)
        times["ray 2 CPUs"].append(tr)
        times["ray 2 CPUs, after start-up"].append(tr - up)
        same = same and local1 == local2 == remote
    base = n * 60 / statistics.median(times["local x1"])
    print(f"median of {args.repeats}")
    print(f"{'backend':<28} {'seconds':>8} {'runs/min':>9} {'vs local x1':>12}")
    for name, ts in times.items():
        rate = n * 60 / statistics.median(ts)
        print(f"{name:<28} {statistics.median(ts):8.1f} {rate:9.1f} {rate / base:12.2f}")
    print(f"local x1, local x2 and ray stored identical results: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
