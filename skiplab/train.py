"""Training: a run is a pure function ``RunSpec -> RunResult``.

Everything a run depends on is in its spec (model, data name, optimiser, schedule, seed),
so a process pool or a Ray task can run it anywhere and the same seed gives the same
result on the CPU. A loss that turns NaN or infinite ends the run with status
``diverged``; the result is still returned, to be stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .datasets import Dataset, TextDataset
from .fit import check_fits, model_fields_from
from .gradients import stream_gains
from .model import build_model
from .objective import flat_logits, loss_and_logits
from .optim import OPTIMIZERS, make_optimizer
from .spec import ModelSpec
from .validate import SpecError, choice, integer, number
SCHEDULES = ("constant", "cosine")
ENGINES = ("batched", "loop")  # skiplab.engine
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults reach the MNIST-1D paper's CNN baseline (94%) with
    ``cnn1d``/``add`` at its default depth and width (README, "Training")."""

    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9, Nesterov)
    lr: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # constant | cosine (decay to 0 over the run, Loshchilov & Hutter 1608.03983)
    batch_size: int = 128
    epochs: float = 30  # passes over the training set; a fraction trains on that share of one pass's steps
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    evals: int = 10  # evaluations on the test set over the run (curves)
    device: str = "cpu"  # cpu | cuda | auto; not part of a run's identity
    # Linear learning-rate warm-up over this many steps (from lr / warmup up to lr), then the
    # schedule over the remaining steps (Xiong et al., arXiv 2002.04745: Post-LN needs it).
    # 0 = none; then it is left out of a run's identity, so runs stored before it existed
    # keep their spec hash.
    warmup: int = 0
    # How the seeds of one configuration train (skiplab.engine): "batched", S seeds as one
    # vmapped computation where it applies, else "loop", one at a time. The two agree within
    # 1e-4, so like device it is not part of a run's identity, and the default is left out
    # of to_dict.
    engine: str = "batched"

    def __post_init__(self) -> None:
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("schedule", self.schedule, SCHEDULES)
        choice("device", self.device, DEVICES)
        choice("engine", self.engine, ENGINES)
        for name in ("batch_size", "evals"):
            integer(name, getattr(self, name), 1)
        number("epochs", self.epochs, 0.0, strict=True)
        if isinstance(self.epochs, float) and self.epochs.is_integer():  # 3.0 and 3 name the same run
            object.__setattr__(self, "epochs", int(self.epochs))
        integer("warmup", self.warmup, 0)
        number("lr", self.lr, 0.0, strict=True)
        number("weight_decay", self.weight_decay)
        number("grad_clip", self.grad_clip)


@dataclass(frozen=True)
class RunSpec:
    """One training run: model, data, training settings and seed."""

    model: ModelSpec
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str = "mnist1d"  # a dataset name or path (skiplab.datasets.load_dataset)
    seed: int = 0
    group: str = ""  # free label (e.g. "equal-width"), part of the identity
    label: str = "label"  # label column, for .csv datasets

    def to_dict(self) -> dict[str, Any]:
        train = dataclasses.asdict(self.train)
        if not train["warmup"]:  # the default: absent, as in every run stored before warm-up existed
            del train["warmup"]
        if train["engine"] == "batched":  # the default: absent, as in every run stored before engines existed
            del train["engine"]
        return {"model": self.model.to_dict(), "train": train,
                "dataset": self.dataset, "seed": self.seed, "group": self.group, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        return cls(model=ModelSpec.from_dict(d["model"]), train=TrainConfig(**d["train"]),
                   dataset=d["dataset"], seed=d["seed"], group=d.get("group", ""), label=d.get("label", "label"))

    @property
    def spec_hash(self) -> str:
        """Identity of the configuration, without the seed, the device and the engine
        (where and how a run executes does not change what it is)."""
        d = self.to_dict()
        del d["seed"], d["train"]["device"]
        d["train"].pop("engine", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class RunResult:
    status: str  # complete | diverged
    seed: int
    train_accuracy: float | None
    test_accuracy: float | None
    train_loss: float | None
    test_loss: float | None
    steps: int
    seconds: float
    params: int
    message: str = ""
    # Strategy diagnostics of the trained model, e.g. the composite residual gain of
    # hyper-connections and mHC after the last block (skiplab.gradients.stream_gains).
    diagnostics: dict[str, Any] = field(default_factory=dict)
    curves: list[tuple[int, str, str, float]] = field(default_factory=list)  # (step, split, name, value)
    # Language models (a text dataset): cross-entropy in bits per character, nats / ln 2.
    # Optional, so results stored before they existed still load.
    val_bpc: float | None = None
    train_bpc: float | None = None
    # Training positions predicted per second of training (evaluations excluded): samples x
    # positions per sample (a classification sample is one position).
    tokens_per_second: float | None = None
    # The engine that trained it: "batched", "loop", or "loop: <why batching did not apply>"
    # (skiplab.engine); None when train_run was called directly.
    trained_by: str | None = None

    def summary(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["curves"]
        return d


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("device: cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


def preflight(runs: Sequence[RunSpec], load: Callable[[str, str], Dataset] | None = None,
              device: bool = True) -> None:
    """Check, before any training starts, what would otherwise fail inside every run and
    be stored as ``failed``: each dataset loads, each model fits its data, each device
    exists here (``device=False`` skips that, for runs sent to other machines). Raises
    SpecError (a ValueError) with one line naming the first problem."""
    if load is None:
        from .datasets import load_dataset as load
    data: dict[tuple[str, str], Dataset] = {}
    checked: set[tuple[str, str, str]] = set()
    for run in runs:
        key = (run.dataset, run.label)
        if key not in data:
            data[key] = load(*key)
        fit = (json.dumps(run.model.to_dict(), sort_keys=True), *key)
        if fit not in checked:  # a sweep repeats each model over seeds and configs
            checked.add(fit)
            check_fits(run.model, data[key])
        if run.train.warmup:
            check_warmup(run.train, steps_of(run.train, data[key], run.model))
        if device:
            resolve_device(run.train.device)


def check_warmup(cfg: TrainConfig, total: int) -> None:
    """A warm-up must end before the run does (it would never reach the peak rate)."""
    if cfg.warmup and cfg.warmup >= total:
        raise SpecError(f"warmup: {cfg.warmup} steps is not shorter than the run ({total} steps: "
                        f"{cfg.epochs:g} epochs of {math.ceil(total / cfg.epochs)}); use fewer warm-up steps or more epochs")


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule over ``total`` steps. Without warm-up, exactly the
    schedulers runs used before warm-up existed (so their results repeat); with ``warmup``
    = w steps, step s < w gets lr (s + 1) / w, then the schedule runs over the remaining
    ``total - w`` steps (cosine: from lr down to 0)."""
    if not cfg.warmup:
        return (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total) if cfg.schedule == "cosine"
                else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    w, rest = cfg.warmup, max(1, total - cfg.warmup)
    cosine = cfg.schedule == "cosine"

    def factor(s: int) -> float:
        if s < w:
            return (s + 1) / w
        return 0.5 * (1 + math.cos(math.pi * min(s - w, rest) / rest)) if cosine else 1.0
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def steps_of(cfg: TrainConfig, data: Dataset | TextDataset, model: ModelSpec) -> int:
    """The optimiser steps a run of ``cfg`` makes on ``data`` (a text: cut at the model's context)."""
    n = len((data.for_model(model) if isinstance(data, TextDataset) else data).y_train)
    return max(1, math.ceil(math.ceil(n / cfg.batch_size) * cfg.epochs))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy of ``model`` (in eval mode) on ``(x, y)``,
    over every prediction: per sample for classification (y of shape (N,)), per position
    for a language model (y of shape (N, T), logits (N, T, V))."""
    was_training = model.training
    model.eval()
    loss = correct = 0.0
    for i in range(0, len(y), batch):
        logits, yb = flat_logits(model(x[i:i + batch]), y[i:i + batch])
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    return loss / y.numel(), correct / y.numel()


GAIN_BATCH = 256  # test samples (a text's: windows) the composite residual gain is measured on


def _gain_curves(step: int, model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, str, str, float]]:
    """At an evaluation, the composite residual gain after the last sublayer of a strategy
    that mixes streams (hyper, mhc; :func:`skiplab.gradients.stream_gains`) as two curves,
    ``gain_forward`` and ``gain_backward``, so that its growth over training is stored;
    nothing for other strategies."""
    gains = stream_gains(model, x) if hasattr(model, "description") else None
    if not gains:
        return []
    return [(step, "test", "gain_forward", gains["forward"][-1]), (step, "test", "gain_backward", gains["backward"][-1])]


def train_run(spec: RunSpec, data: Dataset, on_step: Callable[[int, int, float], None] | None = None) -> RunResult:
    """Train ``spec.model`` on ``data``; ``on_step(step, total, loss)`` is called every
    step (for progress bars). Returns the result, ``diverged`` included."""
    return train_model(spec, data, on_step)[1]


def train_model(spec: RunSpec, data: Dataset,
                on_step: Callable[[int, int, float], None] | None = None) -> tuple[torch.nn.Module, RunResult]:
    """As :func:`train_run`, and also return the trained model (for experiments that
    operate on it: equivalence, lesions)."""
    cfg, start = spec.train, time.perf_counter()
    check_fits(spec.model, data)
    text = isinstance(data, TextDataset)
    data = data.for_model(spec.model)  # a text: its windows at the model's context
    device = resolve_device(cfg.device)
    model = build_model(spec.model, seed=spec.seed).to(device).train()
    x_tr, y_tr = data.x_train.to(device), data.y_train.to(device)
    x_te, y_te = data.x_test.to(device), data.y_test.to(device)
    n = len(y_tr)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = max(1, math.ceil(steps_per_epoch * cfg.epochs))  # a fractional epoch: its share of the steps
    check_warmup(cfg, total)
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    sched = make_schedule(opt, cfg, total)
    eval_at = {round(total * (i + 1) / cfg.evals) for i in range(cfg.evals)}
    g = torch.Generator().manual_seed(spec.seed)  # data order: a function of the seed alone
    curves: list[tuple[int, str, str, float]] = []
    run_loss = run_correct = run_count = 0.0
    step, status, message = 0, "complete", ""
    positions = y_tr[0].numel() if n else 1  # predictions per sample: 1, or a text's context
    trained_samples, eval_seconds, loop_start = 0, 0.0, time.perf_counter()
    for _ in range(math.ceil(cfg.epochs)):
        order = torch.randperm(n, generator=g).to(device)
        for i in range(0, n, cfg.batch_size):
            if step == total:
                break
            idx = order[i:i + cfg.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            loss, logits = loss_and_logits(model, xb, yb)
            value = loss.item()
            if not math.isfinite(value):
                status, message = "diverged", f"loss became {value} at step {step + 1}"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            trained_samples += len(yb)
            run_loss += value * yb.numel()
            run_correct += (logits.detach().argmax(-1) == yb).sum()  # a tensor: no sync per step
            run_count += yb.numel()
            if on_step:
                on_step(step, total, value)
            if step in eval_at:
                eval_start = time.perf_counter()
                te_loss, te_acc = evaluate(model, x_te, y_te)
                curves += [(step, "train", "loss", run_loss / run_count),
                           (step, "train", "accuracy", float(run_correct) / run_count),
                           (step, "test", "loss", te_loss), (step, "test", "accuracy", te_acc)]
                if text:
                    curves.append((step, "test", "bpc", te_loss / math.log(2)))
                curves += _gain_curves(step, model, x_te[:GAIN_BATCH])
                run_loss = run_correct = run_count = 0.0
                eval_seconds += time.perf_counter() - eval_start
        if status != "complete":
            break
    train_seconds = time.perf_counter() - loop_start - eval_seconds
    tokens_per_second = trained_samples * positions / train_seconds if train_seconds > 0 else None
    params = sum(p.numel() for p in model.parameters())
    if status == "diverged":
        return model, RunResult(status, spec.seed, None, None, None, None, step, time.perf_counter() - start,
                                params, message, curves=curves, tokens_per_second=tokens_per_second)
    # A text's training score is taken on its first windows, as many as the validation
    # has: a full pass over the training text would cost a third of an epoch of training.
    n_eval = min(n, len(y_te)) if text else n
    tr_loss, tr_acc = evaluate(model, x_tr[:n_eval], y_tr[:n_eval])
    if step not in eval_at:  # the last evaluation in the loop was at the last step: the same model
        te_loss, te_acc = evaluate(model, x_te, y_te)
    # strategy diagnostics need a SkipNet's description (a stand-in module in tests has none)
    gains = stream_gains(model, x_te[:GAIN_BATCH]) if hasattr(model, "description") else None
    diagnostics = {"composite_gain_forward": gains["forward"][-1],
                   "composite_gain_backward": gains["backward"][-1]} if gains else {}
    bpc = {"val_bpc": te_loss / math.log(2), "train_bpc": tr_loss / math.log(2)} if text else {}
    return model, RunResult(status, spec.seed, tr_acc, te_acc, tr_loss, te_loss, step,
                            time.perf_counter() - start, params, message, diagnostics, curves=curves,
                            tokens_per_second=tokens_per_second, **bpc)


__all__ = ["TrainConfig", "RunSpec", "RunResult", "train_run", "train_model", "evaluate", "preflight", "check_fits",
           "model_fields_from", "resolve_device", "SCHEDULES", "DEVICES", "ENGINES", "OPTIMIZERS"]
