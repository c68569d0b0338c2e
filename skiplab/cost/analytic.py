"""Analytic cost of a model: parameters, FLOPs, activation memory, concatenation traffic.

Nothing is built: the spec's symbolic forward pass (``skiplab.tape``) is replayed with each
part's own ``trace`` rule, so the answer exists for any depth, including models far
beyond memory. ``tests/test_cost.py`` checks every figure against measurement on built
models (parameters and FLOPs exactly, activation bytes within 5%).
"""

from __future__ import annotations

from typing import Any

from ..spec import ModelSpec
from ..tape import Sym, Tape
from ..errors import UserError

DTYPE_BYTES = 4  # float32


def analytic_cost(spec: ModelSpec, batch: int = 32) -> dict[str, Any]:
    """Costs of ``spec`` for one training step on a batch of ``batch`` samples.

    ``params``: per part; ``flops``: per sample, inference forward (``matmul``, ``merge``,
    ``total``), plus ``aux_matmul`` for auxiliary heads (training only); ``activation_bytes``:
    what autograd keeps for backward for the batch (aux heads included, input excluded);
    ``concat_bytes``: bytes written by concatenation for the batch; ``per_block`` and
    ``block_flops_ratio`` (block l+1 over block l).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch: must be an integer >= 1, got {batch!r}")
    d = spec.describe()  # the same description the builder builds from
    family, strategy, opts = d.family, d.strategy, d.options

    def trace_gate(tape: Tape, z: Sym, out: int) -> Sym:
        return family.trace_gate(tape, z, out, spec)

    tape = Tape()
    stream = strategy.trace_init(tape, family.trace_stem(tape, tape.input(d.in_channels, d.positions), spec), opts)
    stem = tape.counts()
    per_block, readouts = [], {}
    for site in d.sites:
        before = tape.counts()
        z = strategy.trace_read(tape, stream, site, opts)
        f = family.trace_branch(tape, z, site, spec)
        stream = family.trace_place(tape, strategy.trace_write(tape, stream, f, site, opts, trace_gate), site, spec)
        c = tape.counts() - before
        w = site.widths
        per_block.append({"block": site.index, "in_width": w.in_width, "features": w.features,
                          "out_width": w.out_width, "params": c.params, "flops": c.matmul, "merge_flops": c.merge,
                          "activation_bytes": c.saved_bytes(batch, DTYPE_BYTES),
                          "concat_bytes": DTYPE_BYTES * batch * c.concat})
        if site.last_in_block:
            readouts[site.block] = stream
    blocks_end = tape.counts()
    h = strategy.trace_readout(tape, stream, opts)
    family.trace_head(tape, h, spec)
    head_end = tape.counts()
    for block, _ in d.aux:
        family.trace_head(tape, strategy.trace_readout(tape, readouts[block], opts), spec)
    total = tape.counts()
    blocks, head, aux = blocks_end - stem, head_end - blocks_end, total - head_end
    inference = total - aux

    block_flops = [b["flops"] for b in per_block]
    return {
        "skip": spec.skip, "model": spec.model, "depth": spec.depth, "width": spec.width,
        "options": dict(opts), "batch": batch,
        "state_width": spec.state_width, "spec": spec.to_dict(),
        "params": {"stem": stem.params, "blocks": blocks.params, "head": head.params, "aux": aux.params,
                   "total": total.params},
        "flops": {"matmul": inference.matmul, "merge": inference.merge,
                  "total": inference.matmul + inference.merge, "aux_matmul": aux.matmul},
        # per position of the sequence (per token for the transformer; = per sample for the MLP)
        "flops_per_token": (inference.matmul + inference.merge) / d.positions,
        "activation_bytes": total.saved_bytes(batch, DTYPE_BYTES),
        "concat_bytes": DTYPE_BYTES * batch * inference.concat,  # one inference forward, as measured
        "per_block": per_block,
        "block_flops_ratio": [b / a if a else None for a, b in zip(block_flops, block_flops[1:])],
    }
