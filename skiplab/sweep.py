"""Sweeps: a grid of training runs, named in a TOML file, run on this machine or on a
Ray cluster.

A sweep file has up to four tables; every key in ``[grid]`` and ``[train]`` takes one
value or a list of values, and the sweep is the product of the lists::

    [sweep]
    group = "sweep"            # stored with every run (part of its identity)
    seeds = 2                  # seeds 0..S-1, or a list such as [0, 7]

    [grid]
    model = "cnn1d"
    skip = ["plain", "add"]    # any ModelSpec field: depth, width, norm, ...; any family
    growth = 16                # option (heads, stages, ...); and any strategy option
                               # (growth, streams, ...): it goes to the strategies that
                               # declare it; one none of them declares is refused, as
                               # on the command line
    depth = [2, 12]
    dataset = "mnist1d"        # also: label_column, params | flops (a budget), vary

    [train]
    epochs = 10                # any TrainConfig field: lr, optimizer, batch_size, warmup, ...

    [resources]                # what each run gets
    num_cpus = 1               # its CPUs = torch threads, on both backends
    num_gpus = 0               # Ray only: GPUs per run
    max_retries = 3            # re-runs of a run whose worker process died (both backends)

Runs are keyed by spec hash and seed, as everywhere in skiplab, so both backends store
the same keys, and re-running a sweep skips what finished. On both, a run whose worker
process dies (SIGKILL, out of memory) is started again ``max_retries`` times, then stored
as ``failed`` with the reason, and the other runs go on. Both go through skiplab's one
scheduler (:mod:`skiplab.run.scheduler`), which claims each run in the store before it is
trained or submitted, so two commands on one store (local or Ray, in any mix) share the
work and train each run once; the driver is the store's only writer. On the ``ray``
backend Ray places the tasks and retries a dead worker's (:class:`skiplab.run.executors.Ray`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (pyproject's dependency)
    import tomli as tomllib


from .cost import match_budget
from .datasets import Dataset, dataset_ref, is_text_ref, load_dataset
from .errors import UserError
from .families import FAMILIES, all_family_options
from .fit import model_fields_from
from .run.config import RunSpec, TrainConfig
from .run.executors import Ray
from .run.runner import execute_group, run_all, works_of
from .run.scheduler import schedule
from .skips import STRATEGIES, OptionError, all_options, check_options_taken, sizing_option_names
from .spec import MODEL_KEYS, ModelSpec, SpecError
from .store import Store

BACKENDS = ("local", "ray")
VARY = ("width", *sizing_option_names())
RAY_MISSING = "sweep: the ray backend needs 'pip install skiplab[ray]'"
# A local Ray instance's object store: results are a few kB each, and Ray's default
# (30% of memory) would reserve gigabytes of shared memory for nothing.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024

OnDone = Callable[[int, int, dict[str, Any]], None]


# -- The file ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Resources:
    """What each run gets (``[resources]``). ``num_cpus`` sets each run's torch threads
    on both backends, so that local and Ray runs compute the same numbers; the rest is
    Ray's resource request; ``max_retries`` is the retry policy of both backends."""

    num_cpus: float = 1  # CPUs per run = its torch threads (at least 1); 1 suits small models best
    num_gpus: float = 0  # Ray: GPUs per run (fractions share one); set [train] device = "cuda" to use it
    max_retries: int = 3  # times a run whose worker process died is started again (both backends)

    def __post_init__(self) -> None:
        for name, low in (("num_cpus", 0.0), ("num_gpus", 0.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low \
                    or (name == "num_cpus" and v == 0):
                raise SpecError(f"{name}: must be a number {'> 0' if name == 'num_cpus' else '>= 0'}, got {v!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise SpecError(f"max_retries: must be an integer >= 0, got {self.max_retries!r}")

    @property
    def threads(self) -> int:
        """Torch threads inside a run: one per CPU it was given."""
        return max(1, int(self.num_cpus))


@dataclass(frozen=True)
class Sweep:
    """The runs a sweep file names, in grid order (seeds innermost), each key once."""

    runs: tuple[RunSpec, ...]
    resources: Resources = Resources()
    duplicates: int = 0  # grid points that named a run already in the list (e.g. an option on a strategy without it)

    @property
    def configs(self) -> int:
        return len({s.spec_hash for s in self.runs})


# every ModelSpec field and every family's options (the transformer's heads, resnet's stages, ...)
_MODEL_KEYS = tuple(k for k in MODEL_KEYS if k != "options")
_OPTION_KEYS = tuple(all_options())
_FAMILY_OPTION_KEYS = tuple(all_family_options())
_GRID_KEYS = _MODEL_KEYS + _OPTION_KEYS + ("dataset", "label_column", "params", "flops", "vary")
_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_RESOURCE_KEYS = tuple(f.name for f in dataclasses.fields(Resources))
TABLES: dict[str, tuple[str, ...]] = {"sweep": ("group", "seeds"), "grid": _GRID_KEYS, "train": _TRAIN_KEYS,
                                      "resources": _RESOURCE_KEYS}


class SweepError(UserError):
    """A sweep file that cannot be read or names something not allowed; one line that
    names the table, the key and what is allowed."""


def _fail(table: str, message: str) -> SweepError:
    return SweepError(f"sweep: [{table}] {message}")


def _check_keys(table: str, d: dict[str, Any]) -> None:
    known = TABLES[table]
    for key in d:
        if key not in known:
            raise _fail(table, f"unknown key {key!r}; known: {', '.join(known)}")


def _axis(table: str, key: str, value: Any) -> list[Any]:
    """A key's values: a list is an axis of the grid, anything else one value.
    ``input_shape`` is itself a list, so only a list of lists is an axis of shapes."""
    if isinstance(value, dict):
        raise _fail(table, f"{key}: expected a value or a list of values, got a table")
    if key == "input_shape" and isinstance(value, list) and not any(isinstance(v, list) for v in value):
        return [value]
    if not isinstance(value, list):
        return [value]
    if not value:
        raise _fail(table, f"{key}: an empty list names no runs")
    for v in value:
        if isinstance(v, (dict, list)) and key != "input_shape":
            raise _fail(table, f"{key}: a list of values may not hold {'tables' if isinstance(v, dict) else 'lists'}")
    return value


def _product(table: str, d: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the table's values, the first key varying slowest."""
    keys = list(d)
    axes = [_axis(table, k, d[k]) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def _seeds(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _fail("sweep", f"seeds: must be >= 1 (seeds 0..S-1) or a list of seeds, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value):
        if len(set(value)) != len(value):
            raise _fail("sweep", f"seeds: a seed is listed twice in {value}")
        return value
    raise _fail("sweep", f"seeds: a count S >= 1 (seeds 0..S-1) or a list of integers >= 0, got {value!r}")


def _choices(table: str, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        what = "strategy" if key == "skip" else "value"
        raise _fail(table, f"{key}: unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def _model_spec(point: dict[str, Any], data: Dataset) -> ModelSpec:
    """One grid point's model: the dataset fills in what it fixes (input_shape and classes,
    a text's vocab and classes: ``Dataset.model_fields``) unless given;
    a strategy option applies to the strategies that declare it (as on the command line)."""
    fields = {k: v for k, v in point.items() if k in _MODEL_KEYS}
    if "skip" in fields:
        _choices("grid", "skip", fields["skip"], tuple(STRATEGIES))
    if "model" in fields:
        _choices("grid", "model", fields["model"], tuple(FAMILIES))
    family = FAMILIES[fields.get("model", ModelSpec.model)]
    # a family option goes to the models whose family declares it (as a strategy option does)
    fields = {k: v for k, v in fields.items() if k not in _FAMILY_OPTION_KEYS or family.declares(k)}
    declared = {o.name for o in STRATEGIES[fields.get("skip", ModelSpec.skip)].options}
    fields["options"] = {k: v for k, v in point.items() if k in _OPTION_KEYS and k in declared}
    fields.update(model_fields_from(data, fields))
    if isinstance(fields.get("input_shape"), list):
        fields["input_shape"] = tuple(fields["input_shape"])
    try:
        spec = ModelSpec(**fields)
        spec.check_buildable()
    except SpecError as e:
        raise _fail("grid", str(e)) from None
    budget = {k: point[k] for k in ("params", "flops") if k in point}
    if not budget:
        return spec
    vary = point.get("vary", "width")
    try:
        return match_budget(spec, **budget, vary=vary if vary in declared else "width").spec
    except ValueError as e:
        raise _fail("grid", str(e)) from None


def parse_sweep(doc: dict[str, Any]) -> Sweep:
    """The runs named by a parsed sweep file (see the module docstring); raises
    SweepError naming the table and key of the first thing wrong."""
    tables = ", ".join(f"[{t}]" for t in TABLES)
    for table, body in doc.items():
        if not isinstance(body, dict):
            raise SweepError(f"sweep: key {table!r} is outside any table; every key belongs in one of {tables}")
        if table not in TABLES:
            raise SweepError(f"sweep: unknown table [{table}]; known: {tables}")
        _check_keys(table, body)
    if not any(doc.values()):  # an empty (or emptied) file would start the defaults' sweep, 30 epochs a run
        raise SweepError(f"sweep: the file names nothing (no key in any table); give at least one, e.g. "
                         f"[grid] skip = [\"add\", \"dense\"]; tables: {tables}")
    head, grid, train = doc.get("sweep", {}), doc.get("grid", {}), doc.get("train", {})
    if "params" in grid and "flops" in grid:
        raise _fail("grid", "params and flops: give one budget, not both")
    skips = _axis("grid", "skip", grid.get("skip", ModelSpec.skip))
    for skip in skips:
        _choices("grid", "skip", skip, tuple(STRATEGIES))
    try:  # an option none of the grid's strategies takes: the command line's rule, before any run
        check_options_taken([k for k in grid if k in _OPTION_KEYS], skips)
    except OptionError as e:
        raise _fail("grid", str(e)) from None
    models = _axis("grid", "model", grid.get("model", ModelSpec.model))
    for model in models:
        _choices("grid", "model", model, tuple(FAMILIES))
    for key in (k for k in grid if k in _FAMILY_OPTION_KEYS):  # likewise a family option
        owner = all_family_options()[key]
        option = next(o for o in owner[0].options if o.name == key)
        try:  # a bad value is named as such first
            [option.check(v) for v in _axis("grid", key, grid[key]) if v is not None]
        except SpecError as e:
            raise _fail("grid", str(e)) from None
        if not any(FAMILIES[m].declares(key) for m in models):
            owners = ", ".join(f.name for f in owner)
            raise _fail("grid", f"{key}: only the {owners} family takes it, not {', '.join(map(repr, models))}; "
                                f"add one to model or drop {key}")
    if "vary" in grid:
        if "params" not in grid and "flops" not in grid:
            raise _fail("grid", "vary: sizes a budget; give params or flops with it")
        for v in _axis("grid", "vary", grid["vary"]):
            _choices("grid", "vary", v, VARY)
            if v != "width" and not any(o.name == v and o.sizes for s in skips for o in STRATEGIES[s].options):
                raise _fail("grid", f"vary: none of {', '.join(map(repr, skips))} has a {v} to vary; "
                                    "add a strategy that does to skip, or vary 'width'")
    group = head.get("group", "sweep")
    if not isinstance(group, str):
        raise _fail("sweep", f"group: must be a string, got {group!r}")
    seeds = _seeds(head.get("seeds", 3))
    try:
        resources = Resources(**doc.get("resources", {}))
    except SpecError as e:
        raise _fail("resources", str(e)) from None

    configs = []
    for point in _product("train", train):
        try:
            configs.append(TrainConfig(**point))
        except SpecError as e:
            raise _fail("train", str(e)) from None
    for key, value in train.items():  # an axis that names one run many times is a mistake, not a grid
        values = _axis("train", key, value)
        if len(values) > 1 and len({RunSpec(ModelSpec(), dataclasses.replace(configs[0], **{key: v})).spec_hash
                                    for v in values}) == 1:
            raise _fail("train", f"{key}: {json.dumps(value)} names one run each time: {key} is not part of a "
                        f"run's identity (it changes how a run executes, not what it is); give one value")
    datasets: dict[tuple[str, str], Dataset] = {}
    runs: list[RunSpec] = []
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    for point in _product("grid", grid):
        name, label = point.get("dataset", "mnist1d"), point.get("label_column", "label")
        if not isinstance(name, str) or not isinstance(label, str):
            raise _fail("grid", f"dataset and label_column: must be strings, got {name!r}, {label!r}")
        if (name, label) not in datasets:  # loaded here so a bad dataset fails before any run
            try:
                datasets[(name, label)] = load_dataset(name, label)
            except ValueError as e:
                raise _fail("grid", str(e)) from None
        model = _model_spec(point, datasets[(name, label)])
        if is_text_ref(name):  # a text's runs name its sha256 too (skiplab.datasets.text)
            name = dataset_ref(name)
        for cfg in configs:
            for seed in seeds:
                run = RunSpec(model, cfg, name, seed, group, label)
                key = (run.spec_hash, seed)
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                runs.append(run)
    return Sweep(tuple(runs), resources, duplicates)


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and check the sweep file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError(f"sweep: no sweep file at {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"sweep: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"sweep: {path} is not valid TOML: {e}") from None
    return parse_sweep(doc)


# -- Local backend ----------------------------------------------------------------------
def run_local(sweep: Sweep, store: Store, workers: int | None = None, on_done: OnDone | None = None) -> dict[str, int]:
    """Runs in a process pool, ``workers`` at a time (default: one per ``num_cpus`` cores,
    i.e. one per core), each with ``num_cpus`` torch threads, through
    :func:`skiplab.run.runner.run_all`; the parent stores each result. A run whose worker
    dies is started again ``max_retries`` times, as on Ray."""
    threads = sweep.resources.threads
    return run_all(list(sweep.runs), store, workers=workers or max(1, (os.cpu_count() or 1) // threads),
                   on_done=on_done, threads=threads, retries=sweep.resources.max_retries)


# -- Ray backend ------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError(RAY_MISSING) from None
    return ray


def _connect(ray: Any, address: str | None, workers: int | None) -> bool:
    """Join the cluster at ``address``, or start a local instance with ``workers`` CPUs
    (default: all cores). Returns whether this call connected (and so must disconnect);
    an already initialised Ray (a notebook, a test) is used as it is."""
    if ray.is_initialized():
        return False
    try:
        with warnings.catch_warnings():  # Ray warns before it raises; the error below is the one line
            warnings.simplefilter("ignore")
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:  # a private instance for this sweep: no dashboard, no start-up chatter on stderr
                ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SweepError(f"sweep: cannot start or reach {where}: {first}") from None
    return True


def run_ray(sweep: Sweep, store: Store, address: str | None = None, workers: int | None = None,
            on_done: OnDone | None = None) -> dict[str, int]:
    """One Ray task per configuration's seeds not yet finished in ``store`` (they train as
    one batched computation, as on the local backend; :func:`skiplab.run.runner.group_key`), each asking for
    ``sweep.resources``; results are stored by this process as tasks finish. A task whose
    worker dies is retried ``max_retries`` times by Ray, then stored as ``failed``; the
    others go on. ``workers``: CPUs of a local instance, or, on an existing cluster, the
    most tasks in flight at once (default: all; Ray queues what does not fit)."""
    if isinstance(workers, bool) or (workers is not None and (not isinstance(workers, int) or workers < 1)):
        raise UserError(f"workers: must be an integer >= 1, got {workers!r}")
    ray = _import_ray()
    works = works_of(list(sweep.runs))
    finished = store.finished_keys()
    if all(w.key in finished for w in works):
        return {"skipped": len(works)}
    res = sweep.resources
    connected = _connect(ray, address, workers)
    try:  # claimed in the store like every executor's runs (skiplab.run.scheduler)
        executor = Ray(ray, res.num_cpus, res.num_gpus, res.threads, res.max_retries,
                       limit=workers if (address and workers) else None,
                       cancel_on_exit=not (connected and not address))
        return schedule(works, store, execute_group, executor, on_done)
    finally:
        if connected:
            ray.shutdown()


# -- Either ------------------------------------------------------------------------------
def run_sweep(sweep: Sweep, store: Store, backend: str = "local", address: str | None = None,
              workers: int | None = None, on_done: OnDone | None = None) -> dict[str, int]:
    """Run (or resume) ``sweep`` into ``store`` on ``backend``. Returns counts by status,
    plus ``skipped`` (already finished)."""
    if backend not in BACKENDS:
        raise UserError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "local":
        if address:
            raise UserError("address: only the ray backend joins a cluster; drop --address or use --backend ray")
        return run_local(sweep, store, workers, on_done)
    return run_ray(sweep, store, address, workers, on_done)
