"""Named experiments: each seed answer's claim and each paper's finding, run, stored and
stated in one sentence built from the measured numbers (never written in advance).

``run_experiment(name, out, quick)`` runs one, stores its result in ``out/runs.db``
(table ``experiments``; its training runs in ``runs``) and returns it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..datasets import load_dataset
from ..store import Store, now
from . import degradation, equivalence, lesion, long_skips, seed_costs, trainability
from .context import Context

# name -> run(ctx) -> {"claim", "outcome", ...numbers}
EXPERIMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "equivalence": equivalence.run,
    "degradation": degradation.run,
    "lesion": lesion.run,
    "rezero": trainability.rezero,
    "deep-supervision": trainability.deep_supervision,
    "parameter-efficiency": trainability.parameter_efficiency,
    "long-skips": long_skips.run,
    "seed-costs": seed_costs.run,
}


def run_experiment(name: str, out: str, quick: bool = False, workers: int = 1, dataset: str = "mnist1d",
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    started, start = now(), time.perf_counter()
    data = load_dataset(dataset)
    with Store(out) as store:
        ctx = Context(data, quick, store, workers, progress)
        result = EXPERIMENTS[name](ctx)
        result = {"experiment": name, "quick": quick, **result, "seconds": time.perf_counter() - start}
        store.add_experiment(name, quick, result, started)
    return result


__all__ = ["EXPERIMENTS", "run_experiment", "Context"]
