"""Loop against batched engine: seed-steps per second and achieved GFLOP/s, against an fp32
matmul peak measured in the same run, for the study's MLPs (additive skips: ModelSpec's default; width 64, batch norm,
batch 128, Adam) at depths 2, 8, 24 and 50 and the default CNN-1D, with 3 and 8 seeds.

Each row trains the same seeds with ``skiplab.run.batched.train_seeds``, ``engine="loop"`` (one
seed after another) and ``engine="batched"`` (one vmapped computation), alternately, on
MNIST-1D, for ``--epochs`` of training; a seed-step is one seed's optimiser step. Rates are
the engines' own ``tokens_per_second`` (training time only, evaluations excluded) over the
batch size; each row is the median of ``--repeats`` alternating measurements. FLOPs per seed-step: forward and backward of one training step, counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions). The CNN-1D is
measured batched although the engine leaves CNNs on a CPU to the loop (this is why).

With ``--skips dwa,hyper,mhc`` the MLP rows are of those strategies instead (the study's
costliest per step); ``--no-cnn`` leaves the CNN-1D out; ``--compile`` adds a column, the
batched engine with ``--compile``, its steady rate (training time less the reported
compile time; the compile time is printed beside it, cold: a fresh inductor cache); the
training set is then cut to full batches for every column, so that nothing recompiles.

    python benchmarks/engine_throughput.py [--epochs 2] [--seeds 3,8] [--depths 2,8,24,50] [--threads 1] [--repeats 2]
                                           [--skips add] [--no-cnn] [--compile] [--device cpu|cuda]
                                           [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from skiplab import ModelSpec, build_model
from skiplab.datasets import load_mnist1d
from skiplab.families import get_family
from skiplab.objective import loss_and_logits
from skiplab.run.batched import train_seeds
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.study import StudyPlan


def matmul_peak(n: int = 1024, seconds: float = 1.0, device: str = "cpu") -> float:
    """fp32 GFLOP/s of an n x n matmul on ``device``, repeated for about ``seconds``: 2 n^3
    per product (on CUDA: n = 8192, TF32 off, synchronised before the clock stops)."""
    if device == "cuda":
        n = 8192
        torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if count % 10 == 0:
            sync()
    sync()
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def step_flops(spec: ModelSpec, batch: int) -> int:
    """FLOPs of one training step of one seed (forward and backward, matmuls and convs)."""
    model = build_model(spec, seed=0).train()
    x = torch.randn(batch, *spec.input_shape)
    y = torch.randint(0, spec.classes, (batch,))
    with FlopCounterMode(display=False) as counter:
        loss, _ = loss_and_logits(model, x, y)
        loss.backward()
    return counter.get_total_flops()


def seed_steps_per_second(runs: list[RunSpec], data, compiled: list | None = None) -> float:
    """Seed-steps per second of training (the engines' own clock: evaluations excluded; a
    compiled run's compile time too, appended to ``compiled``)."""
    results = [r for _, r in train_seeds(runs, data)]
    assert all(r.status == "complete" for r in results), [r.message for r in results]
    batch = runs[0].train.batch_size
    seconds = [batch * r.steps / r.tokens_per_second for r in results]  # each seed's share of training time
    if runs[0].train.engine == "loop":  # one after another: the seeds' training times add up
        return sum(r.steps for r in results) / sum(seconds)
    assert results[0].trained_by.startswith("batched"), results[0].trained_by
    train = sum(seconds)  # the group's training time (each seed is charged an equal share)
    if compiled is not None:
        compiled.append(results[0].compile_seconds or 0.0)
        train -= compiled[-1]
    return sum(r.steps for r in results) / train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=float, default=2.0, help="training per measurement (default: %(default)s)")
    p.add_argument("--seeds", default="3,8")
    p.add_argument("--repeats", type=int, default=2, help="alternate measurements per row; medians (default: %(default)s)")
    p.add_argument("--depths", default="2,8,24,50")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as each of the study's workers has (default: 1)")
    p.add_argument("--skips", default="", help="the MLP rows' strategies, comma-separated (default: additive)")
    p.add_argument("--no-cnn", action="store_true", help="leave the CNN-1D row out")
    p.add_argument("--compile", action="store_true", help="also measure the batched engine with --compile")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both engines train (default: cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="every column's precision; bf16 (autocast) on CUDA only (default: %(default)s)")
    args = p.parse_args()
    try:  # a configuration TrainConfig refuses (bf16 on a CPU, say): one line, exit 2, before anything runs
        TrainConfig(device=args.device, precision=args.precision)
        counts = [[int(v) if v.strip().isdigit() else 0 for v in a.split(",")] for a in (args.seeds, args.depths)]
        if min(map(min, counts)) < 1:
            raise ValueError(f"--seeds {args.seeds} --depths {args.depths}: each takes integers >= 1, "
                             f"comma-separated")
        seed_counts, depths = counts
    except ValueError as e:
        p.exit(2, f"engine_throughput: {e}\n")
    if args.compile:  # a cold compile: inductor's cache in a fresh folder (read when it first compiles)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="skiplab-inductor-"))
    torch.set_num_threads(args.threads)
    data = load_mnist1d()
    if args.compile:  # every batch full: a smaller last batch would recompile, uncounted (as compile_cpu.py does)
        n = len(data.y_train) // 128 * 128
        data = dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
    # ModelSpec's default strategy (additive, ResNet's), named nowhere here but in skiplab/skips
    mlp = StudyPlan().model.replace(input_shape=data.input_shape, classes=data.classes)
    skips = args.skips.split(",") if args.skips else [mlp.skip]
    models = [(f"mlp {skip} depth {d}", mlp.replace(depth=d, skip=skip))
              for skip in skips for d in depths]
    if not args.no_cnn:
        models.append(("cnn1d (default)", ModelSpec(model="cnn1d", input_shape=data.input_shape,
                                                    classes=data.classes)))
    for _, spec in models:  # measure batched for every family, those the engine leaves to the loop on a CPU too
        get_family(spec.model).batches_on_cpu = True
    load_before = os.getloadavg()
    peak = matmul_peak(device=args.device)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    if args.device == "cuda":
        cpu = f"{torch.cuda.get_device_name()} (host: {cpu})"
    print(f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, {args.precision}; "
          f"fp32 matmul peak {peak:.0f} GFLOP/s; load average before {load_before[0]:.2f}")
    print(f"{'model':<20} {'seeds':>5} {'loop s-steps/s':>14} {'batched':>8} {'ratio':>6} "
          f"{'loop GFLOP/s':>12} {'batched':>8} {'% peak':>6}"
          + (f" {'compiled':>8} {'ratio':>6} {'compile s':>9}" if args.compile else ""))
    # Warm-up, untimed: the device's context and libraries (cuBLAS, cuDNN) start on first use
    for engine in ("loop", "batched"):
        warm = TrainConfig(epochs=0.1, evals=1, batch_size=128, device=args.device, engine=engine,
                           precision=args.precision)
        train_seeds([RunSpec(models[0][1], warm, seed=s) for s in range(2)], data)
    for name, spec in models:
        flops = step_flops(spec, 128)
        for seeds in seed_counts:
            cfg = TrainConfig(epochs=args.epochs, evals=1, batch_size=128, device=args.device,
                              precision=args.precision)
            runs = [RunSpec(spec, cfg, seed=s) for s in range(seeds)]
            loop_runs = [RunSpec(spec, dataclasses.replace(cfg, engine="loop"), seed=s)
                         for s in range(seeds)]
            compiled_runs = [dataclasses.replace(r, train=dataclasses.replace(cfg, compile=True)) for r in runs]
            loops, batcheds, compileds, compile_seconds = [], [], [], []
            for _ in range(args.repeats):  # alternately, so that the machine's load falls on both
                loops.append(seed_steps_per_second(loop_runs, data))
                batcheds.append(seed_steps_per_second(runs, data))
                if args.compile:
                    compileds.append(seed_steps_per_second(compiled_runs, data, compile_seconds))
            loop, batched = statistics.median(loops), statistics.median(batcheds)
            extra = ""
            if args.compile:
                compiled = statistics.median(compileds)
                extra = f" {compiled:>8.0f} {compiled / loop:>6.2f} {compile_seconds[0]:>9.1f}"
            print(f"{name:<20} {seeds:>5} {loop:>14.0f} {batched:>8.0f} {batched / loop:>6.2f} "
                  f"{loop * flops / 1e9:>12.1f} {batched * flops / 1e9:>8.1f} {100 * batched * flops / 1e9 / peak:>5.0f}%"
                  + extra, flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}; FLOPs per seed-step: forward + backward, "
          f"FlopCounterMode; peak: {1024}x{1024} fp32 matmul")


if __name__ == "__main__":
    main()
