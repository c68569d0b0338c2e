"""Training runs as the scheduler's work: what one task does, and ``run_all``.

``execute_group`` is the task function of every training run: a picklable function of
spec dicts, so this process, a local worker or a Ray task (:mod:`skiplab.run.executors`) can
run it; it never raises (an error becomes a ``failed`` output with its reason). Seeds of
one configuration go to one task and train as one batched computation
(:mod:`skiplab.run.batched`); each seed is still claimed, stored and resumed on its own, so a
finished seed is never run again. Resume, claims, retries and storing are the
scheduler's (:mod:`skiplab.run.scheduler`); :func:`run_all` picks the executor.
"""

from __future__ import annotations

import io
import os
import traceback
from typing import Any, Callable

import torch

from ..datasets import Dataset, load_dataset
from ..errors import UserError
from ..provenance import hardware, versions
from ..store import Store, now
from . import scheduler
from .batched import train_seeds, why_not_batched, why_not_batched_alone
from .config import RunSpec
from .executors import Inline, Pool
from .loop import OnStep

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


def dataset_for(name: str, label: str = "label") -> Dataset:
    """A dataset by its reference, loaded once per process (training runs and experiments
    share this cache)."""
    if (name, label) not in _DATA:
        _DATA[(name, label)] = load_dataset(name, label)
    return _DATA[(name, label)]


def _dataset(spec: RunSpec) -> Dataset:
    return dataset_for(spec.dataset, spec.label)


def execute(spec_dict: dict[str, Any], on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Train one run; never raises: an error becomes status ``failed`` with its message.
    ``on_step(step, total, loss)`` reports progress (in-process use only)."""
    return execute_group([spec_dict], None if on_step is None else
                         lambda step, total, loss, seeds: on_step(step, total, loss))[0]


def execute_group(spec_dicts: list[dict[str, Any]], on_step: OnStep | None = None,
                  keep_weights: bool = False) -> list[dict[str, Any]]:
    """Train runs that differ only by seed as one batched computation
    (:func:`skiplab.run.batched.train_seeds`), or one by one where batching does not apply;
    never raises: an error becomes status ``failed`` with its message, for the run that
    raised (the loop) or for every run of the batch. ``on_step(step, total, loss,
    seeds)`` reports progress (in-process use only). ``keep_weights``: each complete run's
    output carries its trained state dict as ``artifact`` (bytes), stored with the run.
    Returns one output per run, in order."""
    started = now()
    specs = [RunSpec.from_dict(d) for d in spec_dicts]
    if len(specs) > 1 and why_not_batched(specs) is not None:  # each alone: one failure costs one run
        return [execute_group([d], on_step, keep_weights)[0] for d in spec_dicts]
    try:
        trained = train_seeds(specs, _dataset(specs[0]), on_step)
    except Exception as e:  # noqa: BLE001 - a failed run is stored, the rest go on
        tb = traceback.format_exc(limit=5)
        return [failed_output(s, f"{type(e).__name__}: {e}", started, tb) for s in specs]
    outs = []
    for s, (model, r) in zip(specs, trained):
        out = _output(s, r.status, r.summary(), r.curves, started)
        if keep_weights and r.status == "complete":
            out["artifact"] = state_bytes(model)
        outs.append(out)
    return outs


def execute_keeping_weights(spec_dicts: list[dict[str, Any]], on_step: OnStep | None = None) -> list[dict[str, Any]]:
    """:func:`execute_group` with each complete run's weights kept (the task function of
    experiments that operate on their trained models: equivalence, lesion)."""
    return execute_group(spec_dicts, on_step, keep_weights=True)


def state_bytes(model: torch.nn.Module) -> bytes:
    """A model's state dict as bytes (``torch.save``), for the store."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def load_state(data: bytes) -> dict[str, torch.Tensor]:
    """The state dict :func:`state_bytes` wrote (tensors only: ``weights_only``)."""
    return torch.load(io.BytesIO(data), weights_only=True)


def group_key(spec: RunSpec) -> tuple[str, ...]:
    """Runs with the same key train as one task: the seeds of one configuration, unless
    they would train with the loop anyway (``engine="loop"``, or a family that batches
    slower on the CPU): then each run is its own task, and runs go in parallel."""
    return (spec.spec_hash,) if why_not_batched_alone(spec) is None else (spec.spec_hash, str(spec.seed))


RETRIES = 2  # a run whose worker process dies is started again this many times, then stored failed


def store_result(store: Store, out: dict[str, Any]) -> int:
    return scheduler.store_output(store, out)


def works_of(specs: list[RunSpec]) -> list[scheduler.Work]:
    """Training runs as the scheduler's work, a configuration's seeds one task where they
    batch (:func:`group_key`)."""
    return [scheduler.Work(s.spec_hash, s.seed, s.to_dict(), group_key(s)) for s in specs]


def executor_for(tasks: int, workers: int = 1, threads: int | None = None, retries: int | None = None,
                 on_step: Callable | None = None) -> Any:
    """This process for one worker or one task (where progress can show each step), else a
    pool of ``workers`` processes with ``threads`` torch threads each (default: the cores
    shared out)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers: must be an integer >= 1, got {workers!r}")
    if workers == 1 or tasks <= 1:
        return Inline(threads, on_step)
    return Pool(min(workers, tasks), threads or max(1, (os.cpu_count() or 1) // workers),
                RETRIES if retries is None else retries)


def run_all(specs: list[RunSpec], store: Store, workers: int = 1,
            on_done: Callable[[int, int, dict[str, Any]], None] | None = None,
            threads: int | None = None, retries: int | None = None,
            on_flight: Callable[[int], None] | None = None, on_step: OnStep | None = None,
            keep_weights: bool = False) -> dict[str, int]:
    """Train every spec not already finished in ``store`` through the scheduler
    (:func:`skiplab.run.scheduler.schedule`: resume, claims, storing) on this process or a
    pool (:func:`executor_for`). ``on_done(done, total, result)`` reports progress;
    ``on_flight(seeds)`` the runs in training now; ``on_step`` each step (this process
    only). ``threads``: torch threads in each run, wherever it runs (the same count gives
    the same numbers on the CPU). ``retries``: times a run whose worker process died is
    started again (default ``RETRIES``). ``keep_weights``: store each complete run's
    trained weights with it. Returns counts by status, plus ``skipped``, ``elsewhere``
    and ``retried`` (:func:`skiplab.run.scheduler.schedule`)."""
    works = works_of(specs)
    tasks = len({w.task_key for w in works if w.key not in store.finished_keys()}) if works else 0
    executor = executor_for(tasks, workers, threads, retries, on_step)
    fn = execute_keeping_weights if keep_weights else execute_group  # looked up now: tests replace them
    return scheduler.schedule(works, store, fn, executor, on_done, on_flight)
