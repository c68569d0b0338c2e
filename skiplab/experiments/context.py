"""What an experiment gets to work with: data, the store, and ways to train runs.

Every training run an experiment makes goes to the store's ``runs`` table (keyed by spec
hash and seed, like ``skiplab train``'s), whether it is a ``RunSpec`` trained by the
runner (:meth:`Context.train`), a ``RunSpec`` whose trained model the experiment then
operates on (:meth:`Context.train_models`: equivalence, lesion), or a network of the
experiment's own (:meth:`Context.run_jobs`: long-skips' U-Net).

``dataset`` is the reference every spec carries: a registry name (``mnist1d``) or the
absolute path the user's path resolved to, once, in the parent process, so that a worker
process (or a later resume from another working directory) reads the same file.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..datasets import Dataset, TextDataset, load_dataset
from ..model import build_model
from ..provenance import hardware, versions
from ..runner import run_all, store_result
from ..store import Store, now
from ..train import RunSpec, train_model

# A job: its store key (spec hash, seed), a picklable function and that function's one argument.
Job = tuple[tuple[str, int], Callable[[Any], dict[str, Any]], Any]
POOL_ATTEMPTS = 3  # pools to try before the runs a dying worker took with it are stored as failed


@dataclass
class Context:
    data: Dataset | TextDataset  # a text for the language-model experiments
    quick: bool
    store: Store
    workers: int = 1
    progress: Callable[[str], None] | None = None
    dataset: str = "mnist1d"  # what specs name: a registry name, an absolute path or a text's name@sha
    name: str = "experiment"
    runs: int = 0  # training runs this experiment asked for, so far
    failed: list[str] = field(default_factory=list)  # the reason of each that failed

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def run_spec(self, model, train, seed: int, group: str = "") -> RunSpec:
        """A run on this experiment's dataset (never ``data.name``: that is a file's
        bare name, which a worker in another folder could not open)."""
        return RunSpec(model, train, self.dataset, seed, group or f"exp:{self.name}")

    # -- bookkeeping shared by every way of training ------------------------------------
    def _account(self, rows: list[dict[str, Any]]) -> None:
        """Count the runs and their failures; all of them failed is an error (one line,
        naming the first reason): no outcome could be built from nothing."""
        self.runs += len(rows)
        reasons = [(r["result"] or {}).get("message") or "no reason stored" for r in rows if r["status"] == "failed"]
        self.failed += reasons
        if rows and len(reasons) == len(rows):
            raise ValueError(f"experiment {self.name}: all {len(rows)} training runs failed; the first: {reasons[0]}")

    def failure_note(self) -> str:
        """A sentence for the outcome when some runs failed (empty when none did)."""
        if not self.failed:
            return ""
        return (f" {len(self.failed)} of {self.runs} training runs failed and are left out "
                f"(the first: {self.failed[0]}).")

    def _progress(self, done: int, total: int, out: dict[str, Any]) -> None:
        m = out["spec"]["model"]
        self.say(f"run {done}/{total}: {m['skip']} depth {m['depth']}, seed {out['seed']}: {out['status']}")

    # -- three ways to train ------------------------------------------------------------
    def train(self, specs: list[RunSpec]) -> list[dict[str, Any]]:
        """Train ``specs`` (runs already in the store are reused) and return their stored
        rows, in the order given."""
        run_all(specs, self.store, workers=self.workers, on_done=self._progress)
        stored = {(r["spec_hash"], r["seed"]): r for r in self.store.runs()}
        rows = [stored[(s.spec_hash, s.seed)] for s in specs]
        self._account(rows)
        return rows

    def train_models(self, specs: list[RunSpec]) -> list[tuple[dict[str, Any], torch.nn.Module | None]]:
        """Train ``specs`` and return, in order, each stored row with its trained model
        (None where the run failed or diverged). A model is not in the store, so every
        run is trained here; its row replaces an earlier one of the same key."""
        outs = self.run_jobs([((s.spec_hash, s.seed), _train_keeping_weights, s.to_dict()) for s in specs],
                             reuse=False)
        models = []
        for spec, out in zip(specs, outs):
            state = out.get("state")
            model = None
            if state is not None:
                model = build_model(spec.model, seed=spec.seed)
                model.load_state_dict(state)
                model.eval()
            models.append((out, model))
        return models

    def run_jobs(self, jobs: list[Job], reuse: bool = True) -> list[dict[str, Any]]:
        """Run each ``fn(arg)`` (in ``workers`` processes when more than one) and store
        what it returns: a run output as :func:`skiplab.runner.store_result` takes it
        (``spec``, ``spec_hash``, ``seed``, ``status``, ``result``, ``curves``, ...), plus
        anything else the caller wants back (kept out of the store). With ``reuse``, a
        job whose key is already finished in the store is not run; its stored row is
        returned instead. Returns, in order, each job's output."""
        keys = [key for key, _, _ in jobs]
        finished = self.store.finished_keys() if reuse else set()
        stored = {(r["spec_hash"], r["seed"]): r for r in self.store.runs()} if reuse else {}
        outs: list[dict[str, Any] | None] = [stored[k] if k in finished else None for k in keys]
        todo = [i for i, o in enumerate(outs) if o is None]
        done = 0

        def record(i: int, out: dict[str, Any]) -> None:
            nonlocal done
            out["id"] = store_result(self.store, out)
            outs[i] = out
            done += 1
            self._progress(done, len(todo), out)

        if self.workers == 1 or len(todo) <= 1:
            for i in todo:
                record(i, jobs[i][1](jobs[i][2]))
        else:
            threads = max(1, (os.cpu_count() or 1) // self.workers)  # as the runner: the cores, shared out
            left, error = list(todo), ""
            for _ in range(POOL_ATTEMPTS):  # a worker that dies breaks the pool: the rest go to a new one
                if not left:
                    break
                with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=torch.set_num_threads, initargs=(threads,)) as pool:
                    futures = {pool.submit(jobs[i][1], jobs[i][2]): i for i in left}
                    try:
                        for fut in as_completed(futures):
                            try:
                                out = fut.result()
                            except BrokenProcessPool as e:
                                error = f"BrokenProcessPool: a worker process died ({e})"
                                continue
                            record(futures[fut], out)
                    except BaseException:  # Ctrl-C: what finished is stored; do not wait for the rest
                        pool.shutdown(wait=False, cancel_futures=True)
                        raise
                left = [i for i in left if outs[i] is None]
            for i in left:  # still not run after POOL_ATTEMPTS pools: stored as failed, with the reason
                spec = jobs[i][2]
                record(i, run_output(spec, jobs[i][0][0], "failed",
                                     {"status": "failed", "seed": jobs[i][0][1],
                                      "message": f"{error} after {POOL_ATTEMPTS} attempts"}, [], now()))
        self._account(outs)
        return outs


def run_output(spec: dict[str, Any], spec_hash: str, status: str, result: dict[str, Any],
               curves: list, started: str, **extra) -> dict[str, Any]:
    """A run's output in the shape the store takes (as :mod:`skiplab.runner` builds it)."""
    return {"spec": spec, "spec_hash": spec_hash, "seed": spec["seed"], "status": status, "result": result,
            "curves": curves, "started_at": started, "versions": versions(), "hardware": hardware(), **extra}


_DATA: dict[tuple[str, str], Dataset] = {}  # per process: each dataset loaded once


def dataset_for(name: str, label: str = "label") -> Dataset:
    if (name, label) not in _DATA:
        _DATA[(name, label)] = load_dataset(name, label)
    return _DATA[(name, label)]


def _train_keeping_weights(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """One ``RunSpec`` trained as the runner trains it, returning also the weights (a
    state dict, small for these MLPs) so that the parent can operate on the model."""
    spec = RunSpec.from_dict(spec_dict)
    started, start = now(), time.perf_counter()
    try:
        model, result = train_model(spec, dataset_for(spec.dataset, spec.label))
    except Exception as e:  # noqa: BLE001 - a failed run is stored with its reason; the rest go on
        return run_output(spec_dict, spec.spec_hash, "failed",
                          {"status": "failed", "seed": spec.seed, "message": f"{type(e).__name__}: {e}",
                           "traceback": traceback.format_exc(limit=5), "seconds": time.perf_counter() - start},
                          [], started)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if result.status == "complete" else None
    return run_output(spec_dict, spec.spec_hash, result.status, result.summary(), result.curves, started, state=state)
