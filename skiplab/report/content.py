"""What every form of the report shows, read from the store once.

``report.md``, ``report.html`` and the figures all draw on one :class:`ReportData`, so
they cannot disagree: the same runs, the same split into the current plan and "other"
runs, the same list of what is missing.
"""

from __future__ import annotations

from ..skips import ADD, options_text

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..datasets import display_name
from ..experiments import EXPERIMENTS
from ..metrics import Metric, metric_of
from ..results import REGIME_GROUP, aggregate, cost_key
from ..store import FINISHED, Store

# The study's two comparisons, in the order the report shows them.
GROUPS = {"equal-width": "at equal width", "matched-params": "at a matched parameter budget"}


@dataclass(frozen=True)
class Curve:
    """Test accuracy against training step for one configuration: mean and std over the
    seeds that reached each step (complete runs only)."""

    steps: list[int]
    mean: list[float]
    std: list[float]
    seeds: int


@dataclass(frozen=True)
class StoredExperiment:
    """The latest stored result of one named experiment (``skiplab experiment NAME``)."""

    name: str
    quick: bool  # the --quick form
    result: dict[str, Any]  # what run_experiment returned: "claim", "outcome", the numbers
    finished_at: str
    stored: int  # how many results of this experiment the store holds; the latest is shown


@dataclass
class ReportData:
    runs: list[dict[str, Any]]  # every stored run, decoded (Store.runs)
    plan: dict[str, Any] | None  # the current study plan, if a study wrote this store
    rows: list[dict[str, Any]]  # results.aggregate rows; groups outside the plan renamed "other: ..."
    costs: list[dict[str, Any]]  # analytic cost per planned configuration (study meta)
    gradients: list[dict[str, Any]]  # first/last gradient ratio at init per skip and depth (study meta)
    expected: int | None  # planned runs (configurations x seeds), None without a plan
    finished: int  # runs of the current plan that finished (complete or diverged)
    missing: list[str]  # one line per planned configuration short of its seeds
    study_seconds: float | None  # wall time of the last `skiplab study` invocation
    curves: dict[str, Curve] = field(default_factory=dict)  # spec_hash -> mean test-accuracy curve
    experiments: list[StoredExperiment] = field(default_factory=list)  # latest per name, in EXPERIMENTS order
    in_plan: frozenset[str] = frozenset()  # spec hashes of the current plan (every stored one without a plan)

    def current_runs(self) -> list[dict[str, Any]]:
        """The stored runs of the current plan's configurations (all runs without a plan)."""
        return [r for r in self.runs if not self.in_plan or r["spec_hash"] in self.in_plan]

    @cached_property
    def metric(self) -> Metric:
        """What the report judges runs by: a language model's validation bpc (lower is
        better) when the store holds any, else test accuracy (skiplab.metrics)."""
        return metric_of(self.rows)

    @property
    def budget(self) -> int | None:
        return self.plan["budget_params"] if self.plan else None

    @property
    def partial(self) -> bool:
        return bool(self.expected) and self.finished < self.expected

    @property
    def groups(self) -> list[str]:
        """The study's groups (GROUPS, in order) that this store's plan plans or its runs
        hold: a plan that trains every strategy at the matched budget only has no
        equal-width group."""
        present = {r["group"] for r in self.rows}
        if self.plan:
            present |= {group for group, _, _ in planned_cells(self.plan)}
        return [g for g in GROUPS if g in present]

    def trained_where(self) -> str:
        """How the study trained, from its groups: "at equal width and at a matched parameter
        budget", either one alone, or both where the store says neither (no plan, no runs)."""
        return " and ".join(GROUPS[g] for g in (self.groups or GROUPS))

    def group_rows(self, group: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["group"] == group]

    def other_rows(self) -> list[dict[str, Any]]:
        """Rows outside the study's groups (earlier plans, ``skiplab train``); the regime
        check's runs have their own section (:mod:`skiplab.report.regime`)."""
        return [r for r in self.rows if r["group"] not in GROUPS and r["group"] != REGIME_GROUP]

    def cost_of(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The stored analytic cost of an aggregated row's configuration, if there is one."""
        return self._costs_by_key.get(cost_key(row))

    @cached_property
    def _costs_by_key(self) -> dict[tuple, dict[str, Any]]:
        return {cost_key(c): c for c in self.costs}


def _mean_curves(store: Store, runs: list[dict[str, Any]], hashes: set[str]) -> dict[str, Curve]:
    """Mean curve of each run's metric (test accuracy, or a language model's bpc) over the
    complete seeds of each configuration in ``hashes``."""
    by_step: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: Counter[str] = Counter()
    for r in runs:
        if r["status"] != "complete" or r["spec_hash"] not in hashes:
            continue
        seeds[r["spec_hash"]] += 1
        curve = metric_of(r).curve
        for step, split, name, value in store.metrics(r["id"]):
            if (split, name) == curve:
                by_step[r["spec_hash"]][step].append(value)
    out = {}
    for h, steps in by_step.items():
        xs = sorted(steps)
        out[h] = Curve(xs, [statistics.fmean(steps[s]) for s in xs],
                       [statistics.stdev(steps[s]) if len(steps[s]) > 1 else 0.0 for s in xs], seeds[h])
    return out


def planned_cells(plan: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(group, skip, depth) of every planned configuration; the strategies a plan trains at
    the matched budget only (``budget_only``) have no equal-width cells."""
    budget_only = set(plan.get("budget_only", ()))
    return [(group, skip, depth) for group in GROUPS for depth in plan["depths"] for skip in plan["skips"]
            if not (group == "equal-width" and skip in budget_only)]


def regime_runs_planned(plan: dict[str, Any] | None) -> int:
    """How many regime-check runs a stored plan asks for: one per depth with a factor
    (``StudyPlan.regime_runs``: add's, so none in a plan without add)."""
    if not plan or not plan.get("regime_factor") or ADD.name not in plan["skips"]:
        return 0
    return len(plan["depths"])


def _missing(plan: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Planned (group, skip, depth) cells with fewer finished seeds than planned."""
    cell = {(r["group"], r["skip"], r["depth"]): r for r in rows if r["group"] in GROUPS}
    out = []
    for group, skip, depth in planned_cells(plan):
        r = cell.get((group, skip, depth))
        done = (r["complete"] + r["diverged"]) if r else 0
        if done < plan["seeds"]:
            out.append(f"{group}, {skip}, depth {depth}: {done} of {plan['seeds']} seeds finished")
    if regime_runs_planned(plan):
        done = {r["depth"] for r in rows if r["group"] == REGIME_GROUP and r["complete"] + r["diverged"]}
        out += [f"{REGIME_GROUP}, add trained {plan['regime_factor']:g}x as long, depth {d}: not finished"
                for d in plan["depths"] if d not in done]
    return out


def latest_experiments(store: Store) -> list[StoredExperiment]:
    """The latest stored result of each experiment: the known ones in the order of
    ``EXPERIMENTS``, then any other stored name (an experiment since renamed), by name."""
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in store.experiments():  # oldest first
        by_name[row["name"]].append(row)
    order = [n for n in EXPERIMENTS if n in by_name] + sorted(n for n in by_name if n not in EXPERIMENTS)
    return [StoredExperiment(n, bool(by_name[n][-1]["quick"]), by_name[n][-1]["result"],
                             by_name[n][-1]["finished_at"], len(by_name[n])) for n in order]


def load_report_data(store: Store) -> ReportData:
    """Everything the report needs, from the store alone."""
    runs = store.runs()
    plan = store.meta("plan")
    in_plan = set(store.meta("plan_configs") or [r["spec_hash"] for r in runs])
    rows = aggregate(runs)
    for r in rows:  # runs of an earlier, different plan are shown apart
        if r["spec_hash"] not in in_plan:
            r["group"] = f"other: {r['group']}"
    expected = len(planned_cells(plan)) * plan["seeds"] + regime_runs_planned(plan) if plan else None
    finished = sum(r["status"] in FINISHED and r["spec_hash"] in in_plan for r in runs)
    curve_hashes = {r["spec_hash"] for r in rows if r["group"] in GROUPS}
    return ReportData(runs=runs, plan=plan, rows=rows, costs=store.meta("costs") or [],
                      gradients=store.meta("gradients") or [], expected=expected, finished=finished,
                      missing=_missing(plan, rows) if plan else [],
                      study_seconds=store.meta("last_study_seconds"),
                      curves=_mean_curves(store, runs, curve_hashes), experiments=latest_experiments(store),
                      in_plan=frozenset(in_plan))


# -- provenance -------------------------------------------------------------------------
def distinct(runs: list[dict[str, Any]], key: str) -> list[tuple[dict[str, Any], int]]:
    """The distinct values of a run's ``versions`` or ``hardware`` with how many runs had
    each: a store filled on two machines or with two torch versions says so."""
    counts = Counter(json.dumps(r[key], sort_keys=True) for r in runs)
    return [(json.loads(k), n) for k, n in counts.most_common()]


def describe_versions(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items())


def describe_hardware(hw: dict[str, Any]) -> str:
    text = f"{hw.get('cpu')}, {hw.get('cores')} cores"
    if hw.get("torch_threads"):
        text += f", {hw['torch_threads']} torch thread(s) per run"
    return text + (f", GPU {hw['gpu']}" if hw.get("gpu") else "")


def _plan_options(plan: dict[str, Any]) -> str:
    opts = plan.get("options") or ({"dense": {"growth": plan["dense_growth"]}} if "dense_growth" in plan else {})
    return "; ".join(f"{skip} {options_text(o)}" for skip, o in opts.items()) or "none"


def _budget_text(plan: dict[str, Any]) -> str:
    if plan.get("budget_params") is None:  # per depth: the add model's size at the plan's width
        return f"per depth, the parameters of add at width {plan['model']['width']}"
    return f"{plan['budget_params']:,} parameters"


def describe_plan(plan: dict[str, Any]) -> str:
    m, t = plan["model"], plan["train"]
    return (f"Data: {display_name(plan['dataset'])}. Model: {m['model']}, width {m['width']}, norm {m['norm']}, "
            f"activation {m['activation']}, init {m['init']}; strategy options at equal "
            f"width: {_plan_options(plan)}. Training: {t['optimizer']}, lr {t['lr']}"
            + (f" after {t['warmup']} warm-up steps" if t.get("warmup") else "")
            + f", {t['schedule']} schedule, batch {t['batch_size']}, "
            f"{t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}. Matched budget: {_budget_text(plan)}. Depths: {', '.join(map(str, plan['depths']))}. Seeds: {plan['seeds']}.")


def describe_experiment(e: StoredExperiment) -> str:
    """Which result is shown: its form, when it finished, how long it took."""
    form = "the quick form (--quick)" if e.quick else "the full form"
    took = e.result.get("seconds")
    took = f", took {took:.0f} s" if isinstance(took, (int, float)) else ""
    of = f"the latest of {e.stored} stored results" if e.stored > 1 else "the one stored result"
    return f"Shown: {of}, {form}; finished {e.finished_at}{took}."


def experiments_note(data: ReportData) -> str:
    """How to run the experiments the store lacks (all of them when it holds none)."""
    missing = [n for n in EXPERIMENTS if n not in {e.name for e in data.experiments}]
    if not missing:
        return ""
    how = ("Run one with `skiplab experiment NAME --out DIR` (add --quick for a small version in minutes), "
           "then `skiplab report --out DIR`.")
    if not data.experiments:
        return f"The store holds no experiment results. {how} NAME is one of: {', '.join(EXPERIMENTS)}."
    return f"Not run into this store yet: {', '.join(missing)}. {how}"


def status(data: ReportData) -> str | None:
    """One sentence on what the store lacks, or None when the plan is complete."""
    if not data.runs:
        return "The store holds no runs yet. Run `skiplab study` to fill it."
    if data.partial:
        return (f"Partial results: {data.finished} of {data.expected} planned runs are stored; missing cells say "
                "'missing'. Run the study again to complete it.")
    return None


def provenance(data: ReportData) -> list[tuple[str, str]]:
    """(label, text) facts about where the numbers come from; empty without runs."""
    runs = data.runs
    if not runs:
        return []
    hashes = sorted({r["spec_hash"] for r in runs})
    trained = sum(r["result"].get("seconds") or 0 for r in runs)
    finished = f"{data.finished} finished of the current plan" if data.plan else \
        f"{sum(r['status'] in FINISHED for r in runs)} finished"
    out = [("runs", f"{len(runs)} stored in runs.db ({finished}), "
                    f"{len(hashes)} configurations; first started {runs[0]['started_at']}, last finished "
                    f"{max(r['finished_at'] for r in runs)}"),
           ("duration", (f"the last study invocation took {data.study_seconds:.0f} s; " if data.study_seconds else "")
            + f"training took {trained:.0f} s summed over runs")]
    out += [(f"versions ({n} runs)", describe_versions(v)) for v, n in distinct(runs, "versions")]
    out += [(f"hardware ({n} runs)", describe_hardware(hw)) for hw, n in distinct(runs, "hardware")]
    out.append(("seeds", ", ".join(map(str, sorted({r["seed"] for r in runs})))))
    return out
