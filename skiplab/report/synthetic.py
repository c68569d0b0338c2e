"""A results store filled with made-up results, to test and time the report without
training anything (``tests/test_report.py``, ``benchmarks/report_render.py``).

Everything but the numbers is real: the plan, its spec hashes, the run specs and the
analytic costs come from :class:`~skiplab.study.StudyPlan` exactly as a study writes them.
Accuracies follow a simple made-up law (plain falls with depth, the others less) plus
seeded noise, so the report has differences to state; none of them means anything.
"""

from __future__ import annotations

from ..skips import options_text

import math
import os
import random
from typing import Callable

from ..provenance import hardware, versions
from ..run.config import RunSpec
from ..store import Store, now
from ..study import StudyPlan, cost_summaries

# Made-up accuracy law: accuracy = base - drop * log2(depth), per strategy (fraction correct).
_DROP = {"plain": 0.09, "concat-prev": 0.06, "concat-half": 0.06, "highway": 0.03, "add": 0.02, "rezero": 0.01,
         "layerscale": 0.01, "dense": 0.0, "concat-double": 0.05}
# Made-up first/last gradient ratios' decades lost per block; None: undefined (ReZero's
# branches get exactly zero gradient at init, so its ratio is 0/0).
_GRADIENT_DROP = {**_DROP, "rezero": None}


def _accuracy(skip: str, depth: int, rng: random.Random) -> float:
    return min(0.99, max(0.1, 0.68 - _DROP.get(skip, 0.03) * math.log2(max(depth, 1)) + rng.gauss(0, 0.015)))


def synthetic_store(directory: str | os.PathLike, plan: StudyPlan, runs: int | None = None, seed: int = 0,
                    accuracy: Callable[[RunSpec], float] | None = None,
                    bpc: Callable[[RunSpec], float] | None = None) -> Store:
    """Write ``plan``'s runs (only the first ``runs`` of them: a partial store) with fake
    results and curves into a new store at ``directory``; return it, open. ``accuracy``
    sets each run's final test accuracy instead of the made-up law (a store whose answer
    a test knows: a clear win, a tie, one seed). ``bpc`` makes them language-model runs:
    each run's final validation bits per character (and a bpc curve ending there)."""
    rng = random.Random(seed)
    specs = plan.runs()
    store = Store(directory)
    store.db.execute("PRAGMA synchronous=OFF")  # a throwaway store: no need to wait for the disk
    store.set_meta("plan", plan.to_dict())
    store.set_meta("plan_configs", sorted({s.spec_hash for s in specs}))
    costs = cost_summaries(plan, plan.train.batch_size)
    store.set_meta("costs", costs)
    params = {(c["group"], c["skip"], c["depth"], c["width"], options_text(c["options"])): c["params"] for c in costs}
    store.set_meta("gradients", [
        {"skip": skip, "depth": depth, "vanishing_block": None,
         **({"first_last_ratio": None, "first_last_ratio_min": None, "first_last_ratio_max": None}
            if _GRADIENT_DROP.get(skip, 0.03) is None else
            {"first_last_ratio": (r := 10 ** (-_GRADIENT_DROP.get(skip, 0.03) * depth)), "first_last_ratio_min": r / 2,
             "first_last_ratio_max": r * 2})}
        for depth in plan.depths for skip in plan.skips])
    store.set_meta("last_study_seconds", 60.0 * len(specs))
    v, hw = versions(), hardware()
    evals = plan.train.evals
    for spec in specs[:runs]:
        m = spec.model
        final = accuracy(spec) if accuracy else _accuracy(m.skip, m.depth, rng)
        steps = round(100 * spec.train.epochs)  # a regime run trains longer than the plan
        curves = []
        for i in range(1, evals + 1):
            step = round(steps * i / evals)
            acc = 0.1 + (final - 0.1) * (1 - math.exp(-3 * i / evals)) / (1 - math.exp(-3))
            curves += [(step, "train", "loss", 2.3 * (1 - acc)), (step, "train", "accuracy", acc + 0.05),
                       (step, "test", "loss", 2.3 * (1 - acc) + 0.1), (step, "test", "accuracy", acc)]
            if bpc:
                curves.append((step, "test", "bpc", bpc(spec) + 3 * (1 - i / evals)))
        result = {"status": "complete", "seed": spec.seed, "train_accuracy": final + 0.05, "test_accuracy": final,
                  "train_loss": 2.3 * (1 - final), "test_loss": 2.3 * (1 - final) + 0.1, "steps": steps,
                  "seconds": 1.0 + m.depth / 10, "message": "",
                  "params": params.get((spec.group, m.skip, m.depth, m.width, options_text(m.options)))
                  or params[("matched-params", m.skip, m.depth, m.width, options_text(m.options))]}
        if bpc:
            result |= {"val_bpc": bpc(spec), "train_bpc": bpc(spec) - 0.1, "tokens_per_second": 1e4}
        store.add_run(spec.to_dict(), spec.spec_hash, spec.seed, "complete", result, curves, now(), v, hw)
    return store
