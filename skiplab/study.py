"""``skiplab study``: the main job. Every strategy at several depths on MNIST-1D, at equal
width and at a matched parameter budget, over several seeds; cost and gradient summaries;
everything in the store; ``report.html``, ``report.md`` and the figures at the end.

The study is resumable: its runs are keyed by spec hash and seed in ``DIR/runs.db``, so
running it again skips what finished (an interrupted study loses nothing it finished).
Two studies started on the same ``DIR`` share the work: each run is claimed in the store
before it is trained (:mod:`skiplab.run.runner`), each waits for the runs the other holds,
and they write the report one at a time; both end with the whole plan, each run once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .cost import match_budget, model_cost, param_counts
from .cost.budget import sizing_options
from .cost.summary import memory_bills
from .datasets import dataset_ref, is_text_ref, load_dataset
from .errors import UserError
from .fit import model_fields_from
from .gradients import GradientConfig, measure_gradients
from .results import REGIME_GROUP
from .run.config import RunSpec, TrainConfig
from .run.loop import preflight
from .run.runner import run_all
from .skips import ADD, get_strategy
from .skips.concat import MEMORY
from .spec import ModelSpec
from .store import Store

STUDY_SKIPS = ("plain", "add", "rezero", "highway", "dense", "concat-prev", "concat-half", "dwa", "hyper", "mhc")
# Trained at the matched budget only. They cost 3.4x (dwa), 6x (hyper) and 11x (mhc) add's
# time per step at depth 50 on one CPU thread (many small element-wise ops per sublayer:
# benchmarks/stream_step_time.py), so both groups would take the
# default study past 8 minutes; at equal width dwa is within 1% of add's size and hyper 7-9%
# above it (238,302 vs 217,802 at depth 50: skiplab build), and the budget is where hyper's
# and mhc's extra parameters (their dynamic maps, mhc's phi) are accounted for.
BUDGET_ONLY = ("dwa", "hyper", "mhc")
# Strategy options at equal width (and before a budget resizes them), by strategy; each
# strategy checks its own. Dense: k = w/4 at width 64 (DenseNet uses k = 12..32 with far
# wider states). The experiments that train dense use the same.
STUDY_OPTIONS: dict[str, dict[str, Any]] = {"dense": {"growth": 16}}
COMMAND_KEY = "study_command"  # store metadata: the command line that filled the store


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: the default is the whole comparison, ``quick`` a smoke test of it
    (their measured times, each with its machine and command: docs/study.md)."""

    skips: tuple[str, ...] = STUDY_SKIPS
    budget_only: tuple[str, ...] = BUDGET_ONLY  # strategies trained at the matched budget only
    depths: tuple[int, ...] = (2, 8, 24, 50)  # 50 blocks: where the ResNet paper's plain nets degrade
    seeds: int = 3
    # An MLP (the question's setting: fully-connected layers of width w) with batch norm.
    model: ModelSpec = field(default_factory=lambda: ModelSpec(model="mlp", width=64, norm="batch",
                                                               input_shape=(1, 40)))
    options: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(STUDY_OPTIONS))
    # matched budget, all strategies and depths; None: per depth, the add model's size at the plan's width
    budget_params: int | None = 100_000
    # 10 epochs of Adam (320 steps of 128 samples); round 1's study ran 15 with 7 strategies.
    # 10 keeps the default within its time with 10 strategies.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, lr=3e-3, evals=5))
    dataset: str = "mnist1d"
    gradient_batch: int = 256  # samples per gradient measurement at init (a text's: windows of its context)
    # The regime check (issue 27): with a factor f > 0, add at every depth (the matched budget's
    # spec, seed 0) is also trained f times as long; the report compares it with the plan's own
    # run of that seed and says whether the plan trains to within ``regime_tolerance`` of it
    # (its metric's units: bpc, or accuracy as a fraction), i.e. past its early-training phase.
    regime_factor: float = 0.0
    regime_tolerance: float = 0.05

    def model_specs(self) -> list[tuple[str, ModelSpec]]:
        """(group, spec) for every configuration: equal width, then matched budget. A
        strategy with a sizing option meets the budget through it (dense's growth, and its
        width where growth steps are too coarse: ``match_budget``), the others through
        their width."""
        bases = [self.model.replace(skip=skip, depth=depth, options=self.options.get(skip, {}))
                 for depth in self.depths for skip in self.skips]
        matched = [match_budget(b, params=self.budget_for(b.depth), vary=(sizing_options(b) or ["width"])[0]).spec
                   for b in bases]
        return ([("equal-width", b) for b in bases if b.skip not in self.budget_only]
                + [("matched-params", m) for m in matched])

    def budget_for(self, depth: int) -> int:
        if self.budget_params is not None:
            return self.budget_params
        return param_counts(self.model.replace(skip=ADD.name, depth=depth, options={}))["total"]

    def runs(self) -> list[RunSpec]:
        configs = self.model_specs()
        runs = [RunSpec(spec, self.train, self.dataset, seed, group) for group, spec in configs for seed in range(self.seeds)]
        return runs + self.regime_runs(configs)

    def regime_runs(self, configs: list[tuple[str, ModelSpec]] | None = None) -> list[RunSpec]:
        """Add at each depth trained ``regime_factor`` times as long as the plan trains it
        (seed 0; none without a factor)."""
        if self.regime_factor <= 0:
            return []
        longer = dataclasses.replace(self.train, epochs=self.train.epochs * self.regime_factor)
        adds = {spec.depth: spec for group, spec in (configs or self.model_specs())
                if group == "matched-params" and spec.skip == ADD.name}
        return [RunSpec(adds[d], longer, self.dataset, 0, REGIME_GROUP) for d in self.depths if d in adds]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d


def quick_plan() -> StudyPlan:
    """Every strategy, two depths, two seeds, a few epochs: a smoke test of the whole job."""
    return StudyPlan(depths=(2, 8), seeds=2, train=TrainConfig(epochs=3, lr=3e-3, evals=3))


# The transformer study (docs/study.md, "The transformer study"): the residual-stream designs
# a practitioner weighs today, on a character language model of the text every Python ships,
# trained into the regime the papers' claims are about (issue 27): add's validation bpc moves
# by less than 0.05 when it trains twice as long, checked on every run of the study.
TRANSFORMER_SKIPS = ("add", "dense", "dwa", "hyper", "mhc", "mhc-lite")
# Sizing (measured on the project's 2-core AMD EPYC, add at depth 4, width 64, batch 32 x 64,
# `skiplab train --model transformer --dataset pydoc --depth 4 --width 64 --batch-size 32
# --epochs E ...`, one seed): at Adam 3e-3 (round 2's setting) 4 epochs (816 steps) gave
# 2.24 bpc and 8 epochs 1.95, 0.29 apart: early training. At 1e-2 with 100 warm-up steps
# (2e-2 gave the same, 1.824 at 8 epochs): 4 epochs 1.926, 6 epochs 1.849, 8 epochs 1.822,
# 12 epochs 1.856, 16 epochs 1.919: past about 8 epochs the model memorises the
# 465k-character text (train 1.15 bpc at 16 epochs), so "twice as long" holds within 0.05 at
# 6 epochs (1,224 steps), the training the study's regime check confirms on every run.
TRANSFORMER_LR, TRANSFORMER_WARMUP, TRANSFORMER_EPOCHS = 1e-2, 100, 6
TRANSFORMER_DEPTHS = (4,)
PRESETS = ("gpu",)  # skiplab study --preset: a plan sized for other hardware


def transformer_plan(quick: bool = False) -> StudyPlan:
    """Width 64, context 64, 4 heads, pre-norm; every strategy at a matched parameter budget
    per depth (the add model's size at width 64: DWA adds a few scalars and hyper-connections
    1.5%, so both keep width 64; mhc and mhc-lite meet it at a narrower width (56 at depth 4),
    dense through its growth and width); Adam with a
    warm-up and a cosine decay, long enough for the regime check (``regime_factor``: add
    trained twice as long as well). 3 seeds. The quick form (width 32, depths 1 and 2, a
    quarter of a pass, 2 seeds) is a smoke test of the same plan, regime check included."""
    from .datasets.text import load_pydoc
    from .families import TRANSFORMER_FAMILY

    vocab = load_pydoc().vocab  # the runs' model embeds the text's symbols (checked again at run time)
    model = ModelSpec(model=TRANSFORMER_FAMILY.name, width=64, context=64, heads=4, vocab=vocab, classes=vocab)
    common = dict(skips=TRANSFORMER_SKIPS, budget_only=TRANSFORMER_SKIPS, options={}, budget_params=None,
                  dataset="pydoc", regime_factor=2.0)
    if quick:
        return StudyPlan(**common, depths=(1, 2), seeds=2, model=model.replace(width=32), gradient_batch=8,
                         train=TrainConfig(epochs=0.25, batch_size=64, lr=3e-3, evals=2))
    return StudyPlan(**common, depths=TRANSFORMER_DEPTHS, seeds=3, model=model, gradient_batch=16,
                     train=TrainConfig(epochs=TRANSFORMER_EPOCHS, batch_size=32, lr=TRANSFORMER_LR,
                                       warmup=TRANSFORMER_WARMUP, evals=8))


def transformer_gpu_plan() -> StudyPlan:
    """The transformer study sized for one GPU (issue 27.5; ``skiplab study --model
    transformer --preset gpu --device cuda``): :func:`transformer_plan` (its strategies,
    seeds, regime check) at width 256, context 256, depth 12, 10 epochs of Adam 3e-3. Sized by
    estimate for 10 minutes on one H200 (add: 9,596,007 parameters, skiplab.cost.param_counts;
    8,192 tokens a step,
    about 510 steps), and NOT yet run on any GPU (none has been lent since it was written):
    ``benchmarks/cuda_check.sh`` runs it when one is."""
    base = transformer_plan()
    model = base.model.replace(width=256, context=256, input_shape=(256,))  # a token model reads (context,)
    return dataclasses.replace(base, depths=(12,), model=model, gradient_batch=8,
                               train=dataclasses.replace(base.train, epochs=10, lr=3e-3))


def plan_for(model: str, quick: bool = False, preset: str | None = None) -> StudyPlan:
    """The default study of a model family (``skiplab study --model NAME``), or one of its
    presets (``--preset``: ``gpu``, the transformer's only)."""
    from .families import TRANSFORMER_FAMILY

    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"preset: one of {', '.join(PRESETS)}, not {preset!r}")
        if model != TRANSFORMER_FAMILY.name or quick:
            raise UserError(f"preset: {preset} is a preset of the full transformer study "
                            f"(--model {TRANSFORMER_FAMILY.name}, without --quick)")
        return transformer_gpu_plan()

    plans = _plans(quick)
    if model not in plans:
        raise UserError(f"model: the study has a default plan for {', '.join(plans)}, not {model!r}")
    return plans[model]()


def _plans(quick: bool) -> dict[str, Callable[[], StudyPlan]]:
    from .families import MLP_FAMILY, TRANSFORMER_FAMILY
    return {MLP_FAMILY.name: lambda: quick_plan() if quick else StudyPlan(),
            TRANSFORMER_FAMILY.name: lambda: transformer_plan(quick)}


def study_models() -> tuple[str, ...]:
    """The families the study has a default plan for (``skiplab study --model``)."""
    return tuple(_plans(False))


def with_memory(plan: StudyPlan, memory: str) -> StudyPlan:
    """``plan`` with every strategy that has a ``memory`` option (the concatenating ones)
    set to ``memory`` (naive | efficient: the same numbers, different activation memory;
    a non-default value is part of each run's identity, so the two are stored apart)."""
    options = {k: dict(v) for k, v in plan.options.items()}
    for skip in plan.skips:
        strategy = get_strategy(skip)
        if strategy.declares(MEMORY.name):
            options[skip] = {**options.get(skip, {}), MEMORY.name: memory}
            strategy.resolve(options[skip], plan.model.width)  # a bad value raises here
    return dataclasses.replace(plan, options=options)


def on_device(plan: StudyPlan, device: str) -> StudyPlan:
    """``plan`` with its runs trained on ``device`` (cpu | cuda | auto). The device is not
    part of a run's identity (``RunSpec.spec_hash``), so a study resumed on another device
    keeps what finished."""
    return dataclasses.replace(plan, train=dataclasses.replace(plan.train, device=device))


def with_engine(plan: StudyPlan, engine: str) -> StudyPlan:
    """``plan`` with its seeds trained by ``engine`` (batched | loop, :mod:`skiplab.run.batched`);
    like the device, not part of a run's identity."""
    return dataclasses.replace(plan, train=dataclasses.replace(plan.train, engine=engine))


def with_train(plan: StudyPlan, **fields: Any) -> StudyPlan:
    """``plan`` with these TrainConfig fields replaced (``compile``, ``precision``: see
    TrainConfig for which are part of a run's identity); a bad value raises SpecError."""
    return dataclasses.replace(plan, train=dataclasses.replace(plan.train, **fields))


def cost_summaries(plan: StudyPlan, batch: int) -> list[dict[str, Any]]:
    out = []
    for group, spec in plan.model_specs():
        c = model_cost(spec, batch)
        out.append({"group": group, "skip": spec.skip, "depth": spec.depth, "width": spec.width,
                    "options": dict(spec.options), "params": c["params"]["total"], "flops": c["flops"]["total"],
                    "activation_bytes": c["activation_bytes"], "concat_bytes": c["concat_bytes"]})
        bills = memory_bills(spec, batch)  # both bills, for the strategies with a memory option
        if bills:
            out[-1]["activation_bytes_by_memory"] = bills
    return out


def gradient_summaries(plan: StudyPlan, data, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """At init, each strategy and depth once (equal width, or the matched budget for the
    strategies trained only there): first/last block weight-gradient ratio, min/max over
    seeds, and for hyper/mhc the composite residual gain after the last block."""
    out, seen = [], set()
    config = GradientConfig(seeds=min(plan.seeds, 3), batches=1, batch_size=plan.gradient_batch)
    for group, spec in plan.model_specs():
        if (spec.skip, spec.depth) in seen:
            continue
        seen.add((spec.skip, spec.depth))
        if progress:
            progress(f"gradients at init: {spec.skip}, depth {spec.depth}")
        d = measure_gradients(spec, data, config).to_dict()
        out.append({"skip": spec.skip, "depth": spec.depth, "first_last_ratio": d["first_last_ratio"],
                    "first_last_ratio_min": d.get("first_last_ratio_min"),
                    "first_last_ratio_max": d.get("first_last_ratio_max"),
                    "vanishing_block": d.get("vanishing_block"),
                    "composite_gain_forward": (d["composite_gain_forward"] or [None])[-1],
                    "composite_gain_backward": (d["composite_gain_backward"] or [None])[-1]})
    return out


def run_study(out: str | os.PathLike, plan: StudyPlan, workers: int | None = None,
              on_run: Callable[[int, int, dict[str, Any]], None] | None = None,
              progress: Callable[[str], None] | None = None,
              on_flight: Callable[[int], None] | None = None, command: str | None = None) -> dict[str, Any]:
    """Run (or resume) ``plan`` into the store at ``out`` (``on_flight(seeds)``: the runs
    in training, as :func:`skiplab.run.runner.run_all` reports them). ``command``, the command
    line that asked for the study, is stored as metadata ``study_command``: result pages
    (:mod:`skiplab.report.docs`) print it beside the numbers. Returns counts by status, the
    number of runs planned and the seconds it took; the caller writes the report
    (:func:`skiplab.report.write_report_locked`)."""
    start = time.perf_counter()
    workers = workers or min(2, os.cpu_count() or 1)
    out = Path(out)
    data = load_dataset(plan.dataset)  # fails early, with a clear message, on a bad dataset
    # The data fixes the plan model's input (input_shape, or a text's vocab and so its
    # outputs); a numeric plan keeps its own classes (Dataset.model_fields).
    text = is_text_ref(plan.dataset)
    fields = model_fields_from(data, {"classes": None if text else plan.model.classes})
    plan = dataclasses.replace(plan, model=plan.model.replace(**fields))
    if text:  # a text's runs name its sha256 too (skiplab.datasets.text)
        plan = dataclasses.replace(plan, dataset=dataset_ref(plan.dataset))
    specs = plan.runs()
    preflight(specs, load=lambda *_: data)  # device and fit, before the store is touched
    configs = sorted({s.spec_hash for s in specs})
    configs_hash = hashlib.sha256(json.dumps(configs).encode()).hexdigest()[:16]
    with Store(out) as store:
        store.set_meta("plan", plan.to_dict())
        store.set_meta("plan_configs", configs)  # the report shows these; older runs apart
        if command is not None:
            store.set_meta(COMMAND_KEY, command)
        if store.meta("summaries_for") != configs_hash:
            store.set_meta("costs", cost_summaries(plan, plan.train.batch_size))
            store.set_meta("gradients", gradient_summaries(plan, data, progress))
            store.set_meta("summaries_for", configs_hash)
        counts = run_all(specs, store, workers=workers, on_done=on_run, on_flight=on_flight)
        store.set_meta("last_study_seconds", time.perf_counter() - start)
    return {"counts": counts, "runs": len(specs), "seconds": time.perf_counter() - start}
