"""``skiplab experiment NAME``: run a named experiment (see :mod:`skiplab.experiments`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments import EXPERIMENTS, check_options, run_experiment
from ..experiments.figures import write_experiment_figure
from .common import add_json_flag, emit


def run(args: argparse.Namespace) -> None:
    check_options(args.name, args.workers, args.dataset)  # an option that does not apply: one line, exit 2
    say = None if args.json else (lambda m: print(f"skiplab: {m}", flush=True))
    result = run_experiment(args.name, args.out, quick=args.quick, workers=args.workers, dataset=args.dataset,
                            progress=say)
    png, svg = write_experiment_figure(args.name, result, Path(args.out) / "figures")
    emit(args, {**result, "figure": {"png": str(png), "svg": str(svg)}},
         f"{args.name}: {result['claim']}\n\noutcome: {result['outcome']}\n"
         f"({result['seconds']:.0f} s; stored in {args.out}/runs.db)\nfigure: {png} (and .svg)")


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="run a named experiment (a claim of the answers or a paper)",
                       description="Run a named experiment; its result and outcome sentence go to the store, "
                                   "its figure to OUT/figures/experiment-NAME.png and .svg. The default form "
                                   "answers the claim (minutes); --quick is a smoke test.")
    p.add_argument("name", choices=list(EXPERIMENTS), help="the experiment")
    p.add_argument("--quick", action="store_true", help="a smoke test: small, short, its numbers prove nothing")
    p.add_argument("--out", default="skiplab-out", help="results folder (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel training runs, for experiments that train (default: one per core)")
    p.add_argument("--dataset", default=None,
                   help="a dataset name or path, for experiments that train (default: the experiment's own: "
                        "mnist1d; pydoc, a text, for denseformer, hyper-gain and norm-placement, which take "
                        "a .txt file)")
    add_json_flag(p)
    p.set_defaults(run=run)
