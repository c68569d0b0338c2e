"""Dense at linear memory: the naive and the memory-efficient concatenation side by side.

For a dense MLP (width 128, growth 32, batch 256) and a dense CNN-1D (width 32, growth 16,
MNIST-1D's 40 positions, batch 64), batch norm and ReLU, at depths 8, 16, 32 and 64, with
``memory="naive"`` and ``memory="efficient"``:

* **saved**: bytes autograd keeps for backward in one training forward, measured with
  ``saved_tensors_hooks`` (``skiplab.cost.measure.saved_activation_bytes``);
* **bound**: the store-each-feature-once lower bound, derived from the naive model alone:
  its saved bytes less the concatenated inputs of sublayers 2..L (sublayer 1's input is
  the stem's output, a feature itself). What is left is every feature once plus what each
  branch keeps of its own k channels (the norm's input and statistics) and the head's input;
* **peak**: the rise of the process's peak resident memory (VmHWM) over its resident memory
  before training, for a fresh process per configuration (and, on CUDA,
  ``torch.cuda.max_memory_allocated`` above what the weights and optimiser state hold);
* **step**: median wall time of a training step (forward, backward, Adam) after warm-up,
  the faster of ``--repeats`` fresh processes run alternately with the other path's.

Targets (issue 14): efficient saved <= 1.2x the bound; efficient step time <= 1.25x naive
at depth 32. Run: ``python benchmarks/dense_memory.py [--steps N] [--depths 8,16,32,64]
[--device cpu|cuda]``; each configuration runs in its own process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CONFIGS = {  # family -> (spec fields, batch)
    "mlp": ({"model": "mlp", "width": 128, "options": {"growth": 32}}, 256),
    "cnn1d": ({"model": "cnn1d", "width": 32, "options": {"growth": 16}}, 64),
}


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def run_one(family: str, depth: int, memory: str, steps: int, device: str, threads: int | None = None) -> dict:
    """One configuration, in this process (the parent starts a fresh one for each)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from skiplab import ModelSpec, build_model
    from skiplab.cost import model_cost
    from skiplab.cost.measure import saved_activation_bytes
    from skiplab.objective import loss_and_logits

    fields, batch = CONFIGS[family]
    opts = {**fields["options"], "memory": memory}
    spec = ModelSpec(skip="dense", depth=depth, norm="batch", activation="relu",
                     **{**fields, "options": opts})
    model = build_model(spec, seed=0).to(device).train()
    g = torch.Generator().manual_seed(0)
    x, y = (t.to(device) for t in spec.family.random_batch(spec, batch, g))
    saved = saved_activation_bytes(model, x)
    naive = model_cost(spec.replace(options=fields["options"]), batch)
    # The lower bound, from the naive model's own saves: drop sublayers 2..L's concatenated inputs.
    positions = spec.family.positions(spec.input_shape)
    concat_inputs = sum(b["in_width"] for b in naive["per_block"][1:]) * positions * batch * 4
    bound = naive["activation_bytes"] - concat_inputs
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_and_logits(model, x, y)[0].backward()
        opt.step()

    step()  # Adam's state now exists: what is left to rise is activations and gradients
    opt.zero_grad(set_to_none=True)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base_cuda = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    base = _rss("VmRSS")
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out = {"family": family, "depth": depth, "memory": memory, "batch": batch, "saved": saved, "bound": bound,
           "naive_analytic": naive["activation_bytes"], "peak": max(0, _rss("VmHWM") - base),
           "step": statistics.median(times[1:])}
    if cuda:
        out["cuda_peak"] = torch.cuda.max_memory_allocated() - base_cuda
    return out


def _machine(device: str, threads: int | None = None) -> str:
    import torch
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {threads or torch.get_num_threads()} threads"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed training steps per configuration (default 5)")
    p.add_argument("--depths", default="8,16,32,64")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each pair; the faster kept (default 2)")
    p.add_argument("--families", default="mlp,cnn1d")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: torch's); 1 is steadier on a busy machine, where "
                        "OpenMP threads that wait for a descheduled sibling make a step many times slower")
    p.add_argument("--one", help=argparse.SUPPRESS)  # family,depth,memory: run in this process, print JSON
    args = p.parse_args()
    if args.one:
        family, depth, memory = args.one.split(",")
        print(json.dumps(run_one(family, int(depth), memory, args.steps, args.device, args.threads)))
        return
    print(f"dense_memory benchmark on {_machine(args.device, args.threads)}; load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    for family in args.families.split(","):
        for depth in (int(d) for d in args.depths.split(",")):
            pair = {}
            # naive, efficient, naive, efficient, ...: each in a fresh process, alternating so
            # that a busy minute on a shared machine hits both; the faster of each is kept.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # big blocks go back to the OS when freed,
            # so the resident peak follows the live tensors (glibc otherwise keeps freed memory)
            for _ in range(args.repeats):
                for memory in ("naive", "efficient"):
                    cmd = [sys.executable, __file__, "--one", f"{family},{depth},{memory}", "--steps",
                           str(args.steps), "--device", args.device, *(["--threads", str(args.threads)] if args.threads else [])]
                    got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
                    if memory not in pair or got["step"] < pair[memory]["step"]:
                        pair[memory] = got
            rows.append(pair)
            n, e = pair["naive"], pair["efficient"]
            print(f"{family} depth {depth}: saved {n['saved'] / 2**20:.1f} -> {e['saved'] / 2**20:.1f} MiB "
                  f"(bound {e['bound'] / 2**20:.1f}), step {n['step'] * 1e3:.0f} -> {e['step'] * 1e3:.0f} ms",
                  flush=True)
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    cuda = "cuda_peak" in rows[0]["naive"]
    head = ["family", "depth", "batch", "saved naive MiB", "saved efficient MiB", "bound MiB", "efficient / bound",
            "naive / efficient", "peak naive MiB", "peak efficient MiB", *(["CUDA peak naive MiB", "CUDA peak efficient MiB"] if cuda else []),
            "step naive ms", "step efficient ms", "time efficient / naive"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for pair in rows:
        n, e = pair["naive"], pair["efficient"]
        cells = [n["family"], n["depth"], n["batch"], mib(n["saved"]), mib(e["saved"]), mib(e["bound"]),
                 f"{e['saved'] / e['bound']:.3f}", f"{n['saved'] / e['saved']:.2f}", mib(n["peak"]), mib(e["peak"]),
                 *([mib(n["cuda_peak"]), mib(e["cuda_peak"])] if cuda else []),
                 f"{n['step'] * 1e3:.1f}", f"{e['step'] * 1e3:.1f}", f"{e['step'] / n['step']:.2f}"]
        assert n["saved"] == n["naive_analytic"], "the naive model's measured saves differ from the cost model's"
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    at32 = [p for p in rows if p["naive"]["depth"] == 32]
    for p in at32:
        n, e = p["naive"], p["efficient"]
        print(f"target at depth 32, {n['family']}: efficient/bound {e['saved'] / e['bound']:.3f} (<= 1.2), "
              f"time efficient/naive {e['step'] / n['step']:.2f} (<= 1.25)")


if __name__ == "__main__":
    main()
