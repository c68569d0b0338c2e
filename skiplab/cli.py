"""The ``skiplab`` command line: argument parsing only; the work is in the library.

Every command takes ``--json``. Bad input prints one line ``skiplab: error: ...`` on
stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from .layers import ACTIVATIONS, MODELS, NORMS
from .model import build_model
from .skips import STRATEGIES
from .spec import INITS, ModelSpec
from .textable import table


class UsageError(Exception):
    """Bad command-line input; reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage + exit; we want one line
        raise UsageError(message)


# -- argument types ---------------------------------------------------------------------
def _skips(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one strategy")
    for name in names:
        if name not in STRATEGIES:
            raise argparse.ArgumentTypeError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")
    return names


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers, e.g. 1,40") from None
    return shape


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default="mlp", help="model kind (default: mlp)")
    g.add_argument("--depth", type=int, default=4, help="number of blocks, 0 = stem + head (default: 4)")
    g.add_argument("--width", type=int, default=64, help="stem width / channels w (default: 64)")
    g.add_argument("--skip", type=_skips, default=["add"],
                   help=f"comma-separated strategies from: {', '.join(STRATEGIES)} (default: add)")
    g.add_argument("--growth", type=int, default=None, help="dense growth k (default: the width)")
    g.add_argument("--norm", choices=NORMS, default="none", help="norm in every transform (default: none)")
    g.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu", help="(default: relu)")
    g.add_argument("--no-bias", dest="bias", action="store_false", help="no bias on Linear/Conv layers")
    g.add_argument("--init", choices=INITS, default="torch",
                   help="torch = PyTorch's default per layer; kaiming = He-normal (default: torch)")
    g.add_argument("--aux-every", type=int, default=0, help="auxiliary head after every k-th block (default: 0 = none)")
    g.add_argument("--kernel-size", type=int, default=3, help="CNN kernel size, odd (default: 3)")
    g.add_argument("--input-shape", type=_shape, default=None,
                   help="per-sample input shape, e.g. 40 | 1,40 | 3,32,32 (default: MNIST-1D, or 1,8,8 for cnn2d)")
    g.add_argument("--classes", type=int, default=10, help="outputs (default: 10)")


def _specs(args: argparse.Namespace) -> list[ModelSpec]:
    """One ModelSpec per strategy named by --skip; --growth goes to dense only."""
    if args.growth is not None and "dense" not in args.skip:
        raise UsageError("--growth: only skip 'dense' uses a growth; add dense to --skip or drop --growth")
    return [ModelSpec(model=args.model, depth=args.depth, width=args.width, skip=skip,
                      growth=args.growth if skip == "dense" else None, norm=args.norm,
                      activation=args.activation, bias=args.bias, init=args.init,
                      aux_every=args.aux_every, kernel_size=args.kernel_size,
                      input_shape=args.input_shape, classes=args.classes)
            for skip in args.skip]


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


# -- commands ---------------------------------------------------------------------------
def cmd_strategies(args: argparse.Namespace) -> None:
    data = [{"skip": s.name, "summary": s.summary, "rule": s.rule, "source": s.source}
            for s in STRATEGIES.values()]
    _emit(args, data, table(["skip", "what it does"], [[d["skip"], d["summary"]] for d in data]))


def cmd_build(args: argparse.Namespace) -> None:
    data = [build_model(spec, seed=0).structure() for spec in _specs(args)]
    _emit(args, data, _build_text(data))


def _build_text(data: list[dict[str, Any]]) -> str:
    out = []
    for d in data:
        p = d["params"]
        shape = "x".join(map(str, d["input_shape"]))
        head = (f"{d['skip']}: {d['model']}, depth {d['depth']}, width {d['width']}, norm {d['norm']}, "
                f"bias {'on' if d['bias'] else 'off'}, init {d['init']}")
        rows = [["stem", f"{shape} -> {d['width']}", p["stem"]]]
        rows += [[f"block {b['block']}", f"{b['in_width']} -> {b['out_width']}"
                  + ("" if b["features"] == b["out_width"] else f" (+{b['features']} new)"), b["params"]]
                 for b in d["per_block"]]
        rows.append(["head", f"{d['state_width']} -> {d['classes']}", p["head"]])
        if p["aux"]:
            rows.append([f"aux heads ({len(range(d['aux_every'], d['depth'], d['aux_every']))})", "", p["aux"]])
        rows.append(["total", "", p["total"]])
        out.append(head + "\n" + table(["part", "width", "params"], rows))
    if len(data) > 1:
        rows = [[d["skip"], d["params"]["stem"], d["params"]["blocks"], d["params"]["head"],
                 d["params"]["aux"], d["params"]["total"],
                 d["params"]["blocks"] / max(data[0]["params"]["blocks"], 1)] for d in data]
        out.append("summary\n" + table(["skip", "stem", "blocks", "head", "aux", "total",
                                        f"blocks / {data[0]['skip']}"], rows))
    return "\n\n".join(out)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skiplab", description="Should a skip connection add or concatenate? "
                     "Measure parameters, cost, gradients and accuracy for each strategy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("strategies", help="list the skip strategies")
    p.set_defaults(run=cmd_strategies)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("build", help="build models and show their structure and parameters per part")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_build)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        args.run(args)
    except (UsageError, ValueError) as e:
        print(f"skiplab: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skiplab: interrupted", file=sys.stderr)
        return 130
    return 0
