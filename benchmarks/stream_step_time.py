"""Time per training step of each strategy, relative to add, measured side by side in one
run: the study's MLP (width 64, batch norm, batch 128, Adam) at depths 2, 8, 24 and 50, one
torch thread (as each of the study's workers uses). Small models are bound by per-operation
overhead, so a strategy's cost here is roughly the number of tensor operations its merge
does per sublayer: DenseFormer's weighted average grows with depth, hyper-connections and
mHC do tens per sublayer (mHC's Sinkhorn-Knopp 4 per iteration, 20 iterations).

    python benchmarks/stream_step_time.py [--depths 24,50] [--skips add,dwa,mhc]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from skiplab import ModelSpec, build_model
from skiplab.study import StudyPlan


def step_seconds(spec: ModelSpec, repeats: int) -> float:
    model = build_model(spec, seed=0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, *spec.input_shape, generator=g), torch.randint(0, 10, (128,), generator=g)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="2,8,24,50")
    p.add_argument("--skips", default="plain,add,rezero,highway,dense,concat-prev,concat-half,dwa,hyper,mhc")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print(f"{'skip':12s} {'depth':>5s} {'ms/step':>8s} {'x add':>6s}")
    for depth in map(int, args.depths.split(",")):
        base = None
        for skip in ["add"] + [s for s in args.skips.split(",") if s != "add"]:
            spec = ModelSpec(model="mlp", depth=depth, width=64, norm="batch", skip=skip, input_shape=(1, 40),
                             options=StudyPlan().options.get(skip, {}))
            t = step_seconds(spec, max(3, 120 // depth))
            base = base or t
            print(f"{skip:12s} {depth:5d} {1e3 * t:8.1f} {t / base:6.2f}")


if __name__ == "__main__":
    main()
