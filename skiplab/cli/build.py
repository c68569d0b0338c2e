"""``skiplab build``: the structure and parameters per part of each strategy's model."""

from __future__ import annotations

import argparse
from typing import Any

from ..model import build_model
from ..textable import table
from .common import add_json_flag, add_model_args, emit, specs_from_args


def run(args: argparse.Namespace) -> None:
    data = [build_model(spec, seed=0).structure() for spec in specs_from_args(args)]
    emit(args, data, render(data))


def render(data: list[dict[str, Any]]) -> str:
    out = []
    for d in data:
        p = d["params"]
        shape = "x".join(map(str, d["input_shape"]))
        head = (f"{d['skip']}: {d['model']}, depth {d['depth']}, width {d['width']}, norm {d['norm']}, "
                f"bias {'on' if d['bias'] else 'off'}, init {d['init']}")
        rows = [["stem", f"{shape} -> {d['width']}", p["stem"]]]
        rows += [[b["name"], f"{b['in_width']} -> {b['out_width']}"
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


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="build models; show structure and parameters per part",
                       description="Build one model per strategy and show its structure and parameters.")
    add_model_args(p)
    add_json_flag(p)
    p.set_defaults(run=run)
