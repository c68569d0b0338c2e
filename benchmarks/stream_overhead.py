"""What the stream strategies cost per training step of the transformer study's model,
relative to add, side by side in one run (issue 27, item 1).

The model is the transformer study's (``skiplab.study.transformer_plan``): width 64, 4 heads,
context 64, pre-norm, layer norm, the pydoc text's 103 symbols, batch 32 windows; one step is
forward, backward and Adam as the loop engine takes them (fused Adam over one flat tensor of
the parameters, :class:`Stepper`). ``--compile`` adds each skiplab row again with its loss
function under ``torch.compile`` (what ``--compile`` trains), its ratio given both to eager
add and to compiled add. Rows: skiplab's add, dwa, hyper (dynamic and static), mhc and
mhc-lite, and, when lucidrains' ``hyper-connections`` package (PyPI) is importable, its
hyper-connections (``HyperConnections``) and its manifold-constrained variant (``mHC``)
wrapped around the same branches (skiplab's pre-norm attention and MLP sublayers), the same
stem and head, 4 streams, with each layer's index for its init (the package's own way:
``get_init_and_expand_reduce_stream_functions``). The package is read for nothing else.
One reference row, ``copies floor`` (:class:`CopiesFloor`), carries 4 copies with no mixing
at all: what keeping n copies costs by itself, a floor under every multi-stream row. One
more, ``mhc one iteration``, timed only when ``--rows`` names it, is mhc with one
Sinkhorn-Knopp iteration instead of the paper's 20: beside mhc, what the other 19 cost.

Every model is built once; each repeat times ``--steps`` steps of every model in turn
(interleaved, so that a change in the machine's load lands on all rows alike), after
warm-up steps; the table shows the median over repeats of ms per step and its ratio to
add's median at the same depth, and the range of the per-repeat ratios (each repeat's time
over add's in the same repeat and mode): how far one measurement moves here; and the
ratio of FLOPs (``skiplab.profile``: matrix products and merges, forward and backward), the
part of a row's cost that is arithmetic. On a shared machine the ratios move by several
percent between runs, and more under ``--compile``: compare rows of one run, not runs.

    python benchmarks/stream_overhead.py [--threads 1,2] [--depths 6,12] [--repeats 7] [--json]
    PYTHONPATH=/path/to/hyper-connections python benchmarks/stream_overhead.py   # with the peer rows
    python benchmarks/stream_overhead.py --compile --threads 1 --depths 6,12   # eager and compiled rows
    python benchmarks/stream_overhead.py --compile --rows "mhc,mhc one iteration" --depths 6   # Sinkhorn's share
    python benchmarks/stream_overhead.py --profile mhc --depths 6   # where one row's time goes
    python benchmarks/stream_overhead.py --quick   # tiny shapes: checks that it runs (tests)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from skiplab import STRATEGIES, ModelSpec, build_model
from skiplab.profiling import UncountedOpsWarning, profile
from skiplab.run.optim import FlatParameters, make_optimizer

VOCAB = 103  # the pydoc text's symbols (skiplab.datasets.text.load_pydoc().vocab on Python 3.12)
STREAMS = 4  # every multi-stream row: the papers' common n


@dataclass(frozen=True)
class Shape:
    width: int = 64
    heads: int = 4
    context: int = 64
    batch: int = 32


QUICK = Shape(width=16, heads=2, context=8, batch=2)

# (row label, skip, options): skiplab's rows; a skip the registry lacks is left out
SKIPLAB_ROWS = [("add", "add", {}), ("dwa", "dwa", {}), ("hyper", "hyper", {}),
                ("hyper static", "hyper", {"static": True}), ("mhc", "mhc", {}), ("mhc-lite", "mhc-lite", {})]
# timed only when named in --rows: mhc less 19 of its 20 Sinkhorn-Knopp iterations, not a
# form any paper trains; beside mhc it says what the iterations cost (the rest is the maps,
# the read and the write, which mhc-lite has too)
NAMED_ROWS = [("mhc one iteration", "mhc", {"iterations": 1})]
PEER_ROWS = ["hc (package)", "mhc (package)"]
FLOOR_ROW = "copies floor"  # a reference, not a strategy: CopiesFloor


def spec_for(skip: str, options: dict, depth: int, shape: Shape) -> ModelSpec:
    return ModelSpec(model="transformer", skip=skip, depth=depth, width=shape.width, heads=shape.heads,
                     context=shape.context, vocab=VOCAB, classes=VOCAB, options=options)


def peer_package():
    """lucidrains' ``hyper_connections`` module, or None when it is not importable."""
    try:
        import hyper_connections
    except ImportError:
        return None
    return hyper_connections


class PeerModel(nn.Module):
    """skiplab's add model (same stem, branches and head) with each branch wrapped by the
    package's connection instead: ``expand -> hc(branch) per sublayer -> reduce -> head``."""

    def __init__(self, add_model: nn.Module, make: Callable, expand: nn.Module, reduce: nn.Module, width: int):
        super().__init__()
        self.stem, self.head, self.expand, self.reduce = add_model.stem, add_model.head, expand, reduce
        self.blocks = nn.ModuleList(make(dim=width, branch=block.branch, layer_index=i)
                                    for i, block in enumerate(add_model.blocks))

    def forward(self, x):
        h = self.expand(self.stem(x))  # (B n, T, C): the package folds the streams into the batch
        for block in self.blocks:
            h = block(h)
        return self.head(self.reduce(h))  # the streams summed, then skiplab's final norm and head


class CopiesFloor(nn.Module):
    """A reference row, not a strategy: the least work any design that keeps ``STREAMS``
    copies of the stream in memory does. Layer k reads copy ``k mod n`` as it is (a view:
    no mixing, no weights) and writes ``H + f`` to every copy; the head sees the copies'
    mean. Its ratio to add is what carrying n copies costs by itself (the copies' memory
    passes and their backward); a stream strategy's ratio above it is what its mixing and
    its weights cost. Built from skiplab's add model (same stem, branches and head)."""

    def __init__(self, add_model: nn.Module, streams: int = STREAMS):
        super().__init__()
        self.stem, self.head, self.streams = add_model.stem, add_model.head, streams
        self.branches = nn.ModuleList(block.branch for block in add_model.blocks)

    def forward(self, x):
        x0 = self.stem(x)
        H = x0.unsqueeze(0).expand(self.streams, *x0.shape)  # (n, B, T, C), as skiplab's copies
        for k, branch in enumerate(self.branches):
            H = H + branch(H[k % self.streams])  # f added to every copy
        return self.head(H.mean(0))


def peer_model(package, label: str, depth: int, shape: Shape, seed: int) -> nn.Module:
    add = build_model(spec_for("add", {}, depth, shape), seed=seed)
    factory = (package.get_init_and_expand_reduce_stream_functions if label.startswith("hc")
               else package.mc_get_init_and_expand_reduce_stream_functions)
    make, expand, reduce = factory(STREAMS)
    return PeerModel(add, make, expand, reduce, shape.width)


class Stepper:
    """One model, its optimiser and a fixed batch: ``step()`` is one training step as the
    loop engine takes it (``skiplab.run.loop``): Adam from ``make_optimizer`` (fused) over
    the parameters as one flat tensor (``FlatParameters``), the gradients zeroed in place.
    torch's default Adam on a CPU steps each parameter with a dozen small operations, which
    charged the stream strategies' many small parameters (hyper: 6 per sublayer) several
    milliseconds a step that training does not spend. ``compiled``: the loss function under
    ``torch.compile``, as ``--compile`` trains (``skiplab.run.step.StepFunction``)."""

    def __init__(self, model: nn.Module, shape: Shape, seed: int = 0, compiled: bool = False):
        self.model = model.train()
        self.flat = FlatParameters(list(model.parameters()))
        self.opt = make_optimizer("adam", self.flat.tensors, lr=3e-3)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, VOCAB, (shape.batch, shape.context), generator=g)
        self.y = torch.randint(0, VOCAB, (shape.batch, shape.context), generator=g)
        self.loss = torch.compile(self._loss) if compiled else self._loss

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))

    def step(self) -> torch.Tensor:
        loss = self.loss(self.x, self.y)
        self.flat.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()


COMPILED = " compiled"  # the suffix of a compiled row's label


def rows_for(depth: int, shape: Shape, package, only: set[str] | None = None,
             compiled: bool = False) -> list[tuple[str, Stepper]]:
    """The rows to time, add first; ``only``: these labels (and add) alone; ``compiled``:
    each skiplab row also compiled (label + " compiled"), after the eager rows."""
    rows, specs = [], []
    named = [row for row in NAMED_ROWS if only is not None and row[0] in only]
    for label, skip, options in SKIPLAB_ROWS + named:
        if skip in STRATEGIES and (only is None or label in only or label == "add"):
            specs.append((label, spec_for(skip, options, depth, shape)))
            rows.append((label, Stepper(build_model(specs[-1][1], seed=0), shape)))
    if only is None or FLOOR_ROW in only:
        rows.append((FLOOR_ROW, Stepper(CopiesFloor(build_model(spec_for("add", {}, depth, shape), seed=0)), shape)))
    if package is not None:
        rows += [(label, Stepper(peer_model(package, label, depth, shape, seed=0), shape)) for label in PEER_ROWS
                 if only is None or label in only]
    if compiled:
        rows += [(label + COMPILED, Stepper(build_model(spec, seed=0), shape, compiled=True)) for label, spec in specs]
    return rows


def arithmetic(stepper: Stepper) -> int:
    """FLOPs of one training step's forward and backward as ``skiplab.profile`` counts them
    (matrix products and merges; element-wise work such as norms, gates and Sinkhorn-Knopp's
    iterations counts 0): what a row would cost if time followed arithmetic alone."""
    with warnings.catch_warnings():  # an op with no FLOP rule: counted 0, as its name says
        warnings.simplefilter("ignore", UncountedOpsWarning)
        total = profile(stepper.model, stepper.x).total
    return total["flops"] + total["merge_flops"] + total["backward_flops"]


def measure(depth: int, shape: Shape, repeats: int, steps: int, warmup: int, package,
            only: set[str] | None = None, compiled: bool = False) -> list[dict]:
    if compiled:
        # Dynamo keeps at most 8 compiled graphs per code object (every row's _loss shares
        # one) and then runs eagerly without raising: two depths' rows, or a new thread count,
        # had the later compiled rows timed eagerly. A clean cache for each table.
        torch.compiler.reset()
    rows = rows_for(depth, shape, package, only, compiled)
    # a compiled row computes what its eager row does: counted once, on the eager model
    flops = {label: arithmetic(s) for label, s in rows if not label.endswith(COMPILED)}
    first: dict[str, float] = {}  # each row's first step (a compiled row's compile)
    for label, s in rows:
        for i in range(warmup):
            start = time.perf_counter()
            s.step()
            if i == 0:
                first[label] = time.perf_counter() - start
    times: dict[str, list[float]] = {label: [] for label, _ in rows}
    cpu: dict[str, list[float]] = {label: [] for label, _ in rows}
    for _ in range(repeats):  # interleaved: every row once per repeat
        for label, s in rows:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                s.step()
            times[label].append((time.perf_counter() - start) / steps)
            cpu[label].append((time.process_time() - start_cpu) / steps)
    out = []
    for label, t in times.items():
        mode_add = "add" + COMPILED if label.endswith(COMPILED) else "add"  # add in the same mode
        # each repeat's ratio to add's time in the same repeat (timed a few ms apart, so a
        # change in load lands on both): their range is how far one measurement moves here
        same = [a / b for a, b in zip(t, times[mode_add])]
        out.append({"row": label, "depth": depth, "ms_per_step": 1e3 * statistics.median(t),
                    "x_add": statistics.median(t) / statistics.median(times["add"]),
                    "x_add_same_mode": statistics.median(t) / statistics.median(times[mode_add]),
                    "spread": [1e3 * min(t), 1e3 * max(t)],
                    "x_add_same_mode_range": [min(same), max(same)],
                    "x_add_flops": flops[label.removesuffix(COMPILED)] / flops["add"],
                    "cpu_ms_per_step": 1e3 * statistics.median(cpu[label]),
                    "x_add_cpu": statistics.median(cpu[label]) / statistics.median(cpu["add"]),
                    "first_step_s": first.get(label)})
    return out


def profile_row(label: str, depth: int, shape: Shape, package, steps: int = 5) -> dict:
    """torch.profiler's operator table (self CPU time) for ``steps`` steps of one row, on one
    thread, after two warm-up steps: where the row's time goes."""
    from torch.profiler import ProfilerActivity, profile
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stepper = dict(rows_for(depth, shape, package, {label}))[label]
        for _ in range(2):
            stepper.step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                stepper.step()
    finally:
        torch.set_num_threads(before)
    print(f"{label}, depth {depth}, width {shape.width}, one thread, {steps} steps ({cpu_name()}):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=40))
    return {"row": label, "depth": depth, "steps": steps}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def _counts(p: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    """``1,2`` as [1, 2]; anything but positive integers is a usage error (exit code 2)."""
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        p.error(f"{flag}: expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1", help="torch threads, one run per value: 1, 2 or 1,2 (default 1)")
    p.add_argument("--depths", default="6,12", help="blocks (default 6,12: the study's range)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats per row (default 7)")
    p.add_argument("--steps", type=int, default=3, help="steps per repeat (default 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rows", default=None,
                   help="only these rows (labels, comma-separated; add is always timed); 'mhc one iteration' (mhc "
                        "with 1 Sinkhorn-Knopp iteration, what its other 19 cost) is timed only when named")
    p.add_argument("--width", type=int, default=Shape.width,
                   help="model width (default %(default)s, the study's; heads stay 4); the stream's own work grows with "
                        "the width, the branches' with its square")
    p.add_argument("--compile", action="store_true",
                   help="also time every skiplab row with its loss function under torch.compile (as --compile trains); "
                        "each compiled row's first warm-up step is its compile")
    p.add_argument("--profile", default=None, metavar="ROW",
                   help="instead of the table: torch.profiler's operator table for 5 steps of this row (one thread, the "
                        "first of --depths), where its time goes")
    p.add_argument("--quick", action="store_true", help="tiny shapes, one repeat: checks that it runs")
    p.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    args = p.parse_args(argv)
    threads_list, depth_list = _counts(p, "--threads", args.threads), _counts(p, "--depths", args.depths)
    if min(args.repeats, args.steps, args.warmup) < 1:
        p.error("--repeats, --steps and --warmup must be >= 1 (the first warm-up step is a compiled row's compile)")
    if args.width < Shape.heads or args.width % Shape.heads:
        p.error(f"--width: must be a positive multiple of the {Shape.heads} heads, got {args.width}")
    only = set(args.rows.split(",")) if args.rows else None
    known = {label for label, _, _ in SKIPLAB_ROWS + NAMED_ROWS} | set(PEER_ROWS) | {FLOOR_ROW}
    if only and only - known:
        p.error(f"--rows: {', '.join(sorted(only - known))} not among the rows ({', '.join(sorted(known))})")
    if args.profile is not None and args.profile not in known:
        p.error(f"--profile: {args.profile} not among the rows ({', '.join(sorted(known))})")
    shape, depths = (QUICK, [1]) if args.quick else (Shape(width=args.width), depth_list)
    if args.profile is not None:
        return profile_row(args.profile, depths[0], shape, peer_package())
    repeats, steps, warmup = (1, 1, 1) if args.quick else (args.repeats, args.steps, args.warmup)
    package = peer_package()
    result = {"cpu": cpu_name(), "torch": torch.__version__, "shape": asdict(shape),
              "peer": getattr(package, "__name__", None),
              "compiled": args.compile, "runs": []}
    before = torch.get_num_threads()
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            rows = [r for depth in depths for r in measure(depth, shape, repeats, steps, warmup, package, only,
                                                                args.compile)]
            result["runs"].append({"threads": threads, "rows": rows})
    finally:
        torch.set_num_threads(before)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['cpu']}, torch {result['torch']}; width {shape.width}, {shape.heads} heads, context "
              f"{shape.context}, batch {shape.batch}; median of {repeats} interleaved repeats of {steps} steps"
              + ("" if package else "; hyper-connections package not importable: no peer rows"))
        for run in result["runs"]:
            print(f"\n{run['threads']} thread(s)")
            print(f"{'row':26s} {'depth':>5s} {'ms/step':>8s} {'x add':>6s}  {'min-max ms':>13s}  {'CPU ms':>7s} "
                  f"{'x add':>6s}" + (f"  {'x add, same mode':>16s}" if args.compile else "")
                  + f"  {'repeats x add':>13s} {'FLOPs x add':>11s}" + (f" {'first step s':>12s}" if args.compile else ""))
            for r in run["rows"]:
                lo, hi = r["spread"]
                rlo, rhi = r["x_add_same_mode_range"]
                print(f"{r['row']:26s} {r['depth']:5d} {r['ms_per_step']:8.1f} {r['x_add']:6.2f}  {lo:6.1f}-{hi:6.1f}  "
                      f"{r['cpu_ms_per_step']:7.1f} {r['x_add_cpu']:6.2f}"
                      + (f"  {r['x_add_same_mode']:16.2f}" if args.compile else "")
                      + f"  {rlo:6.2f}-{rhi:<6.2f} {r['x_add_flops']:11.2f}"
                      + (f" {r['first_step_s'] or 0:12.1f}" if args.compile else ""))
    return result


if __name__ == "__main__":
    main()
