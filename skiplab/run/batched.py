"""Engines: how the seeds of one configuration are trained.

Both run the one training loop, :func:`skiplab.run.loop.train_seeds_with`; they differ in how
it holds the seeds' training state. ``loop`` trains each seed alone, its state its own
module (:class:`skiplab.run.loop.Alone`). ``batched`` trains S seeds of one configuration as
one computation (:class:`Stacked`): each seed's model is built as the loop builds it
(``build_model(spec, seed)``), the S models' parameters and buffers are stacked along a
new leading dimension (``torch.func.stack_module_state``) and one forward/backward runs the
model, its slots bound to the stacked tensors (:class:`skiplab.run.seed_batched.Binder`,
``functional_call``'s work), under ``torch.func.vmap`` over that dimension
(https://pytorch.org/docs/stable/func.html, "Model ensembling"), with linear and batch norm
layers and the residual streams' autograd Functions run as one kernel over all seeds
(:mod:`skiplab.run.seed_batched`). Small models are bound by per-operation overhead rather
than arithmetic, and S seeds then pay it once.

Each seed keeps what it would have alone, since the loop is the same:

* initial weights: ``build_model(spec, seed)``, then stacked;
* data order: its own ``torch.Generator`` seeded with the seed, one ``randperm`` per epoch;
* optimiser state: one torch optimiser (fused, as the loop's) over the stacked tensors.
  Adam, AdamW and SGD (momentum, Nesterov, weight decay) are element-wise, so one over the
  stack is S of them; gradient clipping, which is not (a global norm), is done per seed;
* batch-norm statistics: the running mean and variance are stacked buffers, bound into the
  model and updated in place by batch norm under vmap (through views of the stacked
  buffers: :mod:`skiplab.run.seed_batched`);
* divergence: each seed's loss is checked on the device every step and read back every
  ``sync_interval`` steps (every step on the CPU; see :func:`skiplab.run.step.sync_interval`);
  a seed whose loss is not finite is stored ``diverged`` and leaves the computation's loss
  (its slice is computed on but never read again); the others go on;
* curves and evaluations: at each evaluation a seed's slice is copied into its own module
  and scored by :func:`skiplab.run.loop.evaluate`.

The two engines agree to floating-point reassociation (a batched matmul sums in another
order): ``tests/test_engine.py`` checks final parameters, buffers and metrics within 1e-4
relative for every strategy. Where batching cannot apply (one seed, runs that differ in
more than their seed, ``engine="loop"``, a family that batches slower than it loops on the
CPU (the CNNs: ``Family.batches_on_cpu``), or a model vmap cannot run), the loop trains
them and each result's ``engine`` says why.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap

from ..batching import compiling
from ..cost import model_cost
from ..cost.count import DTYPE_BYTES
from ..cost.measure import available_memory_bytes
from ..datasets import Dataset
from ..families import get_family
from ..objective import loss_and_logits
from . import seed_batched
from .config import RunResult, RunSpec, TrainConfig, resolve_device
from .loop import Alone, OnStep, train_seeds_with
from .seed_batched import Binder
from .step import StepFunction, autocast_dtype


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
            reason = "two seeds would not fit in the memory a batch may use (skiplab.run.batched.MEMORY_SHARE)"
        else:
            for size in _parts(len(specs), at_once):
                if size == 1:  # a seed left over: the loop trains it, as it would train one seed alone
                    reason = "one seed left over (memory)"
                    break
                try:
                    out += train_seeds_with(specs[:size], data, Stacked, on_step, label)
                except Unbatchable as e:
                    reason = str(e)
                    break
                specs = specs[size:]
            if not specs:
                return out
    for spec in specs:
        label = f"loop: {reason}" if spec.train.engine != "loop" else "loop"
        out += train_seeds_with([spec], data, Alone, on_step, label)
    return out


# -- Stacked state -----------------------------------------------------------------------
class _Bound:
    """A module bound to one seed's slice of the stacked tensors: what ``loss_and_logits``
    calls as a model (``model(x, return_aux=True)``, ``model.spec``)."""

    def __init__(self, base: torch.nn.Module, bind: Binder, params: dict, buffers: dict):
        self.base, self.bind, self.params, self.buffers, self.spec = base, bind, params, buffers, base.spec

    def __call__(self, x: torch.Tensor, return_aux: bool = False):
        if compiling():  # Dynamo knows functional_call; slots left holding vmap's tensors it cannot compile
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


class Stacked:
    """S seeds' training state stacked (``torch.func.stack_module_state``: each parameter
    and buffer (S, ...)), for :func:`skiplab.run.loop.train_seeds_with`: a step runs one
    forward of the model structure, bound to each seed's slice, under vmap over the seeds;
    clipping is per seed; ``load(s)`` copies seed ``s``'s slice into its own module (for
    evaluations and the results). A model vmap cannot run raises :class:`Unbatchable` at
    the first step. Channels-last modules (CUDA) are the evaluations'; the vmapped step
    runs each convolution as one grouped convolution over stacked weights, whose layout
    vmap chooses."""

    def __init__(self, models: list[torch.nn.Module], cfg: TrainConfig, channels_last: bool = False):
        self.models = models
        self.stacked, self.buffers = stack_module_state(models)  # {name: (S, ...)}; params are fresh leaves
        # The optimiser steps the stacked tensors: one per parameter of the model, S seeds in each.
        self.params = list(self.stacked.values())
        base = copy.deepcopy(models[0]).to("meta")  # the structure vmap runs; no storage of its own
        seed_batched.install(base)  # one kernel over all seeds for linear and batch norm layers
        bind = Binder(base, models[0])

        def seed_loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor):
            return loss_and_logits(_Bound(base, bind, p, b), x, y, autocast_dtype(cfg))  # (loss, logits) of one seed
        self.step_fn = StepFunction(vmap(seed_loss), cfg)  # over dim 0 of params, buffers, x and y
        self.first = True

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.first:
            return self.step_fn(self.stacked, self.buffers, xb, yb)
        self.first = False
        try:  # compiled if asked (falling back to eager, saying why), then eager under vmap
            return self.step_fn(self.stacked, self.buffers, xb, yb)
        except Exception as e:  # noqa: BLE001 - any vmap failure: the loop trains these instead
            raise Unbatchable(f"vmap cannot run this model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from e

    def clip(self, max_norm: float) -> None:
        _clip_per_seed([p.grad for p in self.params if p.grad is not None], max_norm)

    def load(self, s: int) -> None:
        _load(self.models[s], self.stacked, self.buffers, s)


__all__ = ["Stacked", "Unbatchable", "why_not_batched", "why_not_batched_alone", "train_seeds"]
