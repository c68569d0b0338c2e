"""The cost of a model, counted on the model itself.

``model_cost(spec)`` builds the model ``spec`` describes of fake CPU tensors (on the meta
device: shapes and dtypes, no memory, no arithmetic) and runs one training forward under the profiler's one
counter (``skiplab.profiling``: PyTorch's FLOP formulas, the one merge rule, bytes written
by ``cat``/``stack``, ``saved_tensors_hooks``). There is no second description of the
model to keep equal to it: what trains is what is counted, and ``skiplab profile`` of the
built model gives the same figures (``tests/test_cost.py``). Counting on meta took 0.4 s
for the depth-6 hyper-connection transformer and gave the old hand trace's FLOPs exactly
(issue 25).

A model too large to build even on meta (a size past 2^63: concat-double's widths double
with depth) raises ``TooLargeToBuild``; ``skiplab.cost.answer.model_cost`` then estimates it.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..errors import UserError
from ..model import SkipNet
from ..profiling import Profile, profile
from ..spec import ModelSpec
from .memo import known

DTYPE_BYTES = 4  # float32
INDEX_LIMIT = sys.maxsize  # what a tensor's size may be, even on meta (int64)


class TooLargeToBuild(Exception):
    """Even on the meta device the model cannot be built (a size past what an index holds)."""


def check_batch(batch: Any) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch: must be an integer >= 1, got {batch!r}")


def _build(spec: ModelSpec, where) -> SkipNet:
    """``spec``'s model built under ``where`` (the meta device, or a FakeTensorMode), or
    TooLargeToBuild for a size past int64."""
    if max([spec.width] + [w.out_width for w in spec.block_widths()]) > INDEX_LIMIT:
        raise TooLargeToBuild(f"{spec.skip} at depth {spec.depth}: a state wider than 2^63 channels")
    try:
        with where, torch.random.fork_rng(devices=[]):
            return SkipNet(spec.replace(max_state_width=INDEX_LIMIT))
    except RuntimeError as e:  # "Storage size calculation overflowed": a weight past 2^63 elements
        if "overflow" in str(e):
            raise TooLargeToBuild(f"{spec.skip} at depth {spec.depth}: {e}") from None
        raise


@functools.lru_cache(maxsize=64)
def _fake(spec: ModelSpec) -> tuple[SkipNet, FakeTensorMode]:
    mode = FakeTensorMode()
    return _build(spec, mode).train(), mode


def meta_model(spec: ModelSpec) -> SkipNet:
    """``spec``'s model built of fake CPU tensors (``FakeTensorMode``: shapes and dtypes on
    the meta device, nothing allocated, no arithmetic), in training mode. Fake CPU rather
    than plain meta tensors, so that PyTorch picks the CPU's kernels: on meta,
    ``scaled_dot_product_attention`` falls back to its math path and keeps a T x T matrix
    the CPU's flash kernel never saves (issue 25; ``tests/test_cost.py`` checks the count
    against the CPU's). ``max_state_width`` guards real memory, so it is lifted here (the
    counted spec keeps the user's)."""
    return _fake(spec)[0]


def meta_input(spec: ModelSpec, batch: int) -> torch.Tensor:
    """An input batch of the right shape and dtype, fake, in the model's mode."""
    x, _ = spec.family.random_batch(spec, 1, torch.Generator().manual_seed(0))
    with _fake(spec)[1]:
        return torch.empty((batch, *x.shape[1:]), dtype=x.dtype)


@functools.lru_cache(maxsize=256)
def _counted(spec: ModelSpec, batch: int, aux: bool) -> Profile:
    try:
        return profile(meta_model(spec), meta_input(spec, batch), backward=False, return_aux=aux)
    except ValueError as e:  # the model refuses this batch (batch norm in training needs 2 samples)
        raise UserError(f"batch: {spec.model} with {spec.norm} norm cannot run a training batch of {batch}: {e}") from None


def param_counts(spec: ModelSpec) -> dict[str, int]:
    """Parameters per part of ``spec``'s model, by ``numel`` of the model built on the meta
    device (no forward, and plain meta rather than fake tensors, which build 3-5x faster
    and hold the same shapes: what a parameter budget's many widths need)."""
    return dict(_param_counts(spec))


@functools.lru_cache(maxsize=1024)
def _param_counts(spec: ModelSpec) -> dict[str, int]:
    model = _build(spec, torch.device("meta"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    out = {"stem": count(model.stem), "blocks": sum(count(b) for b in model.blocks), "head": count(model.head),
           "aux": count(model.aux_heads)}
    return out | {"total": sum(out.values())}


def counted_cost(spec: ModelSpec, batch: int = 32) -> dict[str, Any]:
    """Costs of ``spec`` for one training step on a batch of ``batch`` samples, counted on
    its model built on meta; raises ``TooLargeToBuild`` for a model even meta cannot hold.

    ``params``: per part; ``flops``: per sample, inference forward (``matmul``; ``merge``,
    the connections' own element-wise work: what the merge rule counts outside the stem and
    the heads; ``total``), plus ``aux_matmul`` for auxiliary heads (training only);
    ``activation_bytes``: what autograd keeps for backward for the batch (aux heads
    included, input excluded); ``concat_bytes``: bytes written by concatenation in one
    inference forward of the batch; ``per_block`` and ``block_flops_ratio`` (block l+1
    over block l).
    """
    check_batch(batch)
    hit = known(spec, batch)  # a sweep over depths may have counted it already (skiplab.cost.prefix)
    if hit is not None:
        return hit
    aux = bool(spec.describe().aux)
    inference = _counted(spec, batch, False)
    return assemble(spec, batch, inference, _counted(spec, batch, True) if aux else inference)


def _per_sample(value: int, batch: int, what: str) -> int:
    if value % batch:  # every per-sample figure is the batch's over its size, exactly
        raise AssertionError(f"{what}: {value} is not a multiple of the batch {batch}")
    return value // batch


def assemble(spec: ModelSpec, batch: int, inference: Profile, training: Profile,
             params: dict[str, int] | None = None) -> dict[str, Any]:
    """``model_cost``'s answer from two profiles of ``spec``'s model on a batch of ``batch``:
    an inference forward and a training forward (aux heads included; the same profile when
    there are none). ``skiplab.cost.measure`` passes profiles made on a real device;
    ``skiplab.cost.prefix`` passes ``params`` (``param_counts(spec)``, counted on its model)."""
    d = spec.describe()
    parts = ("stem", "head", "aux_heads")
    flops = {part: inference.of(part) if part in inference.own else None for part in parts}
    outside = sum(f["merge_flops"] for f in flops.values() if f)
    matmul = _per_sample(inference.total["flops"], batch, "flops")
    merge = _per_sample(inference.total["merge_flops"] - outside, batch, "merge flops")
    aux_matmul = _per_sample(training.total["flops"] - inference.total["flops"], batch, "aux flops")
    per_block = []
    for i, site in enumerate(d.sites):
        f, t, w = inference.of(f"blocks.{i}"), training.of(f"blocks.{i}"), site.widths
        per_block.append({"block": site.index, "in_width": w.in_width, "features": w.features,
                          "out_width": w.out_width, "params": f["params"],
                          "flops": _per_sample(f["flops"], batch, "block flops"),
                          "merge_flops": _per_sample(f["merge_flops"], batch, "block merge flops"),
                          "activation_bytes": t["saved_bytes"], "concat_bytes": f["concat_bytes"]})
    block_flops = [b["flops"] for b in per_block]
    return {
        "skip": spec.skip, "model": spec.model, "depth": spec.depth, "width": spec.width,
        "options": dict(d.options), "batch": batch,
        "state_width": spec.state_width, "spec": spec.to_dict(),
        "params": dict(params) if params is not None else param_counts(spec),
        "flops": {"matmul": matmul, "merge": merge, "total": matmul + merge, "aux_matmul": aux_matmul},
        # per position of the sequence (per token for the transformer; = per sample for the MLP)
        "flops_per_token": (matmul + merge) / d.positions,
        "activation_bytes": training.total["saved_bytes"],
        "concat_bytes": inference.total["concat_bytes"],
        "per_block": per_block,
        "block_flops_ratio": [b / a if a else None for a, b in zip(block_flops, block_flops[1:])],
    }
