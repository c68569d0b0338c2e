"""``skiplab study``: the main job (see :mod:`skiplab.study`)."""

from __future__ import annotations

import argparse

from ..progress import ProgressBar, StepRate
from ..report import write_report_locked
from ..run.config import DEVICES, ENGINES
from ..skips.concat import MEMORIES
from ..study import PRESETS, on_device, study_models, plan_for, run_study, with_engine, with_memory, with_train
from .common import UsageError, add_json_flag, emit
from .train import add_accelerator_args

# run_all's counts that are not statuses, in words
COUNT_WORDS = {"elsewhere": "stored by another command meanwhile", "retried": "retried after their worker died"}


def run(args: argparse.Namespace) -> None:
    plan = with_engine(on_device(plan_for(args.model, args.quick, args.preset), args.device), args.engine)
    plan = with_train(plan, compile=args.compile, precision=args.precision)
    if args.memory:
        plan = with_memory(plan, args.memory)
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers: must be >= 1, got {args.workers}")
    bar = ProgressBar(len(plan.runs()), "study", enabled=not args.json)
    flight, rate = [0], StepRate()

    def on_run(done: int, total: int, out: dict) -> None:
        m, r = out["spec"]["model"], out["result"]
        acc, bpc = r.get("test_accuracy"), r.get("val_bpc")
        note = f"{m['skip']} depth {m['depth']} seed {out['seed']}: " + (
            f"{bpc:.3f} bpc" if bpc is not None else f"{100 * acc:.1f}%" if acc is not None else out["status"])
        note += f"; {flight[0]} seeds in flight, {rate.add(r.get('steps') or 0):,.0f} seed-steps/s"
        bar.total = total
        bar.update(done, note)

    def on_flight(seeds: int) -> None:
        if not rate.steps and not flight[0]:  # training starts (after the cost and gradient summaries)
            rate.reset()
        flight[0] = seeds

    def progress(message: str) -> None:
        if not args.json:
            bar.update(0, message)

    result = run_study(args.out, plan, workers=args.workers, on_run=on_run, progress=progress,
                       on_flight=on_flight, command=getattr(args, "command_line", None))
    bar.close()
    files = write_report_locked(args.out)
    result |= {"report": str(files["report.html"]), "report_md": str(files["report.md"])}
    c = result["counts"]
    text = (f"study: {result['runs']} runs planned, {c.get('skipped', 0)} already stored, "
            + ", ".join(f"{v} {COUNT_WORDS.get(k, k)}" for k, v in c.items() if k != "skipped")
            + f" ({result['seconds']:.0f} s)\nreport: {result['report']}")
    emit(args, result, text)


def add_parser(sub) -> None:
    p = sub.add_parser("study", help="the main job: every strategy, several depths, seeds; report",
                       description="Compare the skip strategies on MNIST-1D at equal width and at a matched "
                                   "parameter budget, over seeds; results go to DIR/runs.db, the report to "
                                   "DIR/report.html, DIR/report.md and DIR/figures/. Re-running resumes.")
    p.add_argument("--quick", action="store_true", help="a small study (a smoke test: about a minute)")
    p.add_argument("--model", choices=study_models(), default="mlp",
                   help="mlp: the MLP study on MNIST-1D; transformer: the residual-stream study, a character "
                        "language model on Python's documentation text (default: %(default)s)")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="gpu: the transformer study sized for one GPU (width 256, context 256, depth 12; use with "
                        "--model transformer --device cuda; not yet run on a GPU)")
    p.add_argument("--out", default="skiplab-out", help="output folder (default: %(default)s)")
    p.add_argument("--memory", choices=MEMORIES, default=None,
                   help="the concatenating strategies' activation memory: naive (default) or efficient "
                        "(each feature stored once; the same results; see docs/memory-efficient.md)")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (default: min(2, cores))")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where runs train; not part of a run's identity, so resuming elsewhere keeps them "
                        "(default: %(default)s)")
    p.add_argument("--engine", choices=ENGINES, default="batched",
                   help="batched: each configuration's seeds train as one vmapped computation (same numbers within "
                        "1e-4); loop: one run at a time; not part of a run's identity (default: %(default)s)")
    add_accelerator_args(p)
    add_json_flag(p)
    p.set_defaults(run=run)
