"""Training: a run is a pure function ``RunSpec -> RunResult``.

Everything a run depends on is in its spec (model, data name, optimiser, schedule, seed),
so a process pool or a Ray task can run it anywhere and the same seed gives the same
result on the CPU. A loss that turns NaN or infinite ends the run with status
``diverged``; the result is still returned, to be stored.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .. import clock
from ..datasets import Dataset, TextDataset
from ..fit import check_fits
from ..gradients import stream_gains
from ..model import build_model
from ..objective import flat_logits, loss_and_logits
from ..spec import ModelSpec
from ..validate import SpecError
from .config import RunResult, RunSpec, TrainConfig, check_precision, resolve_device
from .optim import FlatParameters, make_optimizer
from .step import (DivergenceWatch, StepClock, StepFunction, autocast_dtype, sync_interval, to_channels_last,
                   wants_channels_last)

# The optimiser (skiplab.run.optim): its implementation (make_optimizer: fused where torch has it
# for the device, else multi-tensor), over the parameters as one flat tensor (FlatParameters)
# or one tensor each. benchmarks/loop_optimizer.py sets them to compare.
_OPTIMIZER_IMPLEMENTATION = "fused"
_FLAT_PARAMETERS = True


def preflight(runs: Sequence[RunSpec], load: Callable[[str, str], Dataset] | None = None,
              device: bool = True) -> None:
    """Check, before any training starts, what would otherwise fail inside every run and
    be stored as ``failed``: each dataset loads, each model fits its data, each device
    exists here (``device=False`` skips that, for runs sent to other machines). Raises
    SpecError (a ValueError) with one line naming the first problem."""
    if load is None:
        from ..datasets import load_dataset as load
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
            check_precision(run.train, resolve_device(run.train.device))


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


# on_step(step, total, loss, seeds): loss is the mean over the seeds still training, seeds their count
OnStep = Callable[[int, int, float, int], None]


class Alone:
    """One seed's training state, held by its own module: the loop engine. A step runs the
    module on the seed's batch (the loop hands it as a stack of one seed, (1, B, ...), and
    gets (1,) losses back), clipping is torch's ``clip_grad_norm_``, and the module is
    always the seed's state, so ``load`` has nothing to copy. The batched engine's holder
    (:class:`skiplab.run.batched.Stacked`) has the same members: ``models``, ``params`` (what
    the optimiser steps), ``step_fn`` (the :class:`StepFunction`), the step itself,
    ``clip`` and ``load``."""

    def __init__(self, models: list[torch.nn.Module], cfg: TrainConfig, channels_last: bool = False):
        (model,) = models
        self.models, self.params, self.channels_last = models, list(model.parameters()), channels_last
        self.step_fn = StepFunction(lambda xb, yb: loss_and_logits(model, xb, yb, autocast_dtype(cfg)), cfg)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_channels_last(xb[0]) if self.channels_last else xb[0]
        loss, logits = self.step_fn(x, yb[0])
        return loss[None], logits[None]

    def clip(self, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, max_norm)

    def load(self, s: int) -> None:
        """Seed ``s``'s module holds its state already."""


def train_run(spec: RunSpec, data: Dataset, on_step: Callable[[int, int, float], None] | None = None) -> RunResult:
    """Train ``spec.model`` on ``data``; ``on_step(step, total, loss)`` is called every
    step on the CPU, every :func:`sync_interval` steps on an accelerator (for progress bars:
    it is called only when the loss was read back anyway). Returns the result, ``diverged``
    included."""
    return train_model(spec, data, on_step)[1]


def train_model(spec: RunSpec, data: Dataset,
                on_step: Callable[[int, int, float], None] | None = None) -> tuple[torch.nn.Module, RunResult]:
    """As :func:`train_run`, and also return the trained model (for experiments that
    operate on it: equivalence, lesions): :func:`train_seeds_with` one seed, :class:`Alone`."""
    (out,) = train_seeds_with([spec], data, Alone, None if on_step is None else
                              lambda step, total, loss, seeds: on_step(step, total, loss))
    return out


def train_seeds_with(specs: Sequence[RunSpec], data: Dataset, hold: Callable[..., Any], on_step: OnStep | None = None,
                     label: str | None = None) -> list[tuple[torch.nn.Module, RunResult]]:
    """The training loop, the one both engines run: ``specs`` are S seeds of one
    configuration (one for the loop engine), ``hold(models, cfg, channels_last)`` holds
    their training state and steps it (:class:`Alone`, or the batched engine's
    :class:`skiplab.run.batched.Stacked`: the S modules' tensors stacked, the step under vmap).
    Everything else is here once: the data order (each seed's own generator), the
    optimiser and schedule, each seed's divergence (read every :func:`sync_interval`
    steps), the evaluation schedule and curves, and the :class:`RunResult` of each seed.
    Each result's ``trained_by`` is ``label`` with a failed compile's reason after it.
    Returns each seed's trained module and result, in order."""
    specs = list(specs)
    spec, cfg, start = specs[0], specs[0].train, clock.now()
    S = len(specs)
    check_fits(spec.model, data)
    text = isinstance(data, TextDataset)
    data = data.for_model(spec.model)  # a text: its windows at the model's context
    device = resolve_device(cfg.device)
    check_precision(cfg, device)
    models = [build_model(s.model, seed=s.seed).to(device).train() for s in specs]
    channels_last = wants_channels_last(spec.model, device)
    held = hold(models, cfg, channels_last)
    x_tr, y_tr = data.x_train.to(device), data.y_train.to(device)
    x_te, y_te = data.x_test.to(device), data.y_test.to(device)
    if channels_last:  # the modules (the loop's steps, every evaluation) and the test inputs
        for m in models:
            m.to(memory_format=torch.channels_last)
        x_te = to_channels_last(x_te)
    n = len(y_tr)
    total = max(1, math.ceil(math.ceil(n / cfg.batch_size) * cfg.epochs))  # a fractional epoch: its share of the steps
    check_warmup(cfg, total)
    flat = FlatParameters(held.params, flatten=_FLAT_PARAMETERS)  # the optimiser steps a flat tensor
    opt = make_optimizer(cfg.optimizer, flat.tensors, cfg.lr, cfg.weight_decay,
                         implementation=_OPTIMIZER_IMPLEMENTATION)
    sched = make_schedule(opt, cfg, total)
    eval_at = {round(total * (i + 1) / cfg.evals) for i in range(cfg.evals)}
    gens = [torch.Generator().manual_seed(s.seed) for s in specs]  # data order: a function of the seed alone

    curves: list[list[tuple[int, str, str, float]]] = [[] for _ in specs]
    run_count = 0
    run_correct = torch.zeros(S, device=device)  # a tensor: no host read per step
    active, steps, messages = [True] * S, [0] * S, [""] * S
    step, positions = 0, (y_tr[0].numel() if n else 1)  # predictions per sample: 1, or a text's context
    samples, eval_seconds, loop_start = [0], 0.0, clock.now()  # samples: each seed's, after each step
    last_test: list[tuple[float, float]] = [(math.nan, math.nan)] * S  # each seed's latest (test loss, accuracy)
    # Each seed's loss is checked on the device and read back every sync_every steps (1 on
    # the CPU: a seed stops at the step it diverged; see sync_interval and DivergenceWatch).
    sync_every, watch, step_clock = sync_interval(device), DivergenceWatch(S, device), StepClock()
    latest = [0.0] * S

    def read() -> list[int]:
        """Read the watch; stop each seed newly found diverged: its steps are those before
        its first non-finite loss, its message that loss. Its module gets its state as it
        is now: before that step when found at once (sync_every 1), else after the steps
        taken since (NaN as a rule; no diverged run stores its model). Seeds are
        independent (the gradient of the sum is each seed's own, clipping and the
        optimiser are per seed), so a diverged seed still in the sum until it is read
        changes no other seed. Returns the seeds still training."""
        first, bad, latest[:] = watch.read()
        for s in range(S):
            if active[s] and first[s] >= 0:
                active[s], steps[s] = False, first[s]
                messages[s] = f"loss became {bad[s]} at step {first[s] + 1}"
                held.load(s)
        return [s for s in range(S) if active[s]]

    live = list(range(S))
    live_index = torch.arange(S, device=device)  # live, on the device (a list would be copied there each step)
    for _ in range(math.ceil(cfg.epochs)):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (S, n)
        for i in range(0, n, cfg.batch_size):
            if step == total or not live:
                break
            idx = orders[:, i:i + cfg.batch_size]  # (S, B)
            xb, yb = x_tr[idx], y_tr[idx]  # (S, B, ...)
            step_clock.begin()
            losses, logits = held(xb, yb)  # (S,), (S, B, ...)
            watch.see(losses, step, yb[0].numel())
            synced = (step + 1) % sync_every == 0 or step + 1 in eval_at or step + 1 == total
            if synced:
                live = read()
                if not live:
                    break
                if len(live) < len(live_index):
                    live_index = torch.tensor(live, device=device)
            flat.zero_grad()  # the optimiser's own would drop the parameters' views into the flat gradient
            # Seeds are independent, so the gradient of the sum is each seed's own gradient.
            (losses[live_index].sum() if len(live) < S else losses.sum()).backward()
            if step == 0:
                flat.check()
            if cfg.grad_clip:
                held.clip(cfg.grad_clip)
            opt.step()
            sched.step()
            step_clock.end(held.step_fn.new_shape)
            step += 1
            run_count += yb[0].numel()
            samples.append(samples[-1] + len(yb[0]))
            run_correct += (logits.detach().argmax(-1) == yb).reshape(S, -1).sum(1)
            if on_step and synced:  # progress only when the losses were read anyway
                on_step(step, total, sum(latest[s] for s in live) / len(live), len(live))
            if step in eval_at:
                eval_start = clock.now()
                correct, run_loss = run_correct.tolist(), watch.run_loss.tolist()
                for s in live:
                    held.load(s)
                    te_loss, te_acc = last_test[s] = evaluate(models[s], x_te, y_te)
                    curves[s] += [(step, "train", "loss", run_loss[s] / run_count),
                                  (step, "train", "accuracy", correct[s] / run_count),
                                  (step, "test", "loss", te_loss), (step, "test", "accuracy", te_acc)]
                    if text:
                        curves[s].append((step, "test", "bpc", te_loss / math.log(2)))
                    curves[s] += _gain_curves(step, models[s], x_te[:GAIN_BATCH])
                run_count = 0
                watch.run_loss.zero_()
                run_correct.zero_()
                eval_seconds += clock.now() - eval_start
        if step == total or not live:
            break
    read()  # the last step always reads; this catches any loop exit that did not
    flat.release()
    compile_seconds, compile_note = held.step_fn.compile_seconds(step_clock), held.step_fn.failed
    # Each seed is charged an equal share of the shared wall time, so that summing a
    # group's ``seconds`` gives its wall time, and a seed's rate is the group's.
    train_share = (clock.now() - loop_start - eval_seconds) / S
    trained_by = "; ".join(t for t in (label, compile_note) if t) or None
    out = []
    for s, run in enumerate(specs):
        model = models[s]
        trained = samples[step if active[s] else steps[s]]
        tps = trained * positions / train_share if train_share > 0 else None
        common = dict(curves=curves[s], tokens_per_second=tps, trained_by=trained_by, compile_seconds=compile_seconds)
        params = sum(p.numel() for p in model.parameters())
        if not active[s]:
            out.append((model, RunResult("diverged", run.seed, None, None, None, None, steps[s],
                                         (clock.now() - start) / S, params, messages[s], **common)))
            continue
        held.load(s)
        # A text's training score is taken on its first windows, as many as the validation
        # has: a full pass over the training text would cost a third of an epoch of training.
        n_eval = min(n, len(y_te)) if text else n
        tr_loss, tr_acc = evaluate(model, x_tr[:n_eval], y_tr[:n_eval])
        # the last evaluation in the loop was at the last step: the same model
        te_loss, te_acc = last_test[s] if step in eval_at else evaluate(model, x_te, y_te)
        # strategy diagnostics need a SkipNet's description (a stand-in module in tests has none)
        gains = stream_gains(model, x_te[:GAIN_BATCH]) if hasattr(model, "description") else None
        diagnostics = {"composite_gain_forward": gains["forward"][-1],
                       "composite_gain_backward": gains["backward"][-1]} if gains else {}
        if gains and model.description.strategy.gain_by_construction:  # mhc, mhc-lite: how doubly stochastic
            diagnostics["doubly_stochastic_gap"] = gains["stochastic_gap"]
        bpc = {"val_bpc": te_loss / math.log(2), "train_bpc": tr_loss / math.log(2)} if text else {}
        out.append((model, RunResult("complete", run.seed, tr_acc, te_acc, tr_loss, te_loss, step,
                                     (clock.now() - start) / S, params, "", diagnostics, **common, **bpc)))
    return out


__all__ = ["train_run", "train_model", "train_seeds_with", "Alone", "OnStep", "evaluate", "preflight", "check_warmup",
           "make_schedule", "steps_of"]
