"""Fast paths for the batched engine: modules run under its ``vmap`` over seeds.

``torch.func.vmap`` runs any module on stacked seeds, but its generic batching rules for
the two commonest layers cost more than the layers (seen with torch.profiler on the
study's MLP, width 64, depth 50, batch 128, 8 seeds, one CPU thread):

* batch norm: the rule normalises with a dummy weight and applies the seeds' weights and
  biases with two more broadcast ops, and moves the seed dimension in and out of the
  channels on every call: the largest single cost of a batched forward;
* linear: ``matmul`` then a separate broadcast add of the bias.

Here each of these layers, when it sees its input, weights and buffers all batched over
the seeds at the current vmap level, unwraps them and runs one plain kernel over all
seeds, then wraps the result again:

* batch norm is per channel, so S seeds' (B, C, ...) batches are one batch norm over
  S x C channels, (B, S x C, ...), with the stacked weights, biases and running statistics
  as its per-channel tensors (the running statistics are updated in place through views of
  the stacked buffers, as the vmap rule does);
* linear is one ``baddbmm``: bias + x @ W^T for every seed in one call.

:func:`over_seeds` does the same for a function that treats leading dimensions as a batch
(DWA's weighted sum, mHC's Sinkhorn-Knopp: hand-written autograd Functions), running it
below the vmap layer, where an autograd Function is a plain one. Strategies do not call it:
they mark such a call with the neutral :func:`skiplab.batching.over_leading_dims`, which this
module, once imported, runs through :func:`over_seeds`.

Both compute each seed's numbers with the same kernels as a seed alone, so
``tests/test_engine.py``'s 1e-4 agreement with the loop holds. The unwrapping uses
functorch's tensor-level API (``torch._C._functorch``), which is not public; where it is
missing (another torch) :func:`install` leaves the model to vmap's own rules.
``benchmarks/engine_throughput.py`` measures the result.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import batching

try:  # functorch's tensor-level API (torch >= 2.0); absent or changed: vmap's own rules
    from torch._C._functorch import (_add_batch_dim, _unwrap_batched, maybe_current_level, maybe_get_level,
                                     pop_dynamic_layer_stack, push_dynamic_layer_stack)
except ImportError:  # pragma: no cover - depends on the torch build
    _add_batch_dim = _unwrap_batched = maybe_current_level = maybe_get_level = None

# The fast paths below run a few plain kernels each, so their own Python costs as much as
# the kernels: they leave the vmap layer with pop/push_dynamic_layer_stack directly (what
# functorch's temporarily_pop_interpreter_stack does, without a generator-based context
# manager), move no dimension that is already first, and update batch norm's counter below
# vmap. At the study's sizes (width 64, batch 128, 3 seeds, one thread) a linear call then
# took 86 us against 100 through vmap's own rule and 101 as three seeds' own calls, a batch
# norm 123 against 180 and 145 (python benchmarks/seed_kernels.py, idle machine). The
# arithmetic is that of the version before (the same kernels on the same tensors: bitwise
# the same training), whose fast paths the same benchmark, run with seed_batched.py of
# commit a34821f on a busier machine, put at 1.03x (linear) and 1.14x (batch norm) the
# seeds' own calls, against 0.85x and 0.85x here.


def _below_vmap(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``fn()`` with the vmap layer popped: plain tensors, no interpreter to pass through."""
    saved = pop_dynamic_layer_stack()
    try:
        return fn()
    finally:
        push_dynamic_layer_stack(saved)


def _level(x: torch.Tensor) -> int:
    """The vmap level at which ``x`` is batched if that is the innermost vmap running, else
    0 (not under vmap, compiling, or batched only by an outer vmap: nothing to do here)."""
    if maybe_get_level is None or batching.compiling():  # Dynamo cannot trace functorch's API; inductor fuses anyway
        return 0
    level = maybe_get_level(x)
    return level if level >= 1 and level == maybe_current_level() else 0


def over_seeds(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)`` for a function that treats its tensors' leading dimensions as a
    batch (an autograd Function over ``(..., n, n)`` matrices, say). Under the engine's vmap,
    with every tensor batched over the seeds, ``fn`` runs once on the plain tensors with the
    seeds as one more leading dimension: one autograd node, rather than vmap running ``fn``
    and, in backward, vmapping its backward, per call."""
    level = _level(tensors[0])
    parts = _unwrapped(tensors, level) if level else None
    if parts is None:
        return fn(*tensors)
    # Below the vmap layer: there an autograd Function is a plain one (inside it, functorch
    # would still wrap it in a vmapped Function, and vmap its backward, though no input is
    # batched: that made DWA and mHC train slower batched than looped).
    return _add_batch_dim(_below_vmap(lambda: fn(*parts)), 0, level)


def _unwrapped(tensors: Sequence[torch.Tensor | None], level: int) -> list[torch.Tensor] | None:
    """Each tensor without its vmap wrapper at ``level``, seeds first; None unless every
    one is batched at that level."""
    out = []
    for t in tensors:
        if t is None:
            return None
        plain, dim = _unwrap_batched(t, level)
        if dim is None:
            return None
        out.append(plain if dim == 0 else plain.movedim(dim, 0))
    return out


class _Dims:
    """What ``_check_input_dim`` reads of an input: its number of dimensions."""

    def __init__(self, n: int):
        self.n = n

    def dim(self) -> int:
        return self.n


class _SeedBatchNorm:
    """Batch norm over S seeds as one batch norm over S x C channels (mixed into
    ``nn.BatchNorm1d``/``2d``/``3d`` by :func:`install`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = _level(x)
        # Training with running statistics and an exponential average: the case the rule is
        # for. Evaluation and the cumulative average (momentum None) keep vmap's rule.
        if not level or not self.training or self.momentum is None:
            return super().forward(x)
        parts = _unwrapped((x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.num_batches_tracked), level)
        if parts is None:
            return super().forward(x)
        x, mean, var, weight, bias, tracked = parts
        self._check_input_dim(_Dims(x.dim() - 1))  # one seed's input
        S, B, C, rest = x.shape[0], x.shape[1], x.shape[2], x.shape[3:]
        def plain() -> torch.Tensor:
            tracked.add_(1)
            return F.batch_norm(x.transpose(0, 1).reshape(B, S * C, *rest), mean.view(-1), var.view(-1),
                                weight.reshape(-1), bias.reshape(-1), True, self.momentum, self.eps)
        y = _below_vmap(plain)
        return _add_batch_dim(y.view(B, S, C, *rest), 1, level)  # seeds at dim 1: no copy back


class _SeedLinear:
    """Linear over S seeds as one ``baddbmm`` (mixed into ``nn.Linear`` by :func:`install`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = _level(x)
        parts = _unwrapped((x, self.weight, self.bias), level) if level else None
        if parts is None:
            return super().forward(x)
        x, weight, bias = parts
        S, lead = x.shape[0], x.shape[:-1]
        y = _below_vmap(lambda: torch.baddbmm(bias.unsqueeze(1), x.reshape(S, -1, x.shape[-1]),
                                              weight.transpose(1, 2)))
        return _add_batch_dim(y.view(*lead, weight.shape[1]), 0, level)


_MIXINS = {nn.Linear: _SeedLinear, nn.BatchNorm1d: _SeedBatchNorm, nn.BatchNorm2d: _SeedBatchNorm,
           nn.BatchNorm3d: _SeedBatchNorm}
_CLASSES: dict[type, type] = {}


def install(model: nn.Module) -> int:
    """Give ``model``'s plain ``nn.Linear`` and ``nn.BatchNorm*d`` modules the fast paths
    above, in place (their class changes to a subclass; outside vmap they behave exactly as
    before). Returns how many modules changed; 0 where functorch's API is missing."""
    if _unwrap_batched is None:
        return 0
    count = 0
    for module in model.modules():
        mixin = _MIXINS.get(type(module))  # exact type: a user's subclass keeps its own forward
        if mixin is not None:
            cls = type(module)
            if cls not in _CLASSES:
                _CLASSES[cls] = type(f"Seed{cls.__name__}", (mixin, cls), {"__module__": __name__})
            module.__class__ = _CLASSES[cls]
            count += 1
    return count


class Binder:
    """Binds stacked tensors into a module's slots for one call: what
    ``torch.func.functional_call`` does, without its per-call bookkeeping (it walks the
    module tree and unties tensors on every call; here the slots are found once). Tied
    parameters (one tensor under two names) get the tensor of the name
    ``named_parameters()`` keeps, the key ``stack_module_state`` stacks it under. Ties are
    read from ``source`` (default: the module itself), the model the stacked tensors came
    from: moving a copy to the meta device unties them."""

    def __init__(self, module: nn.Module, source: nn.Module | None = None):
        source = module if source is None else source
        self.slots: list[tuple[nn.Module, str, str, str]] = []
        for kind in ("_parameters", "_buffers"):
            named = source.named_parameters if kind == "_parameters" else source.named_buffers
            first = {id(t): name for name, t in named()}
            for name, t in named(remove_duplicate=False):
                owner, _, attr = name.rpartition(".")
                self.slots.append((module.get_submodule(owner), kind, attr, first[id(t)]))

    def __call__(self, params: dict, buffers: dict) -> None:
        for owner, kind, attr, key in self.slots:
            getattr(owner, kind)[attr] = (params if kind == "_parameters" else buffers)[key]


# The strategies' calls marked batchable (skiplab.batching) run through over_seeds from now on.
batching.batch_with(over_seeds)


__all__ = ["install", "Binder", "over_seeds"]
