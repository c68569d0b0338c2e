"""Run many training runs and store each as it finishes.

``execute`` is the unit of work: a picklable function of a spec dict, so a worker process
(here) or a Ray task (``skiplab sweep``) can run it. The parent is the only process that
writes the store. Faults:

* A worker whose parent dies (``kill -9``) exits at once rather than finishing orphaned
  runs that nobody would store.
* A worker that dies itself (SIGKILL, the OOM killer) costs only its run: the run is
  started again on a fresh worker up to ``RETRIES`` times (``retries``), then stored as ``failed`` with
  the reason, and the other runs go on (as the Ray backend does). Hence a small pool of
  our own, one pipe per worker, rather than ProcessPoolExecutor, which breaks as a whole
  (BrokenProcessPool) when one worker dies and cannot say whose run it was.
* Ctrl-C: workers ignore SIGINT (a terminal sends it to the whole process group); the
  parent stops them, keeps what it stored, drops its claims and re-raises
  KeyboardInterrupt for the command line to report in one line.
* Several commands on one store: each run is claimed in the store before it is trained
  (:meth:`skiplab.store.Store.claim`), so no two commands train the same run; a run
  another command holds is waited for, then counted as ``elsewhere``.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator

import torch

from .datasets import Dataset, load_dataset
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


RETRIES = 2  # a run whose worker process dies is started again this many times, then stored failed
CLAIM_POLL = 1.0  # seconds between looks at runs another command holds
# Test hook, read by workers only: "SEED" makes a worker SIGKILL itself when it starts a run
# with that seed, at every attempt; "SEED:N" at its first N attempts; a comma-separated list
# of these for several seeds.
TEST_DIE_ENV = "SKIPLAB_TEST_WORKER_DIES"


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _test_die(seed: int, attempt: int) -> None:
    for rule in filter(None, os.environ.get(TEST_DIE_ENV, "").split(",")):
        die_seed, _, times = rule.partition(":")
        if seed == int(die_seed) and (not times or attempt <= int(times)):
            os.kill(os.getpid(), signal.SIGKILL)


def _worker(conn: Any, threads: int, parent: int) -> None:
    """A worker process: runs what the parent sends ((spec dict, attempt) or None to
    stop), sends each result back."""
    # Ctrl-C is the parent's to handle: a terminal sends SIGINT to every process in the
    # group, and a worker raising KeyboardInterrupt would print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent while it started us
    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        spec_dict, attempt = task
        _test_die(spec_dict["seed"], attempt)
        conn.send(execute(spec_dict))


class _Proc:
    """One worker process, its pipe, and the run it was given (index, attempt)."""

    def __init__(self, ctx: Any, threads: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, threads, os.getpid()), daemon=True)
        # Block SIGINT while starting it: the child inherits the mask and so cannot be
        # hit by a Ctrl-C before it has set SIGINT to ignored; ours waits, not lost.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()
        self.task: tuple[int, int] | None = None

    def send(self, index: int, spec: RunSpec, attempt: int) -> None:
        self.task = (index, attempt)
        try:
            self.conn.send((spec.to_dict(), attempt))
        except OSError:  # already dead: found by its sentinel, and the run retried
            pass

    def death(self) -> str:
        code = self.proc.exitcode
        return f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"

    def stop(self, timeout: float = 1.0) -> None:
        """Stop now: a run in progress is abandoned (it was not stored, so a resume runs it)."""
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc.join()
        self.conn.close()


class _Plan:
    """The runs to do, each claimed in the store just before it starts: ``take()`` gives
    the next one this command may train, or None while every run left is held by another
    command (wait, then ask again), ``left`` says whether any run is still to do."""

    def __init__(self, specs: list[RunSpec], store: Store, counts: dict[str, int]):
        self.queue = collections.deque(range(len(specs)))
        self.specs, self.store, self.counts = specs, store, counts
        self.since = now()

    @property
    def left(self) -> bool:
        return bool(self.queue)

    def retry(self, index: int) -> None:
        self.queue.appendleft(index)  # still claimed by us: taken again at once

    def take(self) -> int | None:
        for _ in range(len(self.queue)):
            index = self.queue.popleft()
            spec = self.specs[index]
            state = self.store.claim(spec.spec_hash, spec.seed, self.since)
            if state == "claimed":
                return index
            if state == "done":  # stored by another command while we ran
                self.counts["elsewhere"] = self.counts.get("elsewhere", 0) + 1
            else:  # busy: held by another command; look again later
                self.queue.append(index)
        return None


def store_result(store: Store, out: dict[str, Any]) -> int:
    return store.add_run(out["spec"], out["spec_hash"], out["seed"], out["status"], out["result"], out["curves"],
                         out["started_at"], out["versions"], out["hardware"])


def run_all(specs: list[RunSpec], store: Store, workers: int = 1,
            on_done: Callable[[int, int, dict[str, Any]], None] | None = None,
            threads: int | None = None, retries: int | None = None) -> dict[str, int]:
    """Run every spec not already finished in ``store``; store each result as it comes.
    ``on_done(done, total, result)`` reports progress. ``threads``: torch threads in each
    run, wherever it runs (the same count gives the same numbers on the CPU); default:
    cores // workers in the pool, this process's own setting when run here. ``retries``:
    times a run whose worker process died is started again (default ``RETRIES``). Returns
    counts by status, plus ``skipped`` (already finished), ``elsewhere`` (stored by
    another command on the same store meanwhile: see the module docstring) and
    ``retried`` (runs started again after their worker process died)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: must be an integer >= 1, got {workers!r}")
    finished = store.finished_keys()
    todo = [s for s in specs if (s.spec_hash, s.seed) not in finished]
    counts = {"skipped": len(specs) - len(todo)}
    done = 0

    def record(out: dict[str, Any]) -> None:
        nonlocal done
        store_result(store, out)
        counts[out["status"]] = counts.get(out["status"], 0) + 1
        done += 1
        if on_done:
            on_done(done, len(todo), out)

    if not todo:
        return counts
    plan = _Plan(todo, store, counts)
    with store.lease():
        if workers == 1 or len(todo) <= 1:
            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                for index in _claimed(plan):
                    record(execute(todo[index].to_dict()))
            finally:
                torch.set_num_threads(before)
        else:
            _run_pool(todo, plan, min(workers, len(todo)), threads or max(1, (os.cpu_count() or 1) // workers),
                      RETRIES if retries is None else retries, record, counts)
    return counts


def _claimed(plan: _Plan) -> Iterator[int]:
    """Each run this command may train, in order, waiting while others hold the rest."""
    while plan.left:
        index = plan.take()
        if index is None:
            time.sleep(CLAIM_POLL)
        else:
            yield index


def _run_pool(todo: list[RunSpec], plan: _Plan, workers: int, threads: int, retries: int,
              record: Callable[[dict[str, Any]], None], counts: dict[str, int]) -> None:
    """The runs on ``workers`` processes; a worker that dies is replaced, its run retried."""
    # 'spawn': a fresh interpreter per worker; forking a process whose OpenMP threads have
    # run can deadlock the child.
    ctx = multiprocessing.get_context("spawn")
    procs: list[_Proc] = []
    attempts: collections.Counter[int] = collections.Counter()
    try:
        procs = [_Proc(ctx, threads) for _ in range(workers)]
        while True:
            for w in procs:
                if w.task is None and plan.left:
                    index = plan.take()
                    if index is None:
                        break  # the rest are held elsewhere: wait below, then ask again
                    attempts[index] += 1
                    w.send(index, todo[index], attempts[index])
            busy = [w for w in procs if w.task is not None]
            if not busy and not plan.left:
                return
            # a result, a worker's death, or (waiting for runs held elsewhere) a poll
            wait([w.conn for w in busy] + [w.proc.sentinel for w in procs], timeout=CLAIM_POLL)
            alive = []
            for w in procs:
                out = None
                if w.task is not None and w.conn.poll():
                    try:
                        out = w.conn.recv()
                    except (EOFError, OSError):  # died while sending: the sentinel tells
                        pass
                if out is not None:
                    w.task = None
                    record(out)
                if w.proc.is_alive():
                    alive.append(w)
                    continue
                w.proc.join()
                if w.task is not None:
                    index, attempt = w.task
                    w.task = None
                    if attempt <= retries:
                        counts["retried"] = counts.get("retried", 0) + 1
                        plan.retry(index)
                    else:
                        record(failed_output(todo[index], f"worker process died ({w.death()}) {attempt} times",
                                             now()))
                w.conn.close()
            # a fresh worker for each dead one, while there is work for it
            procs = alive + [_Proc(ctx, threads) for _ in range(min(workers - len(alive), len(plan.queue)))]
    finally:  # done, Ctrl-C or an error: stop every worker (SIGTERM: silent); what finished is stored
        for w in procs:
            w.stop()
