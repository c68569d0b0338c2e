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
from ..engine import train_seeds
from ..runner import group_key, run_all, store_result
from ..store import Store, now
from ..train import RunSpec

# A job: its store key (spec hash, seed), a picklable function and that function's one argument.
Job = tuple[tuple[str, int], Callable[[Any], dict[str, Any]], Any]
POOL_ATTEMPTS = 3  # pools to try before the runs a dying worker took with it are stored as failed
# A job's output may carry, under this key, the outputs of the runs trained with it (a
# configuration's other seeds, batched: skiplab.engine); each is stored as its own run.
ALSO = "also"


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
        groups: dict[tuple[str, ...], list[int]] = {}  # a configuration's seeds train batched, as in run_all
        for i, spec in enumerate(specs):
            groups.setdefault(group_key(spec), []).append(i)
        jobs = [((specs[ix[0]].spec_hash, specs[ix[0]].seed), _train_keeping_weights, [specs[i].to_dict() for i in ix])
                for ix in groups.values()]
        by_index: dict[int, dict[str, Any]] = {}
        for ix, out in zip(groups.values(), self.run_jobs(jobs, reuse=False)):
            by_index.update(zip(ix, [out, *out.get(ALSO, [])]))
        models = []
        for spec, out in zip(specs, (by_index[i] for i in range(len(specs)))):
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
        returned instead. A job whose argument is a list trains several runs (a
        configuration's seeds): its output carries the others' outputs under ``ALSO``, and
        each is stored. Returns, in order, each job's output."""
        keys = [key for key, _, _ in jobs]
        finished = self.store.finished_keys() if reuse else set()
        stored = {(r["spec_hash"], r["seed"]): r for r in self.store.runs()} if reuse else {}
        outs: list[dict[str, Any] | None] = [stored[k] if k in finished else None for k in keys]
        todo = [i for i, o in enumerate(outs) if o is None]
        done, total = 0, sum(len(jobs[i][2]) if isinstance(jobs[i][2], list) else 1 for i in todo)

        def record(i: int, out: dict[str, Any]) -> None:
            nonlocal done
            for o in [out, *out.get(ALSO, [])]:
                o["id"] = store_result(self.store, o)
                done += 1
                self._progress(done, total, o)
            outs[i] = out

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
                arg = jobs[i][2]
                fails = [run_output(spec, jobs[i][0][0], "failed",
                                    {"status": "failed", "seed": spec["seed"] if isinstance(arg, list) else jobs[i][0][1],
                                     "message": f"{error} after {POOL_ATTEMPTS} attempts"}, [], now())
                         for spec in (arg if isinstance(arg, list) else [arg])]
                record(i, {**fails[0], ALSO: fails[1:]})
        self._account([o for out in outs for o in [out, *out.get(ALSO, [])]])
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


def _train_keeping_weights(spec_dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds of one configuration (``RunSpec`` dicts) trained as the runner trains them
    (batched where :mod:`skiplab.engine` can), returning also each one's weights (a state
    dict, small for these MLPs) so that the parent can operate on the models: the first
    run's output, the others' under ``ALSO``."""
    specs = [RunSpec.from_dict(d) for d in spec_dicts]
    started, start = now(), time.perf_counter()
    try:
        trained = train_seeds(specs, dataset_for(specs[0].dataset, specs[0].label))
    except Exception as e:  # noqa: BLE001 - a failed run is stored with its reason; the rest go on
        tb = traceback.format_exc(limit=5)
        outs = [run_output(d, s.spec_hash, "failed",
                           {"status": "failed", "seed": s.seed, "message": f"{type(e).__name__}: {e}",
                            "traceback": tb, "seconds": time.perf_counter() - start}, [], started)
                for d, s in zip(spec_dicts, specs)]
    else:
        outs = [run_output(d, s.spec_hash, result.status, result.summary(), result.curves, started,
                           state={k: v.detach().cpu() for k, v in model.state_dict().items()}
                           if result.status == "complete" else None)
                for d, s, (model, result) in zip(spec_dicts, specs, trained)]
    return {**outs[0], ALSO: outs[1:]}
