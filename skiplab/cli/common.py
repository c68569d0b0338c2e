"""Shared pieces of the command line: one-line errors, model flags, output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from typing import Any

from ..errors import UserError
from ..families import FAMILIES, all_family_options
from ..layers import ACTIVATIONS
from ..skips import STRATEGIES, all_options, check_options_taken
from ..spec import INITS, ModelSpec


class UsageError(UserError):
    """Bad command-line input; reported as one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    """Every parser (the top one, each command's) takes ``--debug``: wherever it is given,
    an error prints its traceback (``skiplab.cli.main``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A value that starts with a minus and a digit (-3,32,32, -1..5, -1e-3) is a value with
        # a sign, to be refused for its sign, not an unknown flag ("expected one argument"):
        # the rule of Python 3.13's argparse; before it only -3 and -1.5 were numbers.
        self._negative_number_matcher = re.compile(r"-\.?\d")
        # SUPPRESS: a command's parser sets it only when given, so `skiplab --debug train` keeps it
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="on an error, print its traceback")

    def error(self, message: str):  # argparse would print usage + exit; we want one line
        raise UsageError(message)


# -- argument types ---------------------------------------------------------------------
def skips_arg(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",")]
    if not any(names):
        raise argparse.ArgumentTypeError("give at least one strategy")
    if not all(names):  # "add,,plain" is a typo, not a list of two: say so rather than guess
        raise argparse.ArgumentTypeError(f"{text!r} has an empty name; give names separated by single commas")
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


def _by_family(attribute: str) -> str:
    """``32 (mlp, cnn1d, ...), 16 (resnet)``: a family default, grouped by value."""
    values: dict[Any, list[str]] = {}
    for f in FAMILIES.values():
        values.setdefault(getattr(f, attribute), []).append(f.name)
    return ", ".join(f"{v} ({', '.join(names)})" for v, names in values.items())


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=tuple(FAMILIES), default=_D["model"],
                   help="model family (default: %(default)s)")
    g.add_argument("--depth", type=int, default=None,
                   help="number of blocks, 0 = stem + head (default: 6); resnet counts weighted layers as its "
                        "papers do (default: 20, ResNet-20; with dense 100, DenseNet-BC-100)")
    g.add_argument("--width", type=int, default=None,
                   help=f"stem width / channels w (default: {_by_family('default_width')})")
    g.add_argument("--skip", type=skips_arg, default=[_D["skip"]],
                   help=f"comma-separated strategies from: {', '.join(STRATEGIES)} (default: {_D['skip']})")
    norms = tuple(dict.fromkeys(n for f in FAMILIES.values() for n in f.norms))
    defaults = ", ".join(f"{f.default_norm} ({f.name})" for f in FAMILIES.values())
    g.add_argument("--norm", choices=norms, default=None, help=f"norm in every sublayer (default: {defaults})")
    g.add_argument("--activation", choices=tuple(ACTIVATIONS), default=None,
                   help="activation (default: " + ", ".join(f"{f.default_activation} ({f.name})"
                                                           for f in FAMILIES.values()) + ")")
    bias = ", ".join(f.name for f in FAMILIES.values() if not f.default_bias)
    g.add_argument("--no-bias", dest="bias", action="store_false", default=None,
                   help=f"no bias on Linear/Conv layers (the default of {bias})")
    g.add_argument("--bias", dest="bias", action="store_true", default=None,
                   help="a bias on every Linear/Conv layer (the default of the other families)")
    g.add_argument("--init", choices=INITS, default=_D["init"],
                   help="torch = PyTorch's default per layer; kaiming = He-normal (default: %(default)s)")
    g.add_argument("--aux-every", type=int, default=_D["aux_every"],
                   help="auxiliary head after every k-th block (default: %(default)s = none)")
    g.add_argument("--kernel-size", type=int, default=None,
                   help=f"CNN kernel size, odd (default: {_by_family('default_kernel_size')})")
    g.add_argument("--input-shape", type=shape_arg, default=None,
                   help="per-sample input shape, e.g. 40 | 1,40 | 3,32,32 (default: " + ", ".join(
                       f"{','.join(map(str, f.default_input_shape))} ({f.name})" for f in FAMILIES.values()) + ")")
    g.add_argument("--classes", type=int, default=None,
                   help=f"outputs (default: train: the dataset's class count; otherwise {_D['classes']})")
    add_family_option_args(p)
    add_option_args(p)


def _add_option_flag(g, o, dest: str, who: str) -> None:
    """``--NAME`` for an Option (a strategy's or a family's): its kind, choices and help."""
    flag = "--" + o.name.replace("_", "-")
    default = "" if o.default is None or o.default_from_width or o.kind is bool else f" (default: {o.default})"
    if o.kind is bool:
        g.add_argument(flag, dest=dest, action="store_true", default=None, help=f"{who}: {o.help}")
    elif o.kind is str:
        g.add_argument(flag, dest=dest, choices=o.choices, default=None, help=f"{who}: {o.help}{default}")
    else:
        g.add_argument(flag, dest=dest, type=int, default=None, help=f"{who}: {o.help}{default}")


def add_family_option_args(p: argparse.ArgumentParser) -> None:
    """One flag per family option (``--heads``, ``--stages``, ...), generated from the
    families' own declarations; a value goes to ModelSpec by the option's name (a family
    that does not take it refuses it, naming the one that does)."""
    g = p.add_argument_group("family options (each applies to the families that declare it)")
    for name, owners in all_family_options().items():
        o = next(opt for opt in owners[0].options if opt.name == name)
        _add_option_flag(g, o, name, ", ".join(f"--model {f.name}" for f in owners))


def family_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The family option flags given (a flag left out keeps the family's default)."""
    return {k: getattr(args, k) for k in all_family_options() if getattr(args, k, None) is not None}


def add_option_args(p: argparse.ArgumentParser) -> None:
    """One flag per strategy option (``--growth``, ``--streams``, ...), generated from the
    strategies' own declarations; each goes to the strategies that declare it."""
    g = p.add_argument_group("strategy options (each applies to the strategies that declare it)")
    for name, owners in all_options().items():
        o = next(opt for opt in owners[0].options if opt.name == name)
        _add_option_flag(g, o, f"option_{name}", ", ".join(s.name for s in owners))


def options_for(args: argparse.Namespace, skip: str) -> dict[str, Any]:
    """The option flags given that ``skip``'s strategy declares."""
    declared = {o.name for o in STRATEGIES[skip].options}
    return {name: getattr(args, f"option_{name}") for name in declared
            if getattr(args, f"option_{name}", None) is not None}


def check_option_flags(args: argparse.Namespace) -> None:
    """A strategy option given for a command whose strategies do not declare it is an error
    (the strategies' rule, :func:`skiplab.skips.check_options_taken`, as in sweep files)."""
    given = [name for name in all_options() if getattr(args, f"option_{name}", None) is not None]
    check_options_taken(given, args.skip, spell=lambda key: "--" + key.replace("_", "-"))


def specs_from_args(args: argparse.Namespace) -> list[ModelSpec]:
    """One ModelSpec per strategy named by --skip; each option flag goes to the strategies
    that declare it."""
    check_option_flags(args)
    fields = family_fields(args)
    classes = args.classes
    if classes is None:  # a language model predicts its own vocabulary
        classes = fields["vocab"] if fields.get("vocab") else _D["classes"]
    return [ModelSpec(model=args.model, depth=args.depth, width=args.width, skip=skip,
                      options=options_for(args, skip), norm=args.norm,
                      activation=args.activation, bias=args.bias, init=args.init,
                      aux_every=args.aux_every, kernel_size=args.kernel_size,
                      input_shape=args.input_shape, classes=classes, **fields)
            for skip in args.skip]


def specs_for_data(args: argparse.Namespace, data: Any) -> list[ModelSpec]:
    """As :func:`specs_from_args`, with what the user left out filled in from ``data``
    (input shape and classes, or a text's vocabulary); what the user gave is checked later
    against the data (``skiplab.fit.check_fits``), never overwritten."""
    from ..fit import model_fields_from
    fill = model_fields_from(data, vars(args))
    if not FAMILIES[args.model].takes_tokens:
        fill.pop("vocab", None)  # check_fits says why a text needs another family
    if getattr(args, "vocab", None) is not None:
        fill.pop("classes", None)  # the outputs follow the vocabulary given; check_fits compares it with the data's
    for key, value in fill.items():  # the flags specs_from_args reads
        setattr(args, key, value)
    return specs_from_args(args)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)




def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def add_user_model_args(p: argparse.ArgumentParser, batch: int) -> None:
    """The user's model and its example input, as ``profile`` and ``rewire`` take them:
    FILE.py:FACTORY, then --input-shape, --batch, --dtype, --vocab, --seed."""
    from ..user_model import DTYPES  # the CLI's flags, the library's dtypes
    p.add_argument("target", metavar="FILE.py:FACTORY",
                   help="a Python file and the name of a callable in it that takes no arguments and returns "
                        "a torch.nn.Module")
    g = p.add_argument_group("input")
    g.add_argument("--input-shape", type=shape_arg, required=True,
                   help="per-sample input shape, e.g. 3,32,32 (an image) or 64 (64 token ids)")
    g.add_argument("--batch", type=int, default=batch, help="samples in the example batch (default: %(default)s)")
    g.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                   help="input dtype; an integer dtype draws token ids in [0, --vocab) (default: %(default)s)")
    g.add_argument("--vocab", type=int, default=None, help="token ids are drawn from [0, V) (integer dtypes)")
    g.add_argument("--seed", type=int, default=0, help="seeds the factory's init and the batch (default: %(default)s)")
