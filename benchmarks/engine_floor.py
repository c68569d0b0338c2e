"""How close is the batched engine to what eager PyTorch can do on this machine?

One training step of the study's MLP (additive skips, width 64, batch norm, batch 128,
Adam) for S seeds, three ways, alternately in one process, one torch thread:

* **loop**: S steps of the loop engine's model, one seed at a time (``loss_and_logits``,
  backward, fused Adam over the seed's own tensors), as ``skiplab.run.loop`` runs them (before
  issue 26 the loop ran PyTorch's default, per-tensor Adam on the CPU: 40% of its step);
* **engine**: one step of the batched engine's computation (the model under vmap with the
  seed-batched kernels, bound by ``Binder``; fused Adam over the stacked tensors), as
  ``skiplab.run.batched`` runs it;
* **by hand**: the same arithmetic written directly on plain (S, B, C) tensors with no vmap
  and no modules: per layer a ``baddbmm``, batch norm over S x C channels, ReLU and the
  residual add; the head; cross-entropy; fused Adam. A floor for eager PyTorch: whatever
  the engine spends above it is overhead it could still remove, and what the loop spends
  above the floor times S is what batching can win at best.

Prints the median milliseconds per S seed-steps of each and the ratios, and each one's
split into forward (to the loss), backward and optimiser step (the loop's summed over
its S steps).

    python benchmarks/engine_floor.py [--depth 50] [--seeds 8] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import stack_module_state, vmap

from skiplab import build_model
from skiplab.datasets import load_mnist1d
from skiplab.objective import loss_and_logits
from skiplab.run.seed_batched import Binder, install
from skiplab.study import StudyPlan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--repeats", type=int, default=15, help="alternate measurements; medians (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_mnist1d()
    S, B = args.seeds, 128
    spec = StudyPlan().model.replace(input_shape=data.input_shape, classes=data.classes, depth=args.depth)
    x = torch.randn(S, B, *data.input_shape)
    y = torch.randint(0, data.classes, (S, B))

    # loop: one model, S steps
    model = build_model(spec, seed=0).train()
    opt1 = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # the loop engine's (skiplab.run.optim)

    parts: dict[str, list[list[float]]] = {"loop": [], "engine": [], "by hand": []}  # [forward, backward, step]

    def timed(way: str, forward, opt) -> None:
        """One step: forward() gives the loss; the times of its three parts go to parts[way]."""
        t0 = time.perf_counter()
        loss = forward()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        parts[way][-1] = [a + b for a, b in zip(parts[way][-1], (t1 - t0, t2 - t1, time.perf_counter() - t2))]

    def loop() -> None:
        parts["loop"].append([0.0, 0.0, 0.0])
        for s in range(S):
            opt1.zero_grad(set_to_none=True)
            timed("loop", lambda: loss_and_logits(model, x[s], y[s])[0], opt1)

    # engine: the batched engine's computation
    models = [build_model(spec, seed=s).train() for s in range(S)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    install(base)
    bind = Binder(base, models[0])

    class Bound:
        spec = base.spec

        def __init__(self, p, b):
            self.p, self.b = p, b

        def __call__(self, xs, return_aux=False):
            bind(self.p, self.b)
            return base(xs, return_aux=return_aux)
    batched = vmap(lambda p_, b_, xs, ys: loss_and_logits(Bound(p_, b_), xs, ys))
    opt2 = torch.optim.Adam(params.values(), lr=1e-3, fused=True)

    def engine() -> None:
        parts["engine"].append([0.0, 0.0, 0.0])
        opt2.zero_grad(set_to_none=True)
        timed("engine", lambda: batched(params, buffers, x, y)[0].sum(), opt2)

    # by hand: the same layers on plain (S, B, C) tensors
    W, L, K = spec.width, spec.depth, data.classes
    inp = x.reshape(S, B, -1)
    g = torch.Generator().manual_seed(0)

    def leaf(*shape, scale=0.1):
        return (torch.randn(*shape, generator=g) * scale).requires_grad_()
    stem = (leaf(S, W, inp.shape[-1]), leaf(S, 1, W))
    layers = [(leaf(S, W, W), leaf(S, 1, W), torch.ones(S * W, requires_grad=True),
               torch.zeros(S * W, requires_grad=True)) for _ in range(L)]
    stats = [(torch.zeros(S * W), torch.ones(S * W)) for _ in range(L)]
    head = (leaf(S, K, W), leaf(S, 1, K))
    leaves = [*stem, *[t for layer in layers for t in layer], *head]
    opt3 = torch.optim.Adam(leaves, lr=1e-3, fused=True)

    def hand_loss() -> torch.Tensor:
        h = torch.baddbmm(stem[1], inp, stem[0].transpose(1, 2))
        for (w, b, gamma, beta), (mean, var) in zip(layers, stats):
            z = torch.baddbmm(b, h, w.transpose(1, 2))
            z = F.batch_norm(z.transpose(0, 1).reshape(B, S * W), mean, var, gamma, beta, True, 0.1, 1e-5)
            h = h + torch.relu(z.view(B, S, W).transpose(0, 1))
        logits = torch.baddbmm(head[1], h, head[0].transpose(1, 2))
        return F.cross_entropy(logits.reshape(S * B, K), y.reshape(-1), reduction="sum").div(B)

    def by_hand() -> None:
        parts["by hand"].append([0.0, 0.0, 0.0])
        opt3.zero_grad(set_to_none=True)
        timed("by hand", hand_loss, opt3)

    ways = {"loop": loop, "engine": engine, "by hand": by_hand}
    times: dict[str, list[float]] = {k: [] for k in ways}
    load = os.getloadavg()[0]
    for r in range(args.repeats + 1):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - start)
            else:
                parts[name].clear()
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(f"study MLP depth {args.depth}, {S} seeds, batch {B}, one thread; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; median ms per {S} seed-steps:")
    for k, v in ms.items():
        split = [1e3 * statistics.median(p[i] for p in parts[k]) for i in range(3)]
        print(f"  {k:<8} {v:7.1f} ms   loop / this {ms['loop'] / v:5.2f}   forward {split[0]:6.1f}  "
              f"backward {split[1]:6.1f}  optimiser {split[2]:6.1f}")
    print(f"engine / by hand {ms['engine'] / ms['by hand']:.2f}")


if __name__ == "__main__":
    main()
