"""Executors: where the scheduler's tasks run. They only run a task and hand back its
outputs; resume, claims, storing and progress are the scheduler's (:mod:`skiplab.run.scheduler`).

* :class:`Inline`: in this process, one task after another (progress can show each step).
* :class:`Pool`: local worker processes of our own, one pipe each, rather than
  ProcessPoolExecutor, which breaks as a whole (BrokenProcessPool) when one worker dies
  and cannot say whose task it was. A worker that dies (SIGKILL, the OOM killer) costs
  only its task: the task is started again on a fresh worker ``retries`` times, then
  stored ``failed`` with the reason. A worker whose parent dies exits at once rather than
  train runs nobody would store. Workers ignore SIGINT (a terminal sends it to the whole
  process group); the parent stops them on Ctrl-C.
* :class:`Ray`: one Ray task per scheduler task, on a local instance or a cluster; Ray
  retries a task whose worker died ``max_retries`` times, then it is stored ``failed``.
  Runs are claimed in the store before they are submitted, as on the other executors.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable

import torch

from ..store import now
from . import scheduler
from .scheduler import Plan, TaskFn, failed

Record = Callable[[dict[str, Any]], None]
Flight = Callable[[int], None]

# Test hook, read by pool workers only: "SEED" makes a worker SIGKILL itself when it starts
# a run with that seed, at every attempt; "SEED:N" at its first N attempts; a
# comma-separated list of these for several seeds.
TEST_DIE_ENV = "SKIPLAB_TEST_WORKER_DIES"


class Inline:
    """Each task in this process. ``threads``: torch threads while it runs (default: as
    set); ``on_step``, passed to the task function as its second argument when given."""

    def __init__(self, threads: int | None = None, on_step: Callable | None = None):
        self.threads, self.on_step = threads, on_step

    def run(self, fn: TaskFn, plan: Plan, record: Record, flight: Flight) -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads or before)
        try:
            for indices in plan.tasks(time.sleep):
                flight(len(indices))
                args = [plan.works[i].arg for i in indices]
                for out in (fn(args, self.on_step) if self.on_step else fn(args)):
                    record(out)
            flight(0)
        finally:
            torch.set_num_threads(before)


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _test_die(args: list[Any], attempt: int) -> None:
    seeds = {a.get("seed") for a in args if isinstance(a, dict)}
    for rule in filter(None, os.environ.get(TEST_DIE_ENV, "").split(",")):
        die_seed, _, times = rule.partition(":")
        if int(die_seed) in seeds and (not times or attempt <= int(times)):
            os.kill(os.getpid(), signal.SIGKILL)


def _worker(conn: Any, threads: int, parent: int) -> None:
    """A worker process: runs what the parent sends ((fn, args, attempt), or None to
    stop) and sends each task's outputs back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
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
        fn, args, attempt = task
        _test_die(args, attempt)
        conn.send(fn(args))


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

    def send(self, fn: TaskFn, indices: list[int], args: list[Any], attempt: int) -> None:
        self.task = (indices, attempt)
        try:
            self.conn.send((fn, args, attempt))
        except OSError:  # already dead: found by its sentinel, and the task retried
            pass

    def death(self) -> str:
        code = self.proc.exitcode
        return f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"

    def stop(self, timeout: float = 1.0) -> None:
        """Stop now: a task in progress is abandoned (not stored, so a resume runs it)."""
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc.join()
        self.conn.close()


class Pool:
    """Tasks on ``workers`` local processes with ``threads`` torch threads each; a task
    whose worker dies is retried ``retries`` times on a fresh worker."""

    def __init__(self, workers: int, threads: int, retries: int = 2):
        self.workers, self.threads, self.retries = workers, threads, retries

    def run(self, fn: TaskFn, plan: Plan, record: Record, flight: Flight) -> None:
        # 'spawn': a fresh interpreter per worker; forking a process whose OpenMP threads
        # have run can deadlock the child.
        ctx = multiprocessing.get_context("spawn")
        procs: list[_Proc] = []
        attempts: collections.Counter[int] = collections.Counter()
        works = plan.works
        try:
            procs = [_Proc(ctx, self.threads) for _ in range(self.workers)]
            while True:
                for w in procs:
                    if w.task is None and plan.left:
                        indices = plan.take()
                        if not indices:
                            break  # the rest are held elsewhere: wait below, then ask again
                        attempts.update(indices)
                        w.send(fn, indices, [works[i].arg for i in indices], max(attempts[i] for i in indices))
                busy = [w for w in procs if w.task is not None]
                flight(sum(len(w.task[0]) for w in busy))
                if not busy and not plan.left:
                    return
                # a result, a worker's death, or (waiting for runs held elsewhere) a poll
                wait([w.conn for w in busy] + [w.proc.sentinel for w in procs], timeout=scheduler.CLAIM_POLL)
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
                            if attempts[index] <= self.retries:
                                plan.counts["retried"] = plan.counts.get("retried", 0) + 1
                                plan.retry(index)
                            else:
                                record(failed(works[index], f"worker process died ({w.death()}) "
                                                            f"{attempts[index]} times"))
                    w.conn.close()
                # a fresh worker for each dead one, while there is work for it
                procs = alive + [_Proc(ctx, self.threads)
                                 for _ in range(min(self.workers - len(alive), len(plan.queue)))]
        finally:  # done, Ctrl-C or an error: stop every worker (SIGTERM: silent); what finished is stored
            for w in procs:
                w.stop()


def _ray_task(fn: TaskFn, args: list[Any], threads: int) -> list[dict[str, Any]]:
    """A Ray task: the scheduler's task with as many torch threads as CPUs it was given,
    as in the local pool, so that both compute the same numbers."""
    torch.set_num_threads(threads)
    return fn(args)


class Ray:
    """Tasks as Ray tasks on an initialised Ray (the caller connects and disconnects),
    each asking ``num_cpus`` and ``num_gpus``; at most ``limit`` in flight (default: all
    there are; Ray queues what does not fit)."""

    def __init__(self, ray: Any, num_cpus: float, num_gpus: float, threads: int, max_retries: int,
                 limit: int | None = None, cancel_on_exit: bool = True):
        self.ray, self.threads, self.limit, self.max_retries = ray, threads, limit, max_retries
        # Tasks still in flight when the run ends are cancelled on a cluster that outlives this
        # command. On a private instance they are not: ``ray.shutdown`` stops its workers, and a
        # ``ray.cancel(force=True)`` racing a task's reply aborted the driver (Ray 2.x,
        # task_manager.cc "Tried to complete task that was not pending", CI 2026-12-03), so
        # Ctrl-C exited 1 with Ray's stack on stderr instead of 130 and one line.
        self.cancel_on_exit = cancel_on_exit
        self.options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries,
                        "retry_exceptions": False}

    def run(self, fn: TaskFn, plan: Plan, record: Record, flight: Flight) -> None:
        ray = self.ray
        remote = ray.remote(_ray_task).options(**self.options)
        pending: dict[Any, tuple[list[int], str]] = {}  # object ref -> (run indices, submitted at)
        limit = self.limit or len(plan.works)
        try:
            while True:
                while len(pending) < limit and plan.left:
                    indices = plan.take()  # claimed in the store before it is submitted
                    if not indices:
                        break
                    args = [plan.works[i].arg for i in indices]
                    pending[remote.remote(fn, args, self.threads)] = (indices, now())
                flight(sum(len(ix) for ix, _ in pending.values()))
                if not pending:
                    if not plan.left:
                        return
                    time.sleep(scheduler.CLAIM_POLL)  # the rest are held by another command
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1,
                                    timeout=scheduler.CLAIM_POLL if plan.left else None)
                for ref in ready:
                    indices, submitted = pending.pop(ref)
                    try:
                        outs = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the worker died max_retries + 1 times, or the node did
                        first = (str(e).strip().splitlines() or [""])[0]
                        outs = [failed(plan.works[i], f"{type(e).__name__} after {self.max_retries} retries: "
                                                      f"{first}", submitted) for i in indices]
                    for out in outs:
                        record(out)
        finally:  # done, Ctrl-C or an error: what finished is stored; stop the rest
            if self.cancel_on_exit:
                for ref in pending:
                    with contextlib.suppress(Exception):  # best effort: the cluster may be gone too
                        ray.cancel(ref)
