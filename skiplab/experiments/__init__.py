"""Named experiments: each seed answer's claim and each paper's finding, run, stored and
stated in one sentence built from the measured numbers (never written in advance).

``run_experiment(name, out, quick)`` runs one, stores its result in ``out/runs.db``
(table ``experiments``; its training runs in ``runs``) and returns it.

Each experiment declares, as data, which options apply to it (``Experiment``): an option
given to an experiment it does not apply to is refused with one line, never ignored.
The default form of each answers its claim (its module's docstring states the regime it
must reach and checks it); ``quick`` is a smoke test whose numbers prove nothing.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..datasets import dataset_ref
from ..errors import UserError


@dataclass(frozen=True)
class Experiment:
    """A registry entry: where the experiment's code is (imported only when it runs, so that
    the report and the command line's help read the names without loading training code)
    and which options apply to it."""

    module: str  # a module of this package
    function: str  # run(ctx, **form) -> {"claim", "outcome", "verdict", ...numbers}
    uses_data: bool  # trains on a dataset: --dataset applies
    uses_workers: bool  # trains more than one run: --workers applies
    why_not: str = ""  # for an option that does not apply, the reason given
    # The data it trains on unless --dataset says otherwise: a numeric dataset (mnist1d) for
    # the MLP and CNN experiments, a text (pydoc) for the transformer ones, which then take
    # only texts (pydoc or a .txt file), as the others take only numeric data.
    default_dataset: str = "mnist1d"

    @property
    def takes_text(self) -> bool:
        from ..datasets import is_text_ref
        return is_text_ref(self.default_dataset)

    @property
    def run(self) -> Callable[..., dict[str, Any]]:
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.function)


EXPERIMENTS: dict[str, Experiment] = {
    "equivalence": Experiment("equivalence", "run", uses_data=True, uses_workers=True),
    "degradation": Experiment("degradation", "run", uses_data=True, uses_workers=True),
    "lesion": Experiment("lesion", "run", uses_data=True, uses_workers=True),
    "rezero": Experiment("trainability", "rezero", uses_data=True, uses_workers=True),
    "deep-supervision": Experiment("trainability", "deep_supervision", uses_data=True, uses_workers=True),
    "parameter-efficiency": Experiment("trainability", "parameter_efficiency", uses_data=True, uses_workers=True),
    "long-skips": Experiment("long_skips", "run", uses_data=True, uses_workers=True),
    "denseformer": Experiment("transformers", "denseformer", uses_data=True, uses_workers=True,
                              default_dataset="pydoc"),
    "hyper-gain": Experiment("transformers", "hyper_gain", uses_data=True, uses_workers=True,
                             default_dataset="pydoc"),
    "norm-placement": Experiment("transformers", "norm_placement", uses_data=True, uses_workers=True,
                                 default_dataset="pydoc"),
    "dense-memory": Experiment("dense_memory", "run", uses_data=True, uses_workers=True),
    "seed-costs": Experiment("seed_costs", "run", uses_data=False, uses_workers=False,
                             why_not="it is the cost model's arithmetic: it trains nothing"),
}


def default_workers() -> int:
    """One training run per core."""
    return os.cpu_count() or 1


def check_options(name: str, workers: int | None, dataset: str | None) -> Experiment:
    """The experiment called ``name``, once the options given are known to apply to it."""
    if name not in EXPERIMENTS:
        raise UserError(f"experiment: unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    for flag, given, applies in (("--dataset", dataset, exp.uses_data), ("--workers", workers, exp.uses_workers)):
        if given is not None and not applies:
            raise UserError(f"{flag}: does not apply to experiment {name} ({exp.why_not}); leave it out")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UserError(f"--workers: must be an integer >= 1, got {workers!r}")
    return exp


def run_experiment(name: str, out: str, quick: bool = False, workers: int | None = None,
                   dataset: str | None = None, progress: Callable[[str], None] | None = None,
                   form: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run experiment ``name``; ``workers`` (default: one per core) and ``dataset``
    (default: the experiment's ``default_dataset``; a name or a path) only where the
    experiment declares them.
    ``form`` overrides fields of the default (or quick) form, e.g. ``{"seeds": 5}``;
    the form used is stored with the result."""
    from ..datasets import Dataset, load_dataset
    from ..store import Store, now
    from .context import Context

    exp = check_options(name, workers, dataset)
    started, start = now(), time.perf_counter()
    ref = dataset_ref(dataset if dataset is not None else exp.default_dataset)
    data = load_dataset(ref)
    if exp.takes_text and isinstance(data, Dataset):  # a language-model experiment given numbers
        raise UserError(f"dataset: {data.name!r} is numeric; experiment {name} trains character language models "
                         f"and takes a text (pydoc or a .txt file)")
    if not exp.takes_text and not isinstance(data, Dataset):  # an MLP/CNN experiment given a text
        raise UserError(f"dataset: {data.name!r} is a token sequence; experiment {name} trains numeric models "
                         f"and takes numeric datasets (mnist1d, digits, a file)")
    with Store(out) as store:
        ctx = Context(data, quick, store, workers if workers is not None else default_workers(), progress,
                      dataset=ref, name=name)
        result = exp.run(ctx, **(form or {}))
        result = {"experiment": name, "quick": quick, **result, "outcome": result["outcome"] + ctx.failure_note(),
                  "dataset": ref, "training_runs": ctx.runs, "failed_runs": len(ctx.failed),
                  "seconds": time.perf_counter() - start}
        store.add_experiment(name, quick, result, started)
    return result


__all__ = ["EXPERIMENTS", "Experiment", "run_experiment", "check_options", "dataset_ref"]
