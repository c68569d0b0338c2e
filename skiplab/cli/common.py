"""Shared pieces of the command line: one-line errors, model flags, output."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ..layers import ACTIVATIONS, MODELS, NORMS
from ..skips import STRATEGIES
from ..spec import INITS, ModelSpec


class UsageError(Exception):
    """Bad command-line input; reported as one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage + exit; we want one line
        raise UsageError(message)


# -- argument types ---------------------------------------------------------------------
def skips_arg(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one strategy")
    for name in names:
        if name not in STRATEGIES:
            raise argparse.ArgumentTypeError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")
    return names


def shape_arg(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers, e.g. 1,40") from None
    return shape


# The flags' defaults are ModelSpec's, so the library and the command line agree.
_D = {f.name: f.default for f in dataclasses.fields(ModelSpec)}


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default=_D["model"], help="model kind (default: %(default)s)")
    g.add_argument("--depth", type=int, default=_D["depth"], help="number of blocks, 0 = stem + head (default: %(default)s)")
    g.add_argument("--width", type=int, default=_D["width"], help="stem width / channels w (default: %(default)s)")
    g.add_argument("--skip", type=skips_arg, default=[_D["skip"]],
                   help=f"comma-separated strategies from: {', '.join(STRATEGIES)} (default: {_D['skip']})")
    g.add_argument("--growth", type=int, default=None, help="dense growth k (default: the width)")
    g.add_argument("--norm", choices=NORMS, default=_D["norm"], help="norm in every transform (default: %(default)s)")
    g.add_argument("--activation", choices=tuple(ACTIVATIONS), default=_D["activation"], help="(default: %(default)s)")
    g.add_argument("--no-bias", dest="bias", action="store_false", help="no bias on Linear/Conv layers")
    g.add_argument("--init", choices=INITS, default=_D["init"],
                   help="torch = PyTorch's default per layer; kaiming = He-normal (default: %(default)s)")
    g.add_argument("--aux-every", type=int, default=_D["aux_every"],
                   help="auxiliary head after every k-th block (default: %(default)s = none)")
    g.add_argument("--kernel-size", type=int, default=_D["kernel_size"], help="CNN kernel size, odd (default: %(default)s)")
    g.add_argument("--input-shape", type=shape_arg, default=None,
                   help="per-sample input shape, e.g. 40 | 1,40 | 3,32,32 (default: MNIST-1D, or 1,8,8 for cnn2d)")
    g.add_argument("--classes", type=int, default=_D["classes"], help="outputs (default: %(default)s)")


def specs_from_args(args: argparse.Namespace) -> list[ModelSpec]:
    """One ModelSpec per strategy named by --skip; --growth goes to dense only."""
    if args.growth is not None and "dense" not in args.skip:
        raise UsageError("--growth: only skip 'dense' uses a growth; add dense to --skip or drop --growth")
    return [ModelSpec(model=args.model, depth=args.depth, width=args.width, skip=skip,
                      growth=args.growth if skip == "dense" else None, norm=args.norm,
                      activation=args.activation, bias=args.bias, init=args.init,
                      aux_every=args.aux_every, kernel_size=args.kernel_size,
                      input_shape=args.input_shape, classes=args.classes)
            for skip in args.skip]


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)




def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
