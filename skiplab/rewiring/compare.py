"""``skiplab compare``: the user's model as written and rewired to each strategy, trained with
the same data, schedule and seeds, stored in the results store through the one scheduler,
and judged against the original by Welch's t-test (Holm over the variants).

A run is a pure function of its spec (:class:`UserRun`): the model file (by path, its sha256
part of the identity: an edited file names other runs), the factory, the strategy (or
``original``) and its options, the training settings, the dataset and the seed. The seed
gives the factory's init (``torch.manual_seed`` before ``FACTORY()``, so every variant's
branches start from the same weights), the connections' init after it, the data order and
what the model draws while it trains (dropout), so that a variant whose merges compute what
the original's did (``add``) trains to the very same numbers.

The loss is the model's own where it has one: a model whose forward takes ``labels`` (a
Hugging Face model) is called with them (a text's input ids for a causal language model,
which shifts them inside; the class labels otherwise) and trained on ``output.loss``.
Others are trained on the cross-entropy of their logits. Every model is evaluated the
same way: the cross-entropy and accuracy of its logits against the labels (a text: each
position's next character, in bits per character).

Costs per sample are ``skiplab.profile``'s on one training sample (parameters, matmul
FLOPs, merge FLOPs); time per step is the median wall time of a training step (forward,
backward, optimiser), evaluations excluded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import pathlib
import statistics
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import clock
from ..datasets import Dataset, TextDataset
from ..datasets import is_text_ref
from ..errors import UserError
from ..metrics import ACCURACY, BPC, metric_of
from ..provenance import hardware, versions
from ..results import aggregate
from ..run import scheduler
from ..run.config import TrainConfig, check_precision, resolve_device
from ..run.executors import Inline
from ..run.loop import check_warmup, make_schedule
from ..run.optim import make_optimizer
from ..skips import get_strategy
from ..stats import ALPHA, Family, compare, test_statement
from ..store import Store, now
from ..textable import table
from ..user_model import _first_line, load_model
from . import ORIGINAL, plan, rewire
from .listing import cost

DEFAULT_CONTEXT = 64  # a text's window, as skiplab's transformer runs use


def file_sha256(path: str) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def absolute_target(target: str) -> str:
    path, _, name = target.rpartition(":")
    return f"{pathlib.Path(path).expanduser().resolve()}:{name}"


@dataclass(frozen=True)
class UserRun:
    """One training run of the user's model, as written (``skip == "original"``) or rewired."""

    target: str  # /absolute/path.py:FACTORY
    sha256: str  # of the file
    skip: str
    options: tuple[tuple[str, Any], ...]
    train: TrainConfig
    dataset: str  # a dataset reference (skiplab.datasets.dataset_ref)
    seed: int
    merges: int  # the model's rewirable merges (the "depth" tables show), the original's too
    width: int  # the stream's width at the first merge
    context: int | None = None  # a text's window
    label: str = "label"

    def to_dict(self) -> dict[str, Any]:
        train = dataclasses.asdict(self.train)
        for k in ("engine", "compile", "precision"):
            train.pop(k, None)  # one loop, eager, fp32: not choices here
        if not train["warmup"]:
            del train["warmup"]
        return {"model": {"model": "user", "target": self.target, "sha256": self.sha256, "skip": self.skip,
                          "options": dict(self.options), "depth": self.merges, "width": self.width,
                          "context": self.context},
                "train": train, "dataset": self.dataset, "seed": self.seed,
                "group": f"compare {pathlib.Path(self.target.rpartition(':')[0]).name}:"
                         f"{self.target.rpartition(':')[2]}", "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UserRun":
        m = d["model"]
        return cls(m["target"], m["sha256"], m["skip"], tuple(sorted(m["options"].items())),
                   TrainConfig(**d["train"]), d["dataset"], d["seed"], m["depth"], m["width"], m["context"],
                   d.get("label", "label"))

    @property
    def spec_hash(self) -> str:
        d = self.to_dict()
        del d["seed"], d["train"]["device"]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# -- the model, its data and its loss ----------------------------------------------------
def windows(data: Dataset | TextDataset, context: int | None) -> Dataset:
    if isinstance(data, TextDataset):
        return data.windows(context or DEFAULT_CONTEXT)
    return data


def takes_labels(model: nn.Module) -> bool:
    try:
        return "labels" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def logits_of(out: Any) -> torch.Tensor:
    """A model's logits: its output tensor, ``output.logits`` (Hugging Face), or the first
    element of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise UserError(f"the model returns a {type(out).__name__}; compare needs logits (a tensor, .logits, or a "
                    f"tuple starting with them)")


def scored(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) with one prediction per row (a language model's every position)."""
    return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, own: bool, text: bool) -> torch.Tensor:
    """The training loss: the model's own (given ``labels``: the input ids for a text, which
    a causal language model shifts inside; the labels otherwise), else cross-entropy."""
    if own:
        out = model(x, labels=x if text else y)
        loss = getattr(out, "loss", None)
        if isinstance(loss, torch.Tensor):
            return loss
        return F.cross_entropy(*scored(logits_of(out), y))
    return F.cross_entropy(*scored(logits_of(model(x)), y))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy over every prediction of ``(x, y)``, eval mode."""
    was = model.training
    model.eval()
    loss = correct = 0.0
    for i in range(0, len(y), batch):
        logits, yb = scored(logits_of(model(x[i:i + batch])), y[i:i + batch])
        loss += F.cross_entropy(logits.float(), yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was)
    return loss / y.numel(), correct / y.numel()


def build(run: UserRun, example: torch.Tensor) -> nn.Module:
    """The run's model: ``FACTORY()`` under the seed, rewired (connections initialised under
    the seed too) unless it is the original."""
    model = load_model(run.target, seed=run.seed)
    if run.skip == ORIGINAL:
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)
        return rewire(model, run.skip, example, **dict(run.options))


# -- one run ------------------------------------------------------------------------------
def train_user_run(run: UserRun, data: Dataset | TextDataset,
                   on_step: Callable[[int, int, float], None] | None = None) -> tuple[str, dict[str, Any], list]:
    """Train ``run``; (status, result, curves). A loss that is not finite ends it diverged."""
    cfg, start = run.train, clock.now()
    text = isinstance(data, TextDataset)
    d = windows(data, run.context)
    device = resolve_device(cfg.device)
    model = build(run, d.x_train[:2]).to(device).train()
    torch.manual_seed(run.seed)  # what the model draws while training (dropout): a function of the seed too
    own = takes_labels(model)
    x_tr, y_tr, x_te, y_te = (t.to(device) for t in (d.x_train, d.y_train, d.x_test, d.y_test))
    n = len(y_tr)
    total = max(1, math.ceil(math.ceil(n / cfg.batch_size) * cfg.epochs))
    check_warmup(cfg, total)
    costs = cost(model, x_tr[:1])
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    sched = make_schedule(opt, cfg, total)
    eval_at = {round(total * (i + 1) / cfg.evals) for i in range(cfg.evals)}
    g = torch.Generator().manual_seed(run.seed)  # data order: a function of the seed alone
    curves: list[tuple[int, str, str, float]] = []
    step_times: list[float] = []
    step, status, message, run_loss, run_count = 0, "complete", "", 0.0, 0
    positions = y_tr[0].numel() if n else 1
    for _ in range(math.ceil(cfg.epochs)):
        order = torch.randperm(n, generator=g).to(device)
        for i in range(0, n, cfg.batch_size):
            if step == total:
                break
            idx = order[i:i + cfg.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            t0 = clock.now()
            loss = loss_of(model, xb, yb, own, text)
            value = loss.item()
            if not math.isfinite(value):
                status, message = "diverged", f"loss became {value} at step {step + 1}"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step_times.append(clock.now() - t0)
            step += 1
            run_loss += value * len(yb)
            run_count += len(yb)
            if on_step:
                on_step(step, total, value)
            if step in eval_at:
                te_loss, te_acc = evaluate(model, x_te, y_te)
                curves += [(step, "train", "loss", run_loss / run_count), (step, "test", "loss", te_loss),
                           (step, "test", "accuracy", te_acc)]
                if text:
                    curves.append((step, "test", "bpc", te_loss / math.log(2)))
                run_loss, run_count = 0.0, 0
        if status != "complete":
            break
    per_step = statistics.median(step_times[1:] or step_times) if step_times else None
    train_seconds = sum(step_times)
    result: dict[str, Any] = {
        "status": status, "seed": run.seed, "steps": step, "message": message, "params": costs["params"],
        "flops_per_sample": costs["flops_per_sample"], "merge_flops_per_sample": costs["merge_flops_per_sample"],
        "seconds_per_step": per_step, "loss": "the model's own (labels=)" if own else "cross-entropy",
        "tokens_per_second": (step * cfg.batch_size * positions / train_seconds) if train_seconds else None,
        "test_accuracy": None, "test_loss": None}
    if status == "complete":
        if step not in eval_at:  # else the last evaluation was of this very model
            te_loss, te_acc = evaluate(model, x_te, y_te)
        result |= {"test_accuracy": te_acc, "test_loss": te_loss}
        if text:
            result["val_bpc"] = te_loss / math.log(2)
    result["seconds"] = clock.now() - start
    return status, result, curves


_DATA: dict[tuple[str, str], Any] = {}


def execute_user_runs(spec_dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scheduler's task function: each run trained; an error is a ``failed`` output with
    its reason, never raised."""
    from ..datasets import load_dataset

    outs = []
    for d in spec_dicts:
        started, run = now(), UserRun.from_dict(d)
        try:
            key = (run.dataset, run.label)
            if key not in _DATA:
                _DATA[key] = load_dataset(*key)
            status, result, curves = train_user_run(run, _DATA[key])
        except Exception as e:  # noqa: BLE001 - a failed run is stored, the rest go on
            status, result, curves = "failed", {"status": "failed", "seed": run.seed, "message": _first_line(e),
                                                "traceback": traceback.format_exc(limit=5)}, []
        outs.append({"spec": run.to_dict(), "spec_hash": run.spec_hash, "seed": run.seed, "status": status,
                     "result": result, "curves": curves, "started_at": started, "versions": versions(),
                     "hardware": hardware()})
    return outs


# -- planning, before anything is stored --------------------------------------------------
def plan_runs(target: str, skips: list[str], data: Dataset | TextDataset, dataset_ref: str, cfg: TrainConfig,
              seeds: int, options: dict[str, dict[str, Any]], context: int | None = None,
              label: str = "label") -> list[UserRun]:
    """Every run of the comparison, checked as far as can be without training: the factory
    loads, the model takes a batch of the data and its output can be scored against the
    labels, each strategy rewires it, the warm-up fits. UserError (one line) otherwise."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"seeds: must be an integer >= 1, got {seeds!r}")
    if not isinstance(data, TextDataset) and context is not None:
        raise UserError("context: a window length is for a text dataset; this dataset is not text")
    check_precision(cfg, resolve_device(cfg.device))  # a device this machine lacks: every run would fail
    target = absolute_target(target)
    model = load_model(target, seed=0)
    d = windows(data, context)
    example = d.x_train[:2]
    own = takes_labels(model)
    text = isinstance(data, TextDataset)
    # the first example and the one with the largest label: a model with fewer outputs than
    # the data has classes fails here, not in every run once training starts
    top = int(d.y_train.reshape(len(d.y_train), -1).amax(1).argmax())
    pair = torch.tensor([0, top])
    try:
        with torch.no_grad():
            model.eval()
            loss_of(model, d.x_train[pair], d.y_train[pair], own, text)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's model on the user's data: one line
        raise UserError(f"{target.rpartition(':')[0]}: the model cannot be trained on a batch of {d.name} "
                        f"(inputs {tuple(example.shape)} {str(example.dtype).removeprefix('torch.')}): "
                        f"{_first_line(e)}") from None
    found = plan(model, example)
    runs = []
    n = len(d.y_train)
    check_warmup(cfg, max(1, math.ceil(math.ceil(n / cfg.batch_size) * cfg.epochs)))
    for skip in [ORIGINAL, *skips]:
        opts: tuple = ()
        merges = len(found.rewired)
        width = found.rewired[0].width if found.rewired else 0
        if skip != ORIGINAL:
            rewire(model, skip, example, found=found, **options.get(skip, {}))
            opts = get_strategy(skip).canonical(options.get(skip, {}))
        for seed in range(seeds):
            runs.append(UserRun(target, file_sha256(target.rpartition(":")[0]), skip, opts, cfg, dataset_ref, seed,
                                merges, width, (context or DEFAULT_CONTEXT) if text else None, label))
    return runs


def run_compare(runs: list[UserRun], out: str, on_done: Callable | None = None) -> dict[str, int]:
    """Train every run not yet in the store at ``out`` (resume, claims: the scheduler)."""
    works = [scheduler.Work(r.spec_hash, r.seed, r.to_dict(), (r.spec_hash, r.seed)) for r in runs]
    with Store(out) as store:
        return scheduler.schedule(works, store, execute_user_runs, Inline(), on_done)


# -- the verdict -------------------------------------------------------------------------
def verdict(runs: list[UserRun], stored: list[dict[str, Any]], alpha: float = ALPHA) -> dict[str, Any]:
    """Per variant: costs, the metric over seeds, Welch against the original (Holm over the
    variants), time per step."""
    hashes = {r.spec_hash: r.skip for r in runs}
    mine = [s for s in stored if s["spec_hash"] in hashes]
    rows = {row["spec_hash"]: row for row in aggregate(mine)}
    metric = BPC if runs and is_text_ref(runs[0].dataset) else metric_of(mine) if mine else ACCURACY
    variants = list(dict.fromkeys(r.skip for r in runs))
    by_skip = {hashes[h]: row for h, row in rows.items()}
    base = by_skip.get(ORIGINAL, {}).get("scores", [])
    family = Family()
    sentences: dict[str, str] = {}
    for phase in (family.collecting, family.deciding):
        with phase():
            for skip in variants[1:]:
                c = compare(base, by_skip.get(skip, {}).get("scores", []), alpha)
                sentences[skip] = "-" if c is None else c.sentence(
                    ORIGINAL, skip, metric.scale, metric.unit, metric.digits, metric.higher_is_better)
    out = []
    for skip in variants:
        row = by_skip.get(skip, {})
        results = [s["result"] for s in mine if hashes[s["spec_hash"]] == skip and s["status"] == "complete"]
        first = results[0] if results else {}
        steps = [r.get("seconds_per_step") for r in results if r.get("seconds_per_step")]
        out.append({"skip": skip, "params": first.get("params"), "flops_per_sample": first.get("flops_per_sample"),
                    "merge_flops_per_sample": first.get("merge_flops_per_sample"),
                    "merges": 0 if skip == ORIGINAL else next((r.merges for r in runs if r.skip == skip), 0),
                    "seeds": row.get("seeds", 0), "complete": row.get("complete", 0),
                    "score_mean": row.get("score_mean"), "score_std": row.get("score_std"),
                    "scores": row.get("scores", []),
                    "seconds_per_step": statistics.median(steps) if steps else None,
                    "steps": first.get("steps"),
                    "versus_original": sentences.get(skip, "-"),
                    "loss": first.get("loss"),
                    "problems": [f"seed {s['seed']}: {s['status']}: {s['result'].get('message', '')}"
                                 for s in mine if hashes[s["spec_hash"]] == skip and s["status"] != "complete"]})
    return {"metric": metric.to_dict(), "alpha": alpha, "family": family.size, "test": test_statement(alpha, family.size),
            "variants": out}


def verdict_text(v: dict[str, Any], header: str) -> str:
    m = v["metric"]
    scale, digits = m["scale"], m["digits"]

    def score(r):
        if r["score_mean"] is None:
            return "-"
        if r["score_std"] is None:
            return f"{scale * r['score_mean']:.{digits}f} (1 seed)"
        return f"{scale * r['score_mean']:.{digits}f} +- {scale * r['score_std']:.{digits}f}"

    rows = [[r["skip"], r["merges"], "-" if r["params"] is None else f"{r['params']:,}",
             "-" if r["flops_per_sample"] is None else f"{r['flops_per_sample'] / 1e6:.3f}",
             "-" if r["merge_flops_per_sample"] is None else f"{r['merge_flops_per_sample'] / 1e6:.4f}",
             score(r), f"{r['complete']}/{r['seeds']}",
             "-" if r["seconds_per_step"] is None else f"{r['seconds_per_step'] * 1e3:.1f}",
             r["versus_original"]] for r in v["variants"]]
    notes = [f"{r['skip']} {p}" for r in v["variants"] for p in r["problems"]]
    losses = sorted({r["loss"] for r in v["variants"] if r["loss"]})
    return "\n".join([header, table(["variant", "merges rewired", "params", "MFLOPs/sample", "merge MFLOPs/sample",
                                     f"{m['name']}{' %' if m['scale'] == 100 else ''} (mean +- std)", "seeds ok", "ms/step", "versus the original"],
                                    rows), *notes,
                      f"loss: {', '.join(losses)}; {v['test']}" if losses else v["test"]])
