"""Engines: how the seeds of one configuration are trained.

``loop`` trains each seed alone (:func:`skiplab.train.train_model`). ``batched`` trains S
seeds of one configuration as one computation: each seed's model is built as the loop
builds it (``build_model(spec, seed)``), the S models' parameters and buffers are stacked
along a new leading dimension (``torch.func.stack_module_state``) and one forward/backward
runs the model, its slots bound to the stacked tensors (:class:`skiplab.seed_batched.Binder`,
``functional_call``'s work), under ``torch.func.vmap`` over that dimension
(https://pytorch.org/docs/stable/func.html, "Model ensembling"), with linear and batch norm
layers and the residual streams' autograd Functions run as one kernel over all seeds
(:mod:`skiplab.seed_batched`). Small models are bound by per-operation overhead rather
than arithmetic, and S seeds then pay it once.

Each seed keeps what it would have alone:

* initial weights: ``build_model(spec, seed)``, then stacked;
* data order: its own ``torch.Generator`` seeded with the seed, one ``randperm`` per epoch,
  exactly as the loop draws it;
* optimiser state: one torch optimiser over the stacked tensors. Adam, AdamW and SGD
  (momentum, Nesterov, weight decay) are element-wise, so one over the stack is S of them;
  gradient clipping, which is not (a global norm), is done per seed here;
* batch-norm statistics: the running mean and variance are stacked buffers, bound into the
  model and updated in place by batch norm under vmap (through views of the stacked
  buffers: :mod:`skiplab.seed_batched`);
* divergence: each seed's loss is checked on the device every step and read back every
  ``sync_interval`` steps (every step on the CPU; see :func:`skiplab.train.sync_interval`);
  a seed whose loss is not finite is stored ``diverged`` with the same step and message as
  the loop's and leaves the computation's loss (its slice is computed on but never read
  again); the others go on;
* curves and evaluations: at each evaluation a seed's slice is copied into its own module
  and scored by the loop's own :func:`skiplab.train.evaluate`.

The two engines agree to floating-point reassociation (a batched matmul sums in another
order): ``tests/test_engine.py`` checks final parameters, buffers and metrics within 1e-4
relative for every strategy. Where batching cannot apply (one seed, runs that differ in
more than their seed, ``engine="loop"``, a family that batches slower than it loops on the
CPU (the CNNs: ``Family.batches_on_cpu``), or a model vmap cannot run), the loop trains
them and each result's ``engine`` says why.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap

from . import clock
from .cost import model_cost
from .cost.count import DTYPE_BYTES
from .cost.measure import available_memory_bytes
from .datasets import Dataset, TextDataset
from .families import get_family
from .fit import check_fits
from .gradients import stream_gains
from .model import build_model
from .objective import loss_and_logits
from . import seed_batched
from .optim import make_optimizer
from .seed_batched import Binder
from .train import (ENGINES, GAIN_BATCH, DivergenceWatch, RunResult, RunSpec, StepClock, _gain_curves, autocast_dtype,
                    StepFunction, check_precision, check_warmup, evaluate, make_schedule, resolve_device,
                    sync_interval, to_channels_last, train_model, wants_channels_last)

# on_step(step, total, loss, seeds): loss is the mean over the seeds still training, seeds their count
OnStep = Callable[[int, int, float, int], None]


class Unbatchable(Exception):
    """This configuration cannot be trained batched; the message says why."""


def why_not_batched_alone(spec: RunSpec) -> str | None:
    """Why a run could not join a batch whatever its company, or None: the loop engine
    was asked for, or its family trains no faster batched on the CPU it runs on."""
    if spec.train.engine == "loop":
        return "engine loop was asked for"
    family, device = get_family(spec.model.model), spec.train.device
    if not family.batches_on_cpu and (device == "cpu" or device == "auto" and not torch.cuda.is_available()):
        return f"{family.name} trains no faster batched than alone on a CPU (benchmarks/engine_throughput.py)"
    return None


def why_not_batched(specs: Sequence[RunSpec]) -> str | None:
    """Why ``specs`` cannot be trained as one batched computation, or None if they can."""
    alone = next((r for r in map(why_not_batched_alone, specs) if r), None)
    if alone:
        return alone
    if len(specs) < 2:
        return "one seed: nothing to batch"
    if len({s.spec_hash for s in specs}) > 1:
        return "the runs differ in more than their seed"
    if len({s.seed for s in specs}) < len(specs):
        return "a seed appears twice"
    return None


# A batched step holds every seed's training state at once, so a group takes S times the
# memory of one run. Per seed (fp32): weights, gradients and Adam's two moments (4x the
# parameters), and the activations a step keeps for backward (the cost model's count,
# within 5% of measured: tests/test_cost.py) with their gradients (2x). A group may take
# this share of the memory free on its device; more seeds than fit train a part at a time.
MEMORY_SHARE = 0.5


def seed_bytes(spec: RunSpec) -> int | None:
    """What one seed of ``spec`` holds during a training step, by the cost model (None if
    it cannot count this model)."""
    try:
        cost = model_cost(spec.model, spec.train.batch_size)
    except Exception:  # noqa: BLE001 - a model the cost model cannot trace: no cap
        return None
    return 4 * DTYPE_BYTES * cost["params"]["total"] + 2 * cost["activation_bytes"]


def free_bytes(device: torch.device) -> int:
    """Memory free on ``device``: the GPU's (``torch.cuda.mem_get_info``), else the host's
    MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory_bytes()


def seeds_at_once(specs: Sequence[RunSpec]) -> int:
    """How many of ``specs`` (seeds of one configuration) to train as one computation: all
    of them, or as many as fit in ``MEMORY_SHARE`` of the memory free on their device."""
    per_seed = seed_bytes(specs[0])
    if not per_seed:
        return len(specs)
    fit = int(MEMORY_SHARE * free_bytes(resolve_device(specs[0].train.device)) // per_seed)
    return max(1, min(len(specs), fit))


def _parts(n: int, at_most: int) -> list[int]:
    """``n`` split into the fewest parts of at most ``at_most``, as even as can be."""
    k = -(-n // at_most)
    return [n // k + (i < n % k) for i in range(k)]


def train_seeds(specs: Sequence[RunSpec], data: Dataset,
                on_step: OnStep | None = None) -> list[tuple[torch.nn.Module, RunResult]]:
    """Train every spec (the seeds of one configuration, as a rule) and return each one's
    trained model and result, in order: batched where :func:`why_not_batched` allows and
    vmap runs the model (a part at a time where all would not fit in memory:
    :func:`seeds_at_once`), else one by one with the loop, each result's ``engine`` naming
    the engine and, for the loop, the reason."""
    specs, out = list(specs), []
    reason = why_not_batched(specs)
    if reason is None:
        at_once = seeds_at_once(specs)
        label = "batched" if at_once == len(specs) else f"batched, {at_once} of {len(specs)} seeds at a time (memory)"
        if at_once < 2:
            reason = "two seeds would not fit in the memory a batch may use (skiplab.engine.MEMORY_SHARE)"
        else:
            for size in _parts(len(specs), at_once):
                if size == 1:  # a seed left over: the loop trains it, as it would train one seed alone
                    reason = "one seed left over (memory)"
                    break
                try:
                    out += _train_batched(specs[:size], data, on_step, label)
                except Unbatchable as e:
                    reason = str(e)
                    break
                specs = specs[size:]
            if not specs:
                return out
    for spec in specs:
        model, result = train_model(spec, data, None if on_step is None else
                                    lambda step, total, loss: on_step(step, total, loss, 1))
        engine = f"loop: {reason}" if spec.train.engine != "loop" else "loop"
        result.trained_by = f"{engine}; {result.trained_by}" if result.trained_by else engine  # e.g. compile failed
        out.append((model, result))
    return out


# -- Stacked state -----------------------------------------------------------------------
class _Bound:
    """A module bound to one seed's slice of the stacked tensors: what ``loss_and_logits``
    calls as a model (``model(x, return_aux=True)``, ``model.spec``)."""

    def __init__(self, base: torch.nn.Module, bind: Binder, params: dict, buffers: dict):
        self.base, self.bind, self.params, self.buffers, self.spec = base, bind, params, buffers, base.spec

    def __call__(self, x: torch.Tensor, return_aux: bool = False):
        if seed_batched.compiling():  # Dynamo knows functional_call; slots left holding vmap's tensors it cannot compile
            return functional_call(self.base, (self.params, self.buffers), (x,), {"return_aux": return_aux})
        self.bind(self.params, self.buffers)  # functional_call's work, its slots found once
        return self.base(x, return_aux=return_aux)


@torch.no_grad()
def _load(model: torch.nn.Module, params: dict, buffers: dict, s: int) -> None:
    """Copy seed ``s``'s slice of the stacked tensors into its own module."""
    for name, t in model.named_parameters():
        t.copy_(params[name][s])
    for name, t in model.named_buffers():
        t.copy_(buffers[name][s])


@torch.no_grad()
def _clip_per_seed(grads: list[torch.Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` for each seed's slice of stacked gradients (S, ...):
    total norm over all tensors, coefficient max_norm / (norm + 1e-6) clamped to 1."""
    if not grads:
        return
    S = grads[0].shape[0]
    norms = torch.stack([g.reshape(S, -1).norm(2, dim=1) for g in grads], dim=1).norm(2, dim=1)  # (S,)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(S, *[1] * (g.dim() - 1)).to(g.dtype))


# -- Training ----------------------------------------------------------------------------
def _train_batched(specs: list[RunSpec], data: Dataset, on_step: OnStep | None,
                   label: str = "batched") -> list[tuple[torch.nn.Module, RunResult]]:
    spec, cfg, start = specs[0], specs[0].train, clock.now()
    S = len(specs)
    check_fits(spec.model, data)
    text = isinstance(data, TextDataset)
    data = data.for_model(spec.model)
    device = resolve_device(cfg.device)
    check_precision(cfg, device)
    models = [build_model(s.model, seed=s.seed).to(device).train() for s in specs]
    params, buffers = stack_module_state(models)  # {name: (S, ...)}; params are fresh leaves
    base = copy.deepcopy(models[0]).to("meta")  # the structure vmap runs; no storage of its own
    seed_batched.install(base)  # one kernel over all seeds for linear and batch norm layers
    bind = Binder(base, models[0])
    x_tr, y_tr = data.x_train.to(device), data.y_train.to(device)
    x_te, y_te = data.x_test.to(device), data.y_test.to(device)
    if wants_channels_last(spec.model, device):
        # The per-seed models (evaluations) and the test inputs go channels-last; the vmapped
        # step runs each convolution as one grouped convolution over stacked (S, ...) weights,
        # whose layout vmap chooses.
        models = [m.to(memory_format=torch.channels_last) for m in models]
        x_te = to_channels_last(x_te)
    n = len(y_tr)
    total = max(1, math.ceil(math.ceil(n / cfg.batch_size) * cfg.epochs))
    check_warmup(cfg, total)
    # The fused implementation: one kernel per stacked tensor, not a dozen small ops per tensor.
    opt = make_optimizer(cfg.optimizer, params.values(), cfg.lr, cfg.weight_decay, fused=True)
    sched = make_schedule(opt, cfg, total)
    eval_at = {round(total * (i + 1) / cfg.evals) for i in range(cfg.evals)}
    gens = [torch.Generator().manual_seed(s.seed) for s in specs]  # each seed's data order, as the loop's

    def seed_loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor):
        return loss_and_logits(_Bound(base, bind, p, b), x, y, autocast_dtype(cfg))  # (loss, logits) of one seed
    batched_loss = vmap(seed_loss)  # over dim 0 of params, buffers, x and y

    curves: list[list[tuple[int, str, str, float]]] = [[] for _ in specs]
    run_count = 0
    run_correct = torch.zeros(S, device=device)
    active = [True] * S
    steps, messages = [0] * S, [""] * S
    step, positions = 0, (y_tr[0].numel() if n else 1)
    samples, eval_seconds, loop_start = [0], 0.0, clock.now()  # samples: each seed's, after each step
    last_test: list[tuple[float, float]] = [(math.nan, math.nan)] * S  # each seed's latest (test loss, accuracy)
    # Each seed's loss is checked on the device and read back every sync_every steps (1 on
    # the CPU), at each evaluation and at the last step (see skiplab.train.sync_interval).
    sync_every, watch, step_clock = sync_interval(device), DivergenceWatch(S, device), StepClock()
    step_fn, latest = StepFunction(batched_loss, cfg), [0.0] * S

    def read() -> list[int]:
        """Read the watch; stop each seed newly found diverged, as the loop stops it: its
        steps are those before the first non-finite loss, its message that loss. Its module
        gets its slice as it is now: before that step when found at once (sync_every 1, as
        the loop leaves it), else after the steps taken since (NaN as a rule; no diverged
        run stores its model). Seeds are independent (the gradient of the sum is each
        seed's own, clipping and the optimiser are per seed), so a diverged seed still in
        the sum until it is read changes no other seed. Returns the seeds still training."""
        first, bad, latest[:] = watch.read()
        for s in range(S):
            if active[s] and first[s] >= 0:
                active[s], steps[s] = False, first[s]
                messages[s] = f"loss became {bad[s]} at step {first[s] + 1}"
                _load(models[s], params, buffers, s)
        return [s for s in range(S) if active[s]]

    live = list(range(S))
    live_index = torch.arange(S, device=device)  # live, on the device (indexing with a list would copy it there each step)
    for _ in range(math.ceil(cfg.epochs)):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (S, n)
        for i in range(0, n, cfg.batch_size):
            if step == total or not live:
                break
            idx = orders[:, i:i + cfg.batch_size]  # (S, B)
            xb, yb = x_tr[idx], y_tr[idx]  # (S, B, ...)
            step_clock.begin()
            if step == 0:
                try:  # compiled if asked (falling back to eager, saying why), then eager under vmap
                    losses, logits = step_fn(params, buffers, xb, yb)
                except Exception as e:  # noqa: BLE001 - any vmap failure: the loop trains these instead
                    raise Unbatchable(f"vmap cannot run this model ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0][:200]})") from e
            else:
                losses, logits = step_fn(params, buffers, xb, yb)
            watch.see(losses, step, yb[0].numel())
            synced = (step + 1) % sync_every == 0 or step + 1 in eval_at or step + 1 == total
            if synced:
                live = read()
                if not live:
                    break
                if len(live) < len(live_index):
                    live_index = torch.tensor(live, device=device)
            opt.zero_grad(set_to_none=True)
            # Seeds are independent, so the gradient of the sum is each seed's own gradient.
            (losses[live_index].sum() if len(live) < S else losses.sum()).backward()
            if cfg.grad_clip:
                _clip_per_seed([p.grad for p in params.values() if p.grad is not None], cfg.grad_clip)
            opt.step()
            sched.step()
            step_clock.end(step_fn.new_shape)
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
                    _load(models[s], params, buffers, s)
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
    live = read()  # the last step always reads; this catches any loop exit that did not
    trained = [samples[step if active[s] else steps[s]] for s in range(S)]
    compile_seconds, compile_note = step_fn.compile_seconds(step_clock), step_fn.failed
    # Each seed is charged an equal share of the shared wall time, so that summing a
    # group's ``seconds`` gives its wall time, and a seed's rate is the group's.
    train_share = (clock.now() - loop_start - eval_seconds) / S
    trained_by = f"{label}; {compile_note}" if compile_note else label
    out = []
    for s, run in enumerate(specs):
        model = models[s]
        tps = trained[s] * positions / train_share if train_share > 0 else None
        params_count = sum(p.numel() for p in model.parameters())
        if not active[s]:
            out.append((model, RunResult("diverged", run.seed, None, None, None, None, steps[s],
                                         (clock.now() - start) / S, params_count, messages[s],
                                         curves=curves[s], tokens_per_second=tps, trained_by=trained_by,
                                         compile_seconds=compile_seconds)))
            continue
        _load(model, params, buffers, s)
        n_eval = min(n, len(y_te)) if text else n
        tr_loss, tr_acc = evaluate(model, x_tr[:n_eval], y_tr[:n_eval])
        if step in eval_at:  # the last evaluation was at the last step: the same model
            te_loss, te_acc = last_test[s]
        else:
            te_loss, te_acc = evaluate(model, x_te, y_te)
        gains = stream_gains(model, x_te[:GAIN_BATCH]) if hasattr(model, "description") else None
        diagnostics: dict[str, Any] = ({"composite_gain_forward": gains["forward"][-1],
                                        "composite_gain_backward": gains["backward"][-1]} if gains else {})
        bpc = {"val_bpc": te_loss / math.log(2), "train_bpc": tr_loss / math.log(2)} if text else {}
        out.append((model, RunResult("complete", run.seed, tr_acc, te_acc, tr_loss, te_loss, step,
                                     (clock.now() - start) / S, params_count, "", diagnostics,
                                     curves=curves[s], tokens_per_second=tps, trained_by=trained_by,
                                     compile_seconds=compile_seconds, **bpc)))
    return out


__all__ = ["ENGINES", "Unbatchable", "why_not_batched", "why_not_batched_alone", "train_seeds"]
