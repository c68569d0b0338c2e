"""``skiplab sweep FILE.toml``: a grid of runs on this machine or a Ray cluster (see
:mod:`skiplab.sweep`)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..datasets import display_name
from ..metrics import BPC
from ..progress import ProgressBar, StepRate
from ..results import aggregate, pct
from ..run.loop import preflight
from ..skips import options_text
from ..store import Store
from ..sweep import BACKENDS, Sweep, load_sweep, run_sweep
from ..textable import table
from .common import UsageError, add_json_flag, emit
from .study import COUNT_WORDS


def _plan(sweep: Sweep) -> list[dict[str, Any]]:
    return [{"spec_hash": r.spec_hash, "seed": r.seed, "group": r.group, "dataset": r.dataset,
             "skip": r.model.skip, "model": r.model.model, "depth": r.model.depth, "width": r.model.width,
             "options": options_text(r.model.options)} for r in sweep.runs]


def run(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers: must be >= 1, got {args.workers}")
    if args.address and args.backend != "ray":
        raise UsageError("--address: only the ray backend joins a cluster; add --backend ray")
    sweep = load_sweep(args.file)
    # Fit and device before any run; a Ray cluster's devices are its own, not this machine's.
    preflight(sweep.runs, device=args.backend == "local")
    if args.dry_run:
        plan = _plan(sweep)
        text = table(["skip", "model", "depth", "width", "options", "dataset", "seed", "spec_hash"],
                     [[p["skip"], p["model"], p["depth"], p["width"], p["options"], p["dataset"], p["seed"],
                       p["spec_hash"]] for p in plan])
        emit(args, {"runs": plan, "configs": sweep.configs},
             f"{text}\n{len(plan)} runs ({sweep.configs} configurations); nothing run (--dry-run)")
        return
    bar = ProgressBar(len(sweep.runs), f"sweep ({args.backend})", enabled=not args.json)
    failures, rate = 0, StepRate()

    def on_done(done: int, total: int, out: dict[str, Any]) -> None:
        nonlocal failures
        failures += out["status"] == "failed"
        m = out["spec"]["model"]
        bar.total = max(total, 1)
        steps = rate.add(out["result"].get("steps") or 0)
        bar.update(done, f"{failures} failed; {m['skip']} depth {m['depth']} seed {out['seed']}: {out['status']}; "
                         f"{steps:,.0f} seed-steps/s")

    start = time.perf_counter()
    rate.reset()
    with Store(args.out) as store:
        counts = run_sweep(sweep, store, args.backend, args.address, args.workers, on_done)
        keys = {(r.spec_hash, r.seed) for r in sweep.runs}
        stored = [r for r in store.runs() if (r["spec_hash"], r["seed"]) in keys]
    bar.close()
    seconds = time.perf_counter() - start
    rows = aggregate(stored)
    data = {"backend": args.backend, "runs": len(sweep.runs), "configs": sweep.configs, "counts": counts,
            "seconds": seconds, "store": f"{args.out}/runs.db", "results": rows}
    lm = any(d["metric"] == BPC.key for d in rows)  # language models: a bpc column (skiplab.metrics)
    text = table(["skip", "model", "depth", "width", "params", "dataset", "seeds ok", "failed", "test accuracy %"]
                 + (["val bpc"] if lm else []),
                 [[d["skip"], d["model"], d["depth"], d["width"], d["params"], display_name(d["dataset"]),
                   f"{d['complete']}/{d['seeds']}", d["failed"],
                   pct(d["test_accuracy_mean"], d["test_accuracy_std"], d["complete"])]
                  + ([BPC.text(d["score_mean"], d["score_std"], d["complete"]) if d["metric"] == BPC.key else "-"]
                     if lm else [])
                  for d in rows])
    summary = (f"sweep: {len(sweep.runs)} runs on {args.backend}, {counts.get('skipped', 0)} already stored, "
               + ", ".join([f"{v} {COUNT_WORDS.get(k, k)}" for k, v in counts.items() if k != "skipped"]
                           or ["nothing to run"])
               + f" ({seconds:.0f} s); results in {args.out}/runs.db")
    emit(args, data, f"{text}\n{summary}")


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="a grid of runs from a TOML file, here or on a Ray cluster",
                       description="Run every configuration x seed that FILE.toml names, on a local process "
                                   "pool or as Ray tasks; results go to DIR/runs.db. Re-running resumes: "
                                   "finished runs are kept.")
    p.add_argument("file", metavar="FILE.toml", help="the sweep file (examples/sweep-small.toml shows every table)")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local = one process per run here; ray = one Ray task per run (default: %(default)s)")
    p.add_argument("--address", default=None,
                   help="ray: join an existing cluster ('auto', or ray://HOST:10001); default: start a local one")
    p.add_argument("--workers", type=int, default=None,
                   help="local: runs in parallel (default: one per core); ray: CPUs of the local instance, "
                        "or the most tasks in flight on a cluster (default: all)")
    p.add_argument("--out", default="skiplab-out", help="results store folder (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="check the file and list its runs; run nothing")
    add_json_flag(p)
    p.set_defaults(run=run)
