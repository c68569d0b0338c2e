"""``skiplab profile FILE.py:FACTORY``: the skip-connection bill of the user's own model,
per module (see :mod:`skiplab.profiling`)."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..profiling import UncountedOpsWarning, profile
from ..user_model import check_accepts, example_input, load_model
from .common import UsageError, add_json_flag, add_user_model_args, emit


def run(args: argparse.Namespace) -> None:
    if args.depth_group < 0:
        raise UsageError(f"--depth-group: must be >= 0, got {args.depth_group}")
    if args.top is not None and args.top < 1:
        raise UsageError(f"--top: must be >= 1, got {args.top}")
    if args.repeats < 1:
        raise UsageError(f"--repeats: must be >= 1, got {args.repeats}")
    x = example_input(args.input_shape, args.batch, args.dtype, args.vocab, seed=args.seed)
    model = load_model(args.target, seed=args.seed)
    check_accepts(model, x)
    with warnings.catch_warnings():  # said once below, as one line, not as a Python warning
        warnings.simplefilter("ignore", UncountedOpsWarning)
        result = profile(model, x, timed=args.time, repeats=args.repeats)
    if result.uncounted_ops:
        print("skiplab: warning: no FLOP rule for " + ", ".join(result.uncounted_ops)
              + ": their FLOPs are not in the counts (uncounted_ops)", file=sys.stderr)
    emit(args, {"target": args.target, **result.to_dict()},
         f"{args.target}\n" + result.table(depth_group=args.depth_group, top=args.top))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "profile", help="parameters, FLOPs, merge FLOPs, concatenation bytes and saved activations of your model",
        description="Profile one forward and backward of the model FACTORY() from FILE.py on a random batch: "
                    "per module, parameters, matmul/conv FLOPs, the FLOPs of element-wise merges (skip "
                    "connections), bytes written by cat/stack, bytes autograd saves for backward and bytes "
                    "a recompute concatenates again in backward. Ops that likely cost FLOPs but have no "
                    "FLOP rule are named (uncounted_ops), not counted as 0.")
    add_user_model_args(p, batch=32)
    o = p.add_argument_group("output")
    o.add_argument("--depth-group", type=int, default=2,
                   help="one row per module at this depth of the module tree, its children included "
                        "(1 = the model's children; default: %(default)s)")
    o.add_argument("--top", type=int, default=20, help="rows shown, largest forward FLOPs first; the rest "
                                                         "are summed in one row (default: %(default)s)")
    o.add_argument("--time", action="store_true", help="also time forward+backward (median of --repeats)")
    o.add_argument("--repeats", type=int, default=5, help="timed passes after one warm-up (default: %(default)s)")
    add_json_flag(o)
    p.set_defaults(run=run)
