"""Answer 2's claim: concatenation can emulate addition.

An ``add`` network's state is a running sum, ``s_l = s_0 + f_1 + ... + f_l``. A ``dense``
network of growth ``k = w`` keeps the parts of that sum side by side,
``concat(s_0, f_1, ..., f_l)``, so any layer ``W`` applied to the sum equals the layer
``[W, W, ..., W]`` applied to the concatenation. Copying each of the add network's layers
into a dense network with its weight repeated along the input channels therefore gives
a network that computes the same function, at the cost of a weight matrix that grows by
``w x w`` per block (quadratic parameters, exactly dense's cost).

The reverse fails at equal width: a dense layer may weigh ``s_0`` and ``f_1`` differently
(``[A, B]``, A != B), and no layer of the sum ``s_0 + f_1`` can do that. The experiment
shows it numerically: the best least-squares ``W`` with ``W (s_0 + f_1) ~ A s_0 + B f_1``
on real activations leaves a large relative error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..model import SkipNet, build_model
from ..spec import ModelSpec
from ..train import RunSpec, TrainConfig, train_model

CLAIM = "concatenation can emulate addition (seed answer 2); the reverse does not hold at equal width"


def dense_from_add(add: SkipNet) -> SkipNet:
    """A dense network (growth = width) computing exactly what ``add`` computes."""
    spec = add.spec
    if spec.skip != "add":
        raise ValueError(f"skip: equivalence starts from an 'add' network, got {spec.skip!r}")
    dense = build_model(spec.replace(skip="dense", growth=None), seed=0)
    with torch.no_grad():
        dense.stem.load_state_dict(add.stem.state_dict())
        for l, (a, d) in enumerate(zip(add.blocks, dense.blocks), start=1):
            src = a.branch.state_dict()
            # The block sees concat(s_0, f_1, ..., f_{l-1}): l chunks of w channels, each
            # weighed by the same W, so that W' z = W (s_0 + f_1 + ... + f_{l-1}).
            src["layer.weight"] = a.branch.layer.weight.repeat(1, l, *([1] * (a.branch.layer.weight.dim() - 2)))
            d.branch.load_state_dict(src)
        head = add.head.state_dict()
        head["fc.weight"] = add.head.fc.weight.repeat(1, spec.depth + 1)
        dense.head.load_state_dict(head)
        for name, aux in add.aux_heads.items():
            state = aux.state_dict()
            state["fc.weight"] = aux.fc.weight.repeat(1, int(name) + 1)
            dense.aux_heads[name].load_state_dict(state)
    return dense


def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    a.eval(), b.eval()
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def reverse_gap(dense: SkipNet, x: torch.Tensor) -> float:
    """Relative error of the best add-style layer for dense's block 2 (which sees
    concat(s_0, f_1) through [A, B]): min_W ||W (s_0 + f_1) - (A s_0 + B f_1)|| / ||A s_0 + B f_1||."""
    if dense.spec.depth < 2 or dense.spec.model != "mlp":
        raise ValueError("depth: the reverse check needs an MLP of depth >= 2")
    dense.eval()
    with torch.no_grad():
        s0 = dense.stem(x.flatten(1))
        f1 = dense.blocks[0].branch(s0)
        w = s0.shape[1]
        W2 = dense.blocks[1].branch.layer.weight  # (k, 2w) = [A, B]
        target = s0 @ W2[:, :w].T + f1 @ W2[:, w:].T  # (N, k)
        summed = s0 + f1  # (N, w): all an add layer can see
        sol = torch.linalg.lstsq(summed.double(), target.double()).solution
        resid = summed.double() @ sol - target.double()
        return float(resid.norm() / target.double().norm())


def run(ctx) -> dict[str, Any]:
    data, quick, progress = ctx.data, ctx.quick, ctx.say
    configs = [(2, 16), (6, 32)] if quick else [(2, 16), (6, 32), (12, 64), (24, 64)]
    epochs = 2 if quick else 10
    rows = []
    for depth, width in configs:
        spec = ModelSpec(model="mlp", depth=depth, width=width, skip="add", norm="batch",
                         input_shape=data.input_shape, classes=data.classes)
        if progress:
            progress(f"equivalence: training add, depth {depth}, width {width}")
        # Train the add network briefly, so the weights are not a special (random) case.
        add, result = train_model(RunSpec(spec, TrainConfig(epochs=epochs, evals=1), seed=0), data)
        dense = dense_from_add(add)
        diff = max_abs_diff(add, dense, data.x_test)
        add_p = sum(p.numel() for p in add.parameters())
        dense_p = sum(p.numel() for p in dense.parameters())
        # The reverse: a dense network trained on its own (so its block-2 layer weighs s_0
        # and f_1 differently) against the best layer of their sum.
        own, _ = train_model(RunSpec(spec.replace(skip="dense"), TrainConfig(epochs=epochs, evals=1), seed=0), data)
        rows.append({"depth": depth, "width": width, "add_test_accuracy": result.test_accuracy,
                     "max_abs_diff": diff, "add_params": add_p, "dense_params": dense_p,
                     "param_ratio": dense_p / add_p, "reverse_relative_error": reverse_gap(own, data.x_test),
                     "reverse_check_of_emulation": reverse_gap(dense, data.x_test)})
    worst = max(r["max_abs_diff"] for r in rows)
    big = rows[-1]
    outcome = (f"A dense network with every add layer's weight repeated computes the same function as the trained "
               f"add network: max |output difference| {worst:.1e} over {len(rows)} networks (depth "
               f"{rows[0]['depth']}..{big['depth']}); the emulation costs {big['param_ratio']:.1f}x the parameters "
               f"at depth {big['depth']} ({big['dense_params']:,} vs {big['add_params']:,}). The reverse fails: the "
               f"best add-style layer misses a dense layer's output by {100 * min(r['reverse_relative_error'] for r in rows):.0f}"
               f"-{100 * max(r['reverse_relative_error'] for r in rows):.0f}% (relative error).")
    return {"claim": CLAIM, "outcome": outcome, "max_abs_diff": worst, "rows": rows}
