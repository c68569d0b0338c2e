"""``skiplab cost``: parameters, FLOPs, activation memory and concatenation traffic per
strategy; ``--measure`` sets measurement beside them, ``--depths`` fits growth laws,
``--params``/``--flops`` size every strategy to one budget."""

from __future__ import annotations

import argparse
from typing import Any

from ..families import FAMILIES
from ..cost import cost_summary, parse_depths, plot_growth
from ..cost.budget import sizing_options
from ..skips import options_text, sizing_option_names
from ..textable import table
from .common import UsageError, add_json_flag, add_model_args, emit, specs_from_args

MiB = 2 ** 20


def _law(g: dict[str, Any]) -> str:
    c = g["coefficients"]
    if g["law"] == "exponential":
        return f"exponential (x{c['base']:.3g} per block)"
    if g["law"] in ("linear", "quadratic"):
        lead = c["c2"] if g["law"] == "quadratic" else c["c1"]
        return f"{g['law']} ({lead:.3g} d{'^2' if g['law'] == 'quadratic' else ''})"
    return g["law"]


def _name(d: dict[str, Any]) -> str:
    """The strategy, marked when it keeps a non-default memory path."""
    memory = d["options"].get("memory")
    return d["skip"] + (f" ({memory})" if memory not in (None, "naive") else "")


def render(data: list[dict[str, Any]], args: argparse.Namespace) -> str:
    d0 = data[0]
    spec = d0["spec"]
    out = [f"{spec['model']}, depth {d0['depth']}, norm {spec['norm']}, bias {'on' if spec['bias'] else 'off'}: "
           f"FLOPs per sample (forward), memory for a batch of {d0['batch']}"]
    tokens = FAMILIES[spec["model"]].takes_tokens  # a sequence model: its cost per token too
    both = any("activation_bytes_by_memory" in d for d in data)  # a concatenation's two bills side by side

    def bills(d: dict[str, Any]) -> list:
        by = d.get("activation_bytes_by_memory")
        return [by["naive"] / MiB, by["efficient"] / MiB] if by else [None, None]

    rows = [[_name(d), d["width"], d["params"]["total"], d["params"]["blocks"], d["flops"]["matmul"] / 1e6,
             *([d["flops_per_token"] / 1e3] if tokens else []),
             d["flops"]["merge"] / 1e6, d["activation_bytes"] / MiB, *(bills(d) if both else []),
             d["concat_bytes"] / MiB, (d["block_flops_ratio"][-1] if d["block_flops_ratio"] else None)] for d in data]
    out.append(table(["skip", "width", "params", "blocks", "MFLOPs", *(["kFLOPs/token"] if tokens else []),
                      "merge MFLOPs", "act MiB", *(["naive MiB", "efficient MiB"] if both else []), "concat MiB",
                      "last block ratio"], rows))
    for d in data:  # a model too large to build even on meta: say where its figures come from
        if d.get("estimated"):
            out.append(f"{_name(d)}: estimated, {d['estimated']}")
    if any("budget" in d for d in data):
        b0 = d0["budget"]
        rows = [[d["skip"], d["budget"]["width"], options_text(d["budget"]["options"]), d["budget"]["achieved"],
                 f"{100 * d['budget']['relative_error']:+.2f}%" + ("" if d["budget"]["within_tolerance"] else " (over 2%)")]
                for d in data]
        out.append(f"\nmatched budget: {b0['metric']} = {b0['target']:,}\n"
                   + table(["skip", "width", "options", b0["metric"], "off by"], rows))
    if args.per_block:
        for d in data:
            rows = [[b["block"], f"{b['in_width']} -> {b['out_width']}", b["params"], b["flops"], b["merge_flops"],
                     b["activation_bytes"], b["concat_bytes"]] for b in d["per_block"]]
            out.append(f"\n{d['skip']} per block\n" + table(
                ["block", "width", "params", "FLOPs", "merge", "act bytes", "concat bytes"], rows))
    if args.measure:
        rows, notes = [], []
        for d in data:
            m = d.get("measured")
            if m is None:
                notes.append(f"{d['skip']}: {d['measured_skipped']}")
                continue
            r = d["ratios"]
            rows.append([_name(d), m["params"]["total"], r["params"], m["flops"]["matmul"] / 1e6, r["flops"],
                         m["flops"]["backward"] / m["flops"]["matmul"] if m["flops"]["matmul"] else None,
                         m["activation_bytes"] / MiB, r["activation_bytes"], m["concat_bytes"] / MiB,
                         1e3 * m["seconds_forward_backward"] if m["seconds_forward_backward"] else None])
        out.append("\nmeasured on the built model (ratio = counted on the meta device / measured on this one)")
        if rows:
            out.append(table(["skip", "params", "ratio", "MFLOPs", "ratio", "backward / forward", "act MiB", "ratio",
                              "concat MiB", "ms fwd+bwd"], rows))
        out.extend(notes)
    if "growth" in d0:
        depths = d0["growth"]["depths"]
        rows = [[_name(d), _law(d["growth"]["params"]), _law(d["growth"]["flops"]),
                 _law(d["growth"]["activation_bytes"])] for d in data]
        out.append(f"\ngrowth with depth over {depths[0]}..{depths[-1]} ({len(depths)} depths)\n"
                   + table(["skip", "params", "FLOPs", "activation memory"], rows))
    return "\n".join(out)


def run(args: argparse.Namespace) -> None:
    if args.params is not None and args.flops is not None:
        raise UsageError("--params and --flops: give one budget, not both")
    specs = specs_from_args(args)
    if args.vary != "width" and not any(args.vary in sizing_options(spec) for spec in specs):
        raise UsageError(f"--vary: none of {', '.join(args.skip)} has a {args.vary} to vary; use --vary width")
    depths = parse_depths(args.depths) if args.depths else None
    if args.plot and depths is None:
        depths = list(range(1, max(specs[0].depth, 8) + 1))
    data = [cost_summary(spec, batch=args.batch, measure=args.measure, depths=depths, params=args.params,
                         flops=args.flops, vary=args.vary if args.vary in sizing_options(spec) else "width")
            for spec in specs]
    if args.plot:
        d0 = data[0]["spec"]
        plot_growth({d["skip"]: d["growth_curve"] for d in data}, args.plot,
                    title=f"{d0['model']}, width {d0['width']}, norm {d0['norm']}: cost vs depth (dashed: not buildable)")
    for d in data:
        d.pop("growth_curve", None)
    emit(args, data, render(data, args) + (f"\nplot written to {args.plot}" if args.plot else ""))


def add_parser(sub) -> None:
    sizing = sizing_option_names()
    p = sub.add_parser("cost", help="parameters, FLOPs, activation memory per strategy",
                       description="Analytic cost per strategy; --measure compares with the built model.")
    add_model_args(p)
    g = p.add_argument_group("cost")
    g.add_argument("--batch", type=int, default=32, help="batch size for memory figures (default: 32)")
    g.add_argument("--measure", action="store_true",
                   help="also build each model and measure (params by numel, FLOPs by torch's flop counter, "
                        "saved activations by autograd hooks, wall time)")
    g.add_argument("--depths", metavar="a..b", help="fit growth laws over depths: a..b, a..b:step or a,b,c")
    g.add_argument("--plot", metavar="FILE.png", help="plot cost vs depth per strategy (log-log)")
    g.add_argument("--per-block", action="store_true", help="show the per-block table")
    b = p.add_argument_group("matched budget")
    b.add_argument("--params", type=int, help="size each strategy to this many parameters")
    b.add_argument("--flops", type=int, help="size each strategy to this many FLOPs per sample")
    b.add_argument("--vary", choices=("width", *sizing), default="width",
                   help="what the budget sizes: width, or a sizing option of the strategies that declare it "
                        "(dense's growth); the others vary their width (default: width)")
    add_json_flag(p)
    p.set_defaults(run=run)
