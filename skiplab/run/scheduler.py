"""The one scheduler: which runs to train, who trains each, and storing what comes back.

Every command that trains (``train``, ``study``, ``experiment``, ``sweep`` on either
backend) hands its runs to :func:`schedule`, which keeps the promises docs/study.md makes,
whatever executes the work (:mod:`skiplab.run.executors`: this process, a pool of local
processes, or Ray):

* **Resume**: a run already finished in the store (``complete`` or ``diverged``) is not
  trained again; a ``failed`` one is.
* **Claims and their lease**: each run is claimed in the store just before it is trained
  (:meth:`skiplab.store.Store.claim`), on every executor, so two commands on one store
  never train the same run; a run another command holds is waited for, then counted
  ``elsewhere``. The claims are renewed while the command runs and dropped when it ends
  (Ctrl-C too); a dead holder's claims are taken over.
* **One writer**: only this process writes the store, each run as it comes back, with
  the trained model's weights where the task returns them (``artifact``; an experiment
  that operates on its models loads them on resume instead of training them again).
* **Retries and failures** are the executor's: a task whose worker dies is retried, then
  stored ``failed`` with the reason; the other runs go on.
* **Progress**: ``on_done(done, total, output)`` per run stored, ``on_flight(n)`` whenever
  the runs in training change.

A unit of work is a :class:`Work`: a run's store key, the picklable argument its task
function receives, and a group (works of one group, such as a configuration's seeds, go
to one task: they train as one batched computation).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..store import Store, finite_run, now

CLAIM_POLL = 1.0  # seconds between looks at runs another command holds
# Test hook: "N" makes the command SIGKILL itself (the parent, the store's writer) right
# after it has stored its N-th run: a command killed at a known point (tests/test_faults.py).
TEST_PARENT_DIES_ENV = "SKIPLAB_TEST_PARENT_DIES_AFTER"

# A task function: the argument of each work of a task -> one output per work, in order,
# each in the shape :func:`store_output` takes. Module-level, so that it pickles by name.
TaskFn = Callable[[list[Any]], list[dict[str, Any]]]
OnDone = Callable[[int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class Work:
    spec_hash: str
    seed: int
    arg: Any  # what the task function receives for this run (a RunSpec dict, say)
    group: tuple = ()  # works with the same group run as one task; () = a task of its own

    @property
    def key(self) -> tuple[str, int]:
        return self.spec_hash, self.seed

    @property
    def task_key(self) -> tuple:
        return self.group or self.key


def store_output(store: Store, out: dict[str, Any]) -> int:
    """Store one run's output (``spec``, ``spec_hash``, ``seed``, ``status``, ``result``,
    ``curves``, ``started_at``, ``versions``, ``hardware``, and an optional ``artifact``:
    the trained weights as bytes), made finite first (``out`` is updated to what is
    stored: :func:`skiplab.store.finite_run`). Ctrl-C waits until the run and the count of runs this
    command stored are both written: a SIGINT arriving during the commit (milliseconds,
    with the disk's sync) would otherwise land between the two, and the interrupted line
    would miscount."""
    # as stored: a NaN or infinity makes it diverged (skiplab.store.finite_run), which the
    # counts and progress below then report, as the store holds it
    out["status"], out["result"], out["curves"] = finite_run(out["status"], out["result"], out["curves"])
    with _interrupts_held():
        return store.add_run(out["spec"], out["spec_hash"], out["seed"], out["status"], out["result"], out["curves"],
                             out["started_at"], out.get("versions"), out.get("hardware"), artifact=out.get("artifact"))


@contextlib.contextmanager
def _interrupts_held():
    """Ctrl-C deferred for the block (in the main thread) and delivered when it ends.
    A handler that only notes the signal, not a signal mask: the kernel gives a process's
    SIGINT to any thread that does not block it (the lease's renewer, a pool's threads),
    and Python then runs the handler in the main thread at once, mid-block, so a mask on
    the main thread alone let a Ctrl-C land between a stored run and its count (seen in
    CI: "2 runs stored (1 by this command)")."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if old is None else old)  # None: not set from Python
        if caught:  # delivered now, to whatever handler the command had
            signal.raise_signal(signal.SIGINT)


class Plan:
    """The runs still to do, each claimed just before it starts: ``take()`` gives the next
    task this command may train (a work and its group-mates still to do), or [] while
    every run left is held by another command (wait, then ask again); ``left`` says
    whether any run is still to do; ``retry`` puts a run back at the front."""

    def __init__(self, works: list[Work], store: Store, counts: dict[str, int]):
        self.works, self.store, self.counts = works, store, counts
        self.queue = collections.deque(range(len(works)))
        self.since = now()

    @property
    def left(self) -> bool:
        return bool(self.queue)

    def retry(self, index: int) -> None:
        self.queue.appendleft(index)  # still claimed by us: taken again at once

    def _claim(self, index: int) -> bool:
        work = self.works[index]
        state = self.store.claim(work.spec_hash, work.seed, self.since)
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
        key, task = self.works[first].task_key, [first]
        for _ in range(len(self.queue)):  # its group-mates, in queue order (the rest keep theirs)
            index = self.queue.popleft()
            if self.works[index].task_key != key:
                self.queue.append(index)
            elif self._claim(index):
                task.append(index)
        return task

    def tasks(self, wait: Callable[[float], None]) -> Iterator[list[int]]:
        """Each task this command may train, in order, waiting while others hold the rest."""
        while self.left:
            indices = self.take()
            if indices:
                yield indices
            else:
                wait(CLAIM_POLL)


def schedule(works: list[Work], store: Store, fn: TaskFn, executor: Any,
             on_done: OnDone | None = None, on_flight: Callable[[int], None] | None = None) -> dict[str, int]:
    """Train every work not already finished in ``store`` with ``fn`` on ``executor``
    (:mod:`skiplab.run.executors`), storing each output as it comes. Returns counts by status,
    plus ``skipped`` (already finished), ``elsewhere`` (stored by another command on the
    same store meanwhile) and ``retried`` (runs started again after their worker died)."""
    finished = store.finished_keys()
    todo = [w for w in works if w.key not in finished]
    counts = {"skipped": len(works) - len(todo)}
    if not todo:
        return counts
    done = 0

    die_after = int(os.environ.get(TEST_PARENT_DIES_ENV) or 0)

    def record(out: dict[str, Any]) -> None:
        nonlocal done
        store_output(store, out)
        counts[out["status"]] = counts.get(out["status"], 0) + 1
        done += 1
        if done == die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if on_done:
            on_done(done, len(todo), out)

    plan = Plan(todo, store, counts)
    with store.lease():
        executor.run(fn, plan, record, on_flight or (lambda n: None))
    return counts


def failed(work: Work, message: str, started: str | None = None, tb: str = "") -> dict[str, Any]:
    """A ``failed`` output for a run that no task gave back (its worker died), so that it is
    stored with the reason and tried again by the next resume."""
    from ..provenance import hardware, versions

    spec = work.arg if isinstance(work.arg, dict) else {"arg": repr(work.arg)}
    return {"spec": spec, "spec_hash": work.spec_hash, "seed": work.seed, "status": "failed",
            "result": {"status": "failed", "seed": work.seed, "message": message, "traceback": tb}, "curves": [],
            "started_at": started or now(), "versions": versions(), "hardware": hardware()}
