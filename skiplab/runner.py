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
* Seeds of one configuration (runs that differ only by seed) go to one worker as one
  task and train as one batched computation (:mod:`skiplab.engine`); each seed is still
  claimed, stored and resumed on its own, so a finished seed is never run again. A worker
  that dies costs its task's runs, each retried as above.
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
from .engine import OnStep, train_seeds, why_not_batched, why_not_batched_alone
from .train import RunSpec

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


def _dataset(spec: RunSpec) -> Dataset:
    key = (spec.dataset, spec.label)
    if key not in _DATA:
        _DATA[key] = load_dataset(spec.dataset, spec.label)
    return _DATA[key]


def execute(spec_dict: dict[str, Any], on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Train one run; never raises: an error becomes status ``failed`` with its message.
    ``on_step(step, total, loss)`` reports progress (in-process use only)."""
    return execute_group([spec_dict], None if on_step is None else
                         lambda step, total, loss, seeds: on_step(step, total, loss))[0]


def execute_group(spec_dicts: list[dict[str, Any]], on_step: OnStep | None = None) -> list[dict[str, Any]]:
    """Train runs that differ only by seed as one batched computation
    (:func:`skiplab.engine.train_seeds`), or one by one where batching does not apply;
    never raises: an error becomes status ``failed`` with its message, for the run that
    raised (the loop) or for every run of the batch. ``on_step(step, total, loss,
    seeds)`` reports progress (in-process use only). Returns one output per run, in order."""
    started = now()
    specs = [RunSpec.from_dict(d) for d in spec_dicts]
    if len(specs) > 1 and why_not_batched(specs) is not None:  # each alone: one failure costs one run
        return [execute_group([d], on_step)[0] for d in spec_dicts]
    try:
        results = [r for _, r in train_seeds(specs, _dataset(specs[0]), on_step)]
    except Exception as e:  # noqa: BLE001 - a failed run is stored, the rest go on
        tb = traceback.format_exc(limit=5)
        return [failed_output(s, f"{type(e).__name__}: {e}", started, tb) for s in specs]
    return [_output(s, r.status, r.summary(), r.curves, started) for s, r in zip(specs, results)]


def group_key(spec: RunSpec) -> tuple[str, ...]:
    """Runs with the same key train as one task: the seeds of one configuration, unless
    they would train with the loop anyway (``engine="loop"``, or a family that batches
    slower on the CPU): then each run is its own task, and runs go in parallel."""
    return (spec.spec_hash,) if why_not_batched_alone(spec) is None else (spec.spec_hash, str(spec.seed))


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
    """A worker process: runs what the parent sends ((spec dicts, attempt) or None to
    stop), sends each task's results back."""
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
        spec_dicts, attempt = task
        for d in spec_dicts:
            _test_die(d["seed"], attempt)
        conn.send(execute_group(spec_dicts))


class _Proc:
    """One worker process, its pipe, and the task it was given (run indices, attempt)."""

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
        self.task: tuple[list[int], int] | None = None

    def send(self, indices: list[int], specs: list[RunSpec], attempt: int) -> None:
        self.task = (indices, attempt)
        try:
            self.conn.send(([s.to_dict() for s in specs], attempt))
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
    the next task this command may train (a run and the other seeds of its configuration
    still to do, :func:`group_key`), or [] while every run left is held by another command
    (wait, then ask again); ``left`` says whether any run is still to do."""

    def __init__(self, specs: list[RunSpec], store: Store, counts: dict[str, int]):
        self.queue = collections.deque(range(len(specs)))
        self.specs, self.store, self.counts = specs, store, counts
        self.since = now()

    @property
    def left(self) -> bool:
        return bool(self.queue)

    def retry(self, index: int) -> None:
        self.queue.appendleft(index)  # still claimed by us: taken again at once

    def _claim(self, index: int) -> bool:
        spec = self.specs[index]
        state = self.store.claim(spec.spec_hash, spec.seed, self.since)
        if state == "done":  # stored by another command while we ran
            self.counts["elsewhere"] = self.counts.get("elsewhere", 0) + 1
        elif state != "claimed":  # busy: held by another command; look again later
            self.queue.append(index)
        return state == "claimed"

    def take(self) -> list[int]:
        first = None
        for _ in range(len(self.queue)):
            index = self.queue.popleft()
            if self._claim(index):
                first = index
                break
        if first is None:
            return []
        key, task = group_key(self.specs[first]), [first]
        for _ in range(len(self.queue)):  # its group-mates, in queue order (the rest keep theirs)
            index = self.queue.popleft()
            if group_key(self.specs[index]) != key:
                self.queue.append(index)
            elif self._claim(index):
                task.append(index)
        return task


def store_result(store: Store, out: dict[str, Any]) -> int:
    return store.add_run(out["spec"], out["spec_hash"], out["seed"], out["status"], out["result"], out["curves"],
                         out["started_at"], out["versions"], out["hardware"])


def run_all(specs: list[RunSpec], store: Store, workers: int = 1,
            on_done: Callable[[int, int, dict[str, Any]], None] | None = None,
            threads: int | None = None, retries: int | None = None,
            on_flight: Callable[[int], None] | None = None) -> dict[str, int]:
    """Run every spec not already finished in ``store``; store each result as it comes.
    Runs that differ only by seed train together as one batched task (:func:`group_key`).
    ``on_done(done, total, result)`` reports progress; ``on_flight(seeds)`` the runs in
    training now, whenever that changes. ``threads``: torch threads in each
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
    tasks = len({group_key(s) for s in todo})
    flight = on_flight or (lambda seeds: None)
    with store.lease():
        if workers == 1 or tasks <= 1:
            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                for indices in _claimed(plan):
                    flight(len(indices))
                    for out in execute_group([todo[i].to_dict() for i in indices]):
                        record(out)
                flight(0)
            finally:
                torch.set_num_threads(before)
        else:
            _run_pool(todo, plan, min(workers, tasks), threads or max(1, (os.cpu_count() or 1) // workers),
                      RETRIES if retries is None else retries, record, counts, flight)
    return counts


def _claimed(plan: _Plan) -> Iterator[list[int]]:
    """Each task this command may train, in order, waiting while others hold the rest."""
    while plan.left:
        indices = plan.take()
        if not indices:
            time.sleep(CLAIM_POLL)
        else:
            yield indices


def _run_pool(todo: list[RunSpec], plan: _Plan, workers: int, threads: int, retries: int,
              record: Callable[[dict[str, Any]], None], counts: dict[str, int],
              flight: Callable[[int], None]) -> None:
    """The tasks on ``workers`` processes; a worker that dies is replaced, its runs retried."""
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
                    indices = plan.take()
                    if not indices:
                        break  # the rest are held elsewhere: wait below, then ask again
                    attempts.update(indices)
                    w.send(indices, [todo[i] for i in indices], max(attempts[i] for i in indices))
            busy = [w for w in procs if w.task is not None]
            flight(sum(len(w.task[0]) for w in busy))
            if not busy and not plan.left:
                return
            # a result, a worker's death, or (waiting for runs held elsewhere) a poll
            wait([w.conn for w in busy] + [w.proc.sentinel for w in procs], timeout=CLAIM_POLL)
            alive = []
            for w in procs:
                outs = None
                if w.task is not None and w.conn.poll():
                    try:
                        outs = w.conn.recv()
                    except (EOFError, OSError):  # died while sending: the sentinel tells
                        pass
                if outs is not None:
                    w.task = None
                    for out in outs:
                        record(out)
                if w.proc.is_alive():
                    alive.append(w)
                    continue
                w.proc.join()
                if w.task is not None:
                    indices, _ = w.task
                    w.task = None
                    for index in reversed(indices):  # retried in their order
                        if attempts[index] <= retries:
                            counts["retried"] = counts.get("retried", 0) + 1
                            plan.retry(index)
                        else:
                            record(failed_output(todo[index], f"worker process died ({w.death()}) "
                                                 f"{attempts[index]} times", now()))
                w.conn.close()
            # a fresh worker for each dead one, while there is work for it
            procs = alive + [_Proc(ctx, threads) for _ in range(min(workers - len(alive), len(plan.queue)))]
    finally:  # done, Ctrl-C or an error: stop every worker (SIGTERM: silent); what finished is stored
        for w in procs:
            w.stop()
