"""What an experiment gets to work with: data, the store, and a way to train runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..datasets import Dataset
from ..runner import run_all
from ..store import Store
from ..train import RunSpec


@dataclass
class Context:
    data: Dataset
    quick: bool
    store: Store
    workers: int = 1
    progress: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def train(self, specs: list[RunSpec]) -> list[dict[str, Any]]:
        """Train ``specs`` (runs already in the store are reused) and return their stored
        rows, in the order given."""
        run_all(specs, self.store, workers=self.workers,
                on_done=lambda done, total, out: self.say(f"run {done}/{total}: {out['spec']['model']['skip']} "
                                                          f"depth {out['spec']['model']['depth']}: {out['status']}"))
        stored = {(r["spec_hash"], r["seed"]): r for r in self.store.runs()}
        return [stored[(s.spec_hash, s.seed)] for s in specs]
