"""The batched engine's fast paths, one layer at a time: microseconds per call of a linear
layer and a batch norm under the engine's vmap over S seeds, with the fast path
(``skiplab.run.seed_batched.install``), with vmap's own batching rule (nothing installed), and
S calls of one seed's plain module (what the loop engine does), alternately in one
process, one torch thread, the study's sizes (width 64, batch 128), forward only. Each
call is timed inside one vmap over ``--calls`` calls, so vmap's own entry and exit are
spread thin.

    python benchmarks/seed_kernels.py [--seeds 3] [--calls 50] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from torch import nn
from torch.func import stack_module_state, vmap

from skiplab.run.seed_batched import Binder, install


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--calls", type=int, default=50, help="calls per vmap (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=15, help="alternate measurements; medians (default: %(default)s)")
    args = p.parse_args()
    if min(args.seeds, args.calls, args.repeats) < 1:
        p.exit(2, "seed_kernels: --seeds, --calls and --repeats take integers >= 1\n")
    torch.set_num_threads(1)
    S, B, C, N = args.seeds, 128, 64, args.calls
    x = torch.randn(S, B, C, requires_grad=True)
    print(f"S = {S} seeds, batch {B}, width {C}, one thread; load average {os.getloadavg()[0]:.2f} before; "
          f"median us per call (all seeds):")
    for name, make in (("linear", lambda: nn.Linear(C, C)), ("batch norm", lambda: nn.BatchNorm1d(C))):
        mods = [make().train() for _ in range(S)]
        params, buffers = stack_module_state(mods)
        ways = {}
        for way in ("fast path", "vmap's rule"):
            base = copy.deepcopy(mods[0]).to("meta")
            if way == "fast path":
                install(base)
            bind = Binder(base, mods[0])

            def calls(p_, b_, x_, base=base, bind=bind):
                bind(p_, b_)
                for _ in range(N):
                    y = base(x_)
                return y
            ways[way] = (lambda f: lambda: f(params, buffers, x))(vmap(calls))

        def alone() -> None:  # the loop: each seed's own module
            for _ in range(N):
                for s in range(S):
                    mods[s](x[s])
        ways[f"{S} x one seed"] = alone
        times: dict[str, list[float]] = {k: [] for k in ways}
        for r in range(args.repeats + 1):
            for way, fn in ways.items():
                start = time.perf_counter()
                fn()
                if r:  # the first round warms up
                    times[way].append((time.perf_counter() - start) / N * 1e6)
        print(f"  {name:<11}" + "".join(f"  {way} {statistics.median(t):6.1f}" for way, t in times.items()))
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
