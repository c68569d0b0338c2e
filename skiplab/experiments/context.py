"""What an experiment gets to work with: data, the store, and ways to train runs.

Every training run an experiment makes goes to the store's ``runs`` table (keyed by spec
hash and seed, like ``skiplab train``'s), whether it is a ``RunSpec`` trained by the
runner (:meth:`Context.train`), a ``RunSpec`` whose trained model the experiment then
operates on (:meth:`Context.train_models`: equivalence, lesion; the weights are stored with
the run, so a resume loads them rather than training again), or a network of the
experiment's own (:meth:`Context.run_jobs`: long-skips' U-Net). All three go through the
one scheduler (:mod:`skiplab.run.scheduler`): resumed, claimed in the store, a dead worker's
runs retried.

``dataset`` is the reference every spec carries: a registry name (``mnist1d``) or the
absolute path the user's path resolved to, once, in the parent process, so that a worker
process (or a later resume from another working directory) reads the same file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..datasets import Dataset, TextDataset
from ..model import build_model
from ..provenance import hardware, versions
from ..run.config import RunSpec
from ..run.runner import execute_keeping_weights, executor_for, load_state, run_all
from ..run.scheduler import Work, schedule
from ..store import Store


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
        """Count the runs and their failures; all of them failed is an error: no outcome
        could be built from nothing. Not the user's (the inputs were checked before any
        training): an internal error, whose first line names the first reason and whose
        log (``skiplab.cli.main``) holds that run's stored traceback."""
        self.runs += len(rows)
        failed = [r for r in rows if r["status"] == "failed"]
        reasons = [(r["result"] or {}).get("message") or "no reason stored" for r in failed]
        self.failed += reasons
        if rows and len(reasons) == len(rows):
            tb = (failed[0]["result"] or {}).get("traceback") or ""
            raise RuntimeError(f"experiment {self.name}: all {len(rows)} training runs failed; the first: {reasons[0]}"
                               + (f"\n\nthe first run's traceback, as stored:\n{tb}" if tb else ""))

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
    def _rows(self, keys: list[tuple[str, int]], specs: list[Any]) -> list[dict[str, Any]]:
        """The stored rows of these runs, in order; the bookkeeping counts them. A row the
        store could not read (it warned, naming it) counts as a failed run of ``specs``'."""
        stored = {(r["spec_hash"], r["seed"]): r for r in self.store.runs()}
        rows = [stored.get(k) or {"id": None, "spec_hash": k[0], "seed": k[1], "status": "failed",
                                  "spec": spec if isinstance(spec, dict) else {},
                                  "result": {"message": "its stored row is corrupt (skipped: see the warning)"}}
                for k, spec in zip(keys, specs)]
        self._account(rows)
        return rows

    def train(self, specs: list[RunSpec]) -> list[dict[str, Any]]:
        """Train ``specs`` (runs already in the store are reused) and return their stored
        rows, in the order given."""
        run_all(specs, self.store, workers=self.workers, on_done=self._progress)
        return self._rows([(s.spec_hash, s.seed) for s in specs], [s.to_dict() for s in specs])

    def train_models(self, specs: list[RunSpec]) -> list[tuple[dict[str, Any], torch.nn.Module | None]]:
        """Train ``specs`` and return, in order, each stored row with its trained model
        (None where the run failed or diverged). Each complete run's weights are stored
        with it, so a run already in the store is loaded, not trained again; one stored
        without weights (by ``skiplab train``, or before weights were kept) is trained
        again here for its model, and its row stays as it was."""
        run_all(specs, self.store, workers=self.workers, on_done=self._progress, keep_weights=True)
        rows = self._rows([(s.spec_hash, s.seed) for s in specs], [s.to_dict() for s in specs])
        models = []
        for spec, row in zip(specs, rows):
            model = None
            if row["status"] == "complete":
                data = self.store.artifact(spec.spec_hash, spec.seed)
                if data is None:
                    data = execute_keeping_weights([spec.to_dict()])[0].get("artifact")
                if data is not None:
                    model = build_model(spec.model, seed=spec.seed)
                    model.load_state_dict(load_state(data))
                    model.eval()
            models.append((row, model))
        return models

    def run_jobs(self, fn: Callable[[list[Any]], list[dict[str, Any]]],
                 jobs: list[tuple[tuple[str, int], Any]]) -> list[dict[str, Any]]:
        """Each job ``(store key (spec hash, seed), argument)`` through ``fn``, a picklable
        function of a list of arguments returning one run output per argument (the shape
        :func:`skiplab.run.scheduler.store_output` takes), on this process or ``workers``
        processes, through the scheduler: a job already finished in the store is not run
        again. Returns, in order, each job's stored row."""
        works = [Work(h, seed, arg) for (h, seed), arg in jobs]
        finished = self.store.finished_keys()
        executor = executor_for(sum(w.key not in finished for w in works), self.workers)
        schedule(works, self.store, fn, executor, self._progress)
        return self._rows([w.key for w in works], [w.arg for w in works])


def run_output(spec: dict[str, Any], spec_hash: str, status: str, result: dict[str, Any],
               curves: list, started: str, **extra) -> dict[str, Any]:
    """A run's output in the shape the store takes (as :mod:`skiplab.run.runner` builds it)."""
    return {"spec": spec, "spec_hash": spec_hash, "seed": spec["seed"], "status": status, "result": result,
            "curves": curves, "started_at": started, "versions": versions(), "hardware": hardware(), **extra}
