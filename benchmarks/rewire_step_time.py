"""What rewiring costs per training step: the tiny GPT-2 of ``examples/tiny_gpt2.py`` as
written and rewired to each strategy, one training step each (its own loss, Adam) taken in
turn, round after round, so that every variant meets the same load on a shared machine;
the median step per variant and its ratio to the original's, measured in one run.

    python benchmarks/rewire_step_time.py [--rounds 30] [--skips add,rezero,dwa,hyper,mhc]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import torch

from skiplab.datasets import load_pydoc
from skiplab.rewiring import rewire
from skiplab.rewiring.compare import loss_of
from skiplab.user_model import load_model

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "tiny_gpt2.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--skips", default="add,rezero,dwa,hyper,mhc")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=64)
    args = ap.parse_args()
    data = load_pydoc().windows(args.context)
    x = data.x_train[:args.batch]
    original = load_model(f"{EXAMPLE}:make_model")
    models = {"original": original, **{s: rewire(original, s, x[:2]) for s in args.skips.split(",")}}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.rounds + 1):  # round 0 warms up
        for k, m in models.items():
            m.train()
            start = time.perf_counter()
            loss = loss_of(m, x, data.y_train[:args.batch], True, True)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
            if r:
                times[k].append(time.perf_counter() - start)
    base = statistics.median(times["original"])
    print(f"tiny GPT-2, batch {args.batch} x {args.context}, {torch.get_num_threads()} thread(s), "
          f"median of {args.rounds} steps each, in turn")
    for k, t in times.items():
        print(f"{k:10s} {statistics.median(t) * 1e3:8.1f} ms/step  {statistics.median(t) / base:5.2f}x the original")


if __name__ == "__main__":
    main()
