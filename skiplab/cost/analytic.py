"""Analytic cost of a model: parameters, FLOPs, activation memory, concatenation traffic.

Nothing is built: the spec's symbolic forward pass (``skiplab.tape``) is replayed with each
part's own ``trace`` rule, so the answer exists for any depth, including models far
beyond memory. ``tests/test_cost.py`` checks every figure against measurement on built
models (parameters and FLOPs exactly, activation bytes within 5%).
"""

from __future__ import annotations

import math
from typing import Any

from ..layers import SPATIAL_DIMS, Head, Transform, trace_layer
from ..skips import get_strategy
from ..spec import ModelSpec
from ..tape import Counts, Sym, Tape

DTYPE_BYTES = 4  # float32


def positions(spec: ModelSpec) -> int:
    """Spatial positions per sample (1 for the MLP); same padding keeps them in every block."""
    return 1 if spec.model == "mlp" else math.prod(spec.input_shape[1:])


def kernel_volume(spec: ModelSpec) -> int:
    return spec.kernel_size ** SPATIAL_DIMS[spec.model]


def analytic_cost(spec: ModelSpec, batch: int = 32) -> dict[str, Any]:
    """Costs of ``spec`` for one training step on a batch of ``batch`` samples.

    ``params``: per part; ``flops``: per sample, inference forward (``matmul``, ``merge``,
    ``total``), plus ``aux_matmul`` for auxiliary heads (training only); ``activation_bytes``:
    what autograd keeps for backward for the batch (aux heads included, input excluded);
    ``concat_bytes``: bytes written by concatenation for the batch; ``per_block`` and
    ``block_flops_ratio`` (block l+1 over block l).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: must be an integer >= 1, got {batch!r}")
    strategy = get_strategy(spec.skip)
    K, P = kernel_volume(spec), positions(spec)
    part = dict(kernel_volume=K, norm=spec.norm, activation=spec.activation, bias=spec.bias)

    def gate_layer(tape: Tape, z: Sym, out: int) -> Sym:
        return trace_layer(tape, z, out, K, bias=True)  # a gate keeps its bias

    tape = Tape()
    s = Transform.trace(tape, tape.input(spec.in_channels, P), spec.width, **part)
    stem = tape.counts()
    per_block, states = [], []
    for l, w in enumerate(spec.block_widths(), start=1):
        before = tape.counts()
        f = Transform.trace(tape, s, w.features, **part)
        s = strategy.trace(tape, s, f, w, gate_layer)
        states.append(s)
        c = tape.counts() - before
        per_block.append({"block": l, "in_width": w.in_width, "features": w.features, "out_width": w.out_width,
                          "params": c.params, "flops": c.matmul, "merge_flops": c.merge,
                          "activation_bytes": c.saved_bytes(batch, DTYPE_BYTES),
                          "concat_bytes": DTYPE_BYTES * batch * c.concat})
    blocks = tape.counts() - stem
    pooled = spec.model != "mlp"
    Head.trace(tape, s, spec.classes, spec.bias, pooled)
    head = tape.counts() - stem - blocks
    for l in spec.aux_positions:
        Head.trace(tape, states[l - 1], spec.classes, spec.bias, pooled)
    total = tape.counts()
    aux = total - stem - blocks - head
    inference = Counts(*(a - b for a, b in zip(total, aux)))

    block_flops = [b["flops"] for b in per_block]
    return {
        "skip": spec.skip, "model": spec.model, "depth": spec.depth, "width": spec.width,
        "growth_rate": spec.k if spec.skip == "dense" else None, "batch": batch,
        "state_width": spec.state_width, "spec": spec.to_dict(),
        "params": {"stem": stem.params, "blocks": blocks.params, "head": head.params, "aux": aux.params,
                   "total": total.params},
        "flops": {"matmul": inference.matmul, "merge": inference.merge,
                  "total": inference.matmul + inference.merge, "aux_matmul": aux.matmul},
        "activation_bytes": total.saved_bytes(batch, DTYPE_BYTES),
        "concat_bytes": DTYPE_BYTES * batch * total.concat,
        "per_block": per_block,
        "block_flops_ratio": [b / a if a else None for a, b in zip(block_flops, block_flops[1:])],
    }
