"""Costs at many depths of one spec from one counted forward (issue 25, item 7: ``skiplab
cost --depths 1..64`` stays interactive).

The model at depth d is the model at the deepest depth D cut after its d-th block, with
the head of depth d: the stem and the first d blocks have the same widths (checked, per
depth, on the specs' descriptions), and each op, each merge and each saved storage of
those blocks is booked exactly as in the depth-d model (a storage is charged to the first
module that saves it, and nothing after block d runs before it). So one forward of the
depth-D model under the profiler's counter (``skiplab.profiling``), block by block, gives
every prefix's figures; after each block d whose depth is asked, the strategy's readout
and a head built for depth d run on the stream and are counted on their own (their
bookings are taken out again before block d+1, and their outputs kept alive so that no
storage key is reused). The figures are the slow path's exactly (``counted_cost`` per
depth; ``tests/test_cost_prefix.py`` compares both on every strategy x family x norm).

Families whose depth is not a count of identical-position blocks (resnet: its stages and
strides change with the depth) and models with auxiliary heads take the slow path.
``SKIPLAB_COST_PREFIX=0`` turns the fast path off.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from ..profiling.merge_rule import Kinds
from ..profiling.recorder import Recorder
from ..profiling.result import FIGURES, Profile
from ..profiling.saved import SavedBytes
from ..profiling.scope import ModuleStack
from ..profiling.storage import storage_key
from ..spec import ModelSpec
from .memo import enabled, remember
from .count import INDEX_LIMIT, _build, _fake, assemble, check_batch, meta_input

def meta_allowed() -> bool:
    """``SKIPLAB_COST_META=0``: count every family on fake CPU tensors (tests compare both)."""
    return os.environ.get("SKIPLAB_COST_META", "1") != "0"


def applies(spec: ModelSpec, depths: Sequence[int]) -> bool:
    """Whether every depth in ``depths`` is a prefix of the deepest one (see the module
    docstring): same family positions, same widths, no auxiliary heads."""
    if not enabled() or not depths:
        return False
    top = spec.replace(depth=max(depths))
    try:
        deep = top.describe()
        if deep.aux or top.family.blocks(top) != top.depth:
            return False
        for d in set(depths):
            s = spec.replace(depth=d)
            desc = s.describe()
            if desc.aux or s.family.blocks(s) != d or desc.options != deep.options:
                return False
            if [(x.widths, x.channel_dim) for x in desc.sites] != [(x.widths, x.channel_dim)
                                                                    for x in deep.sites[:len(desc.sites)]]:
                return False
    except ValueError:  # a spec that cannot be described at some depth: the slow path says why
        return False
    return True


class _Sums(Profile):
    """A Profile whose subtree sums are given (``of`` in one look-up)."""

    def __init__(self, subtrees: dict[str, dict[str, int]], total: dict[str, Any]):
        super().__init__(own=subtrees, total=total)

    def of(self, name: str) -> dict[str, int]:
        return self.own[name]


def _subtrees(per_name: dict[str, dict[str, int]], roots: list[str]) -> dict[str, dict[str, int]]:
    """Each root's figures summed over its own module and every module below it, in one pass
    over the names (a pass per root made a depth-64 sweep quadratic in its modules)."""
    out = {r: dict.fromkeys(FIGURES, 0) for r in roots}
    for name, v in per_name.items():
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # the name and each of its ancestors that is a root
            sums = out.get(".".join(parts[:k]))
            if sums is not None:
                for f in FIGURES:
                    sums[f] += v[f]
    return out


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def sweep(spec: ModelSpec, depths: Sequence[int], batch: int = 32) -> dict[int, dict[str, Any]]:
    """``counted_cost(spec.replace(depth=d), batch)`` for every d in ``depths`` (all must
    build on meta, and ``applies`` must hold), from one counted forward at the deepest."""
    check_batch(batch)
    wanted = sorted(set(depths))
    top = spec.replace(depth=wanted[-1])
    if top.family.counts_on_meta and meta_allowed():  # plain meta tensors: the same counts, faster
        mode = torch.device("meta")
        model = _build(top, mode).train()  # may raise TooLargeToBuild
        sample, _ = top.family.random_batch(top, 1, torch.Generator().manual_seed(0))
        x = torch.empty((batch, *sample.shape[1:]), dtype=sample.dtype, device="meta")
    else:
        model, mode = _fake(top)  # may raise TooLargeToBuild
        x = meta_input(top, batch)
    desc = top.describe()
    per = desc.family.sublayers_per_block
    try:
        return _sweep(spec, wanted, batch, model, mode, x, desc, per)
    except ValueError as e:  # the model refuses this batch: the slow path's message
        from ..errors import UserError
        raise UserError(f"batch: {spec.model} with {spec.norm} norm cannot run a training batch of {batch}: {e}") \
            from None


def _sweep(spec, wanted, batch, model, mode, x, desc, per) -> dict[int, dict[str, Any]]:
    family, strategy, options = desc.family, desc.strategy, desc.options
    params = list(model.parameters())
    buffers = list(model.buffers())
    example = [x]
    stack = ModuleStack().attach(model)
    kinds = Kinds(params + buffers, example)
    recorder = Recorder(stack, kinds)
    saved = SavedBytes(stack, params + buffers + example)
    books = (recorder.flops, recorder.merge_flops, recorder.concat_bytes)
    heads: dict[int, nn.Module] = {}  # readout width -> a head (same shapes: the same counts)
    keep: list[Any] = []  # outputs of the heads' runs, alive to the end (no storage key reused)
    points: dict[int, dict[str, Any]] = {}

    def head_for(d: int) -> nn.Module:
        s = spec.replace(depth=d)
        width = s.describe().readout_width
        if width not in heads:
            with mode, torch.random.fork_rng(devices=[]):
                head = family.head(s.replace(max_state_width=INDEX_LIMIT), width).train()
            holder = nn.Module()
            holder.add_module("head", head)
            stack.attach(holder)  # its modules are known as head, head.fc, ...
            hp = list(head.parameters()) + list(head.buffers())
            kinds.weight_storages |= {storage_key(t) for t in hp}
            saved.excluded |= {storage_key(t) for t in hp}
            heads[width] = head
        return heads[width]

    def checkpoint(d: int, stream) -> None:
        before = [dict(b) for b in books]
        seen = set(saved.seen)
        main = {"flops": sum(before[0].values()), "merge_flops": sum(before[1].values()),
                "concat_bytes": sum(before[2].values()),
                "saved_bytes": sum(n for n, _ in saved.seen.values())}
        head = head_for(d)
        keep.append(head(strategy.readout(stream, options)))
        extra = {"flops": 0, "merge_flops": 0, "concat_bytes": 0, "saved_bytes": 0}
        in_head = dict(extra)
        for key, book, old in zip(("flops", "merge_flops", "concat_bytes"), books, before):
            for name, v in book.items():
                delta = v - old.get(name, 0)
                extra[key] += delta
                if name == "head" or name.startswith("head."):
                    in_head[key] += delta
            book.clear()
            book.update(old)
        for ptr in set(saved.seen) - seen:
            nbytes, where = saved.seen.pop(ptr)
            extra["saved_bytes"] += nbytes
            if where == "head" or where.startswith("head."):
                in_head["saved_bytes"] += nbytes
        points[d] = {"main": main, "extra": extra, "head": in_head, "head_params": _numel(head)}

    try:
        with saved.hooks(), recorder:
            stream = strategy.init(model.stem(family.prepare_input(x, model.spec)), options)
            if 0 in wanted:
                checkpoint(0, stream)
            for l, block in enumerate(model.blocks, start=1):
                stream = block(stream)
                if l % per == 0 and l // per in wanted:
                    checkpoint(l // per, stream)
    finally:
        stack.detach()

    own_saved = saved.per_module()
    names = [n for n, _ in model.named_modules()]
    per_name = {n: {"params": 0, "flops": recorder.flops.get(n, 0), "merge_flops": recorder.merge_flops.get(n, 0),
                    "concat_bytes": recorder.concat_bytes.get(n, 0), "saved_bytes": own_saved.get(n, 0),
                    "recompute_concat_bytes": 0} for n in names}
    sums = _subtrees(per_name, ["stem"] + [f"blocks.{i}" for i in range(len(model.blocks))])
    stem = sums["stem"] | {"params": _numel(model.stem)}
    blocks = [sums[f"blocks.{i}"] | {"params": _numel(block)} for i, block in enumerate(model.blocks)]
    zeros = dict.fromkeys(FIGURES, 0)
    stem_params = stem["params"]
    out = {}
    for d in wanted:
        s = spec.replace(depth=d)
        p = points[d]
        n = d * per
        total = {k: p["main"][k] + p["extra"][k] for k in ("flops", "merge_flops", "concat_bytes", "saved_bytes")}
        total |= {"params": 0, "recompute_concat_bytes": 0, "backward_flops": None,
                  "seconds_forward_backward": None}
        head = dict(p["head"]) | {"params": p["head_params"], "recompute_concat_bytes": 0}
        subtrees = {"stem": stem, "head": head, "aux_heads": zeros} | {f"blocks.{i}": blocks[i] for i in range(n)}
        prof = _Sums(subtrees, total)
        block_params = sum(b["params"] for b in blocks[:n])
        params = {"stem": stem_params, "blocks": block_params, "head": p["head_params"], "aux": 0}
        params["total"] = sum(params.values())
        cost = assemble(s, batch, prof, prof, params=params)
        out[d] = cost
        remember(s, batch, cost)
    return out
