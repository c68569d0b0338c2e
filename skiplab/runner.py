"""Run many training runs and store each as it finishes.

``execute`` is the unit of work: a picklable function of a spec dict, so a process pool
(here) or a Ray task (``skiplab sweep``) can run it. The parent is the only process that
writes the store. A worker whose parent dies (``kill -9``) exits at once rather than
finishing orphaned runs that nobody would store.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable

import torch

from .data import Dataset, load_dataset
from .provenance import hardware, versions
from .store import Store, now
from .train import RunSpec, train_run

_DATA: dict[tuple[str, str], Dataset] = {}  # per process: each dataset is loaded once


def _output(spec: RunSpec, status: str, summary: dict[str, Any], curves: list, started: str) -> dict[str, Any]:
    """What a run hands back to be stored (``store_result``)."""
    return {"spec": spec.to_dict(), "spec_hash": spec.spec_hash, "seed": spec.seed, "status": status,
            "result": summary, "curves": curves, "started_at": started, "versions": versions(),
            "hardware": hardware()}


def failed_output(spec: RunSpec, message: str, started: str, tb: str = "") -> dict[str, Any]:
    """A ``failed`` run: raised inside ``execute``, or lost outside it (a Ray worker
    that died), so that it is stored and retried by the next resume."""
    return _output(spec, "failed", {"status": "failed", "seed": spec.seed, "message": message, "traceback": tb},
                   [], started)


def execute(spec_dict: dict[str, Any], on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Train one run; never raises: an error becomes status ``failed`` with its message.
    ``on_step(step, total, loss)`` reports progress (in-process use only)."""
    started = now()
    spec = RunSpec.from_dict(spec_dict)
    try:
        key = (spec.dataset, spec.label)
        if key not in _DATA:
            _DATA[key] = load_dataset(spec.dataset, spec.label)
        result = train_run(spec, _DATA[key], on_step)
        status, summary, curves = result.status, result.summary(), result.curves
    except Exception as e:  # noqa: BLE001 - a failed run is stored, the rest go on
        return failed_output(spec, f"{type(e).__name__}: {e}", started, traceback.format_exc(limit=5))
    return _output(spec, status, summary, curves, started)


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _worker_init(threads: int, parent: int) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def store_result(store: Store, out: dict[str, Any]) -> int:
    return store.add_run(out["spec"], out["spec_hash"], out["seed"], out["status"], out["result"], out["curves"],
                         out["started_at"], out["versions"], out["hardware"])


def run_all(specs: list[RunSpec], store: Store, workers: int = 1,
            on_done: Callable[[int, int, dict[str, Any]], None] | None = None,
            threads: int | None = None) -> dict[str, int]:
    """Run every spec not already finished in ``store``; store each result as it comes.
    ``on_done(done, total, result)`` reports progress. ``threads``: torch threads in each
    run, wherever it runs (the same count gives the same numbers on the CPU); default:
    cores // workers in the pool, this process's own setting when run here. Returns
    counts by status, plus ``skipped`` (already finished)."""
    finished = store.finished_keys()
    todo = [s for s in specs if (s.spec_hash, s.seed) not in finished]
    counts = {"skipped": len(specs) - len(todo)}
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: must be an integer >= 1, got {workers!r}")

    def record(out: dict[str, Any], done: int) -> None:
        store_result(store, out)
        counts[out["status"]] = counts.get(out["status"], 0) + 1
        if on_done:
            on_done(done, len(todo), out)

    if workers == 1 or len(todo) <= 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            for i, spec in enumerate(todo, start=1):
                record(execute(spec.to_dict()), i)
        finally:
            torch.set_num_threads(before)
        return counts
    # 'spawn': a fresh interpreter per worker; forking a process whose OpenMP threads have
    # run can deadlock the child.
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads, os.getpid())) as pool:
        pending = {pool.submit(execute, s.to_dict()) for s in todo}
        done = 0
        try:
            while pending:
                ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in ready:
                    done += 1
                    record(fut.result(), done)
        except BaseException:  # Ctrl-C: what finished is stored; do not wait for the rest
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return counts
