"""``skiplab compare FILE.py:FACTORY --skip add,rezero,... --dataset D --seeds S --out DIR``:
the user's model as written and rewired to each strategy, trained at matched settings, stored,
and judged against the original (see :mod:`skiplab.rewiring.compare`)."""

from __future__ import annotations

import argparse
import pathlib

from ..datasets import dataset_ref, display_name, load_dataset
from ..progress import ProgressBar
from ..provenance import hardware
from ..rewiring.compare import DEFAULT_CONTEXT, plan_runs, run_compare, verdict, verdict_text
from ..run.config import TrainConfig
from ..store import Store
from .common import UsageError, add_json_flag, add_option_args, check_option_flags, emit, options_for, skips_arg
from .train import add_step_args

EPOCHS = 1.0  # a user's model on a CPU: one pass unless asked
EVALS = 2  # each evaluation scores the whole test set


def run(args: argparse.Namespace) -> None:
    check_option_flags(args)
    if args.seeds < 1:
        raise UsageError(f"--seeds: must be >= 1, got {args.seeds}")
    cfg = TrainConfig(optimizer=args.optimizer, lr=args.lr, schedule=args.schedule, batch_size=args.batch_size,
                      epochs=args.epochs, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                      warmup=args.warmup, evals=args.evals, device=args.device)
    ref = dataset_ref(args.dataset)
    data = load_dataset(ref, args.label_column)
    # everything is checked before the store is opened: a bad call stores nothing
    runs = plan_runs(args.target, args.skip, data, ref, cfg, args.seeds, {s: options_for(args, s) for s in args.skip},
                     args.context, args.label_column)
    bar = ProgressBar(len(runs), "compare", enabled=not args.json)
    before = 0
    with Store(args.out) as store:
        finished = store.finished_keys()
        before = sum((r.spec_hash, r.seed) in finished for r in runs)

    def on_done(n, total, o):
        bar.update(before + n, f"{o['spec']['model']['skip']} seed {o['seed']}: {o['status']}")

    counts = run_compare(runs, args.out, on_done)
    bar.update(len(runs), "done", force=True)
    bar.close()
    with Store(args.out, create=False) as store:
        stored = store.runs()
    v = verdict(runs, stored)
    cpu = hardware().get("cpu") or "this machine"
    steps = next((r["steps"] for r in v["variants"] if r.get("steps")), None)
    window = f", windows of {runs[0].context}" if runs[0].context else ""
    header = (f"{args.target} on {display_name(ref)}{window}: {len(v['variants'])} variants x {args.seeds} seeds, "
              f"{args.epochs:g} epoch{'s' * (args.epochs != 1)}" + (f" ({steps} steps)" if steps else "")
              + f", batch {args.batch_size}, {args.optimizer} lr {args.lr:g} {args.schedule}; {cpu}")
    text = verdict_text(v, header)
    pathlib.Path(args.out, "compare.md").write_text(text + "\n", encoding="utf-8")
    emit(args, {"target": args.target, "dataset": ref, "counts": counts, **v},
         text + f"\nresults stored in {args.out}/runs.db; this table in {args.out}/compare.md")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare", help="train your model as written and rewired to each strategy; verdicts against the original",
        description="Train the model FACTORY() from FILE.py as written and rewired to each --skip strategy "
                    "(skiplab rewire), with the same data, schedule and seeds; runs go to the results store "
                    "(resumable); then per variant its parameters, FLOPs and merge FLOPs per sample, its metric "
                    "(test accuracy, or validation bits per character on text), Welch's t-test against the "
                    "original (Holm over the variants) and its time per step. The loss is the model's own where "
                    "its forward takes labels (Hugging Face), else cross-entropy.")
    p.add_argument("target", metavar="FILE.py:FACTORY",
                   help="a Python file and the name of a callable in it that takes no arguments and returns "
                        "a torch.nn.Module")
    p.add_argument("--skip", type=skips_arg, required=True, help="comma-separated strategies to rewire to")
    g = p.add_argument_group("training")
    g.add_argument("--dataset", required=True,
                   help="mnist1d | digits | pydoc (text) | a .txt/.npz/.csv file | a CIFAR-10 or MNIST folder")
    g.add_argument("--label-column", default="label", help="label column of a .csv dataset (default: %(default)s)")
    g.add_argument("--context", type=int, default=None,
                   help=f"a text's window length T (default: {DEFAULT_CONTEXT})")
    g.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 (default: %(default)s)")
    g.add_argument("--epochs", type=float, default=EPOCHS, help="passes over the training set (default: %(default)s)")
    add_step_args(g)
    g.add_argument("--evals", type=int, default=EVALS, help="evaluations over a run (default: %(default)s)")
    p.add_argument("--out", required=True, help="results store folder")
    add_option_args(p)
    add_json_flag(p)
    p.set_defaults(run=run)
