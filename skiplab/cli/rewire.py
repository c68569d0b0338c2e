"""``skiplab rewire FILE.py:FACTORY --skip S --dry-run``: the residual merges of the user's
model, what each becomes, and the cost before and after (see :mod:`skiplab.rewiring`)."""

from __future__ import annotations

import argparse

from ..rewiring.listing import dry_run, dry_run_text
from ..user_model import check_accepts, example_input, load_model
from .common import UsageError, add_json_flag, add_option_args, add_user_model_args, check_option_flags, emit, \
    options_for, skips_arg


def run(args: argparse.Namespace) -> None:
    if not args.dry_run:
        raise UsageError("rewire: give --dry-run (it lists the merges and the costs; the rewired model itself lives "
                         "in Python, skiplab.rewire(model, skip), and skiplab compare trains it)")
    check_option_flags(args)
    x = example_input(args.input_shape, args.batch, args.dtype, args.vocab, seed=args.seed)
    model = load_model(args.target, seed=args.seed)
    check_accepts(model, x)
    d = dry_run(model, args.skip, x, {s: options_for(args, s) for s in args.skip}, args.channel_dim)
    shape = f"{tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    emit(args, {"target": args.target, "input": {"shape": list(x.shape), "dtype": str(x.dtype)}, **d},
         dry_run_text(d, args.target, shape))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "rewire", help="find the residual merges of your model and list what a strategy makes of them",
        description="Find the residual merges (x + f(x), out += identity) of the model FACTORY() from FILE.py: "
                    "torch.fx on each module's own forward, known block patterns (GPT-2, Llama, timm ViT, "
                    "torchvision ResNet blocks) where fx fails. --dry-run lists each merge (module, shapes, what "
                    "it becomes) and the cost before and after (parameters, FLOPs, merge FLOPs per sample).")
    p.add_argument("--skip", type=skips_arg, required=True, help="comma-separated strategies to rewire to")
    p.add_argument("--dry-run", action="store_true", help="list the merges and the costs (required)")
    p.add_argument("--channel-dim", type=int, choices=(1, -1), default=None,
                   help="where the stream's channels are (default: first after a convolution or batch norm, "
                        "else last)")
    add_user_model_args(p, batch=2)
    add_option_args(p)
    add_json_flag(p)
    p.set_defaults(run=run)
