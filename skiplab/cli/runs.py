"""``skiplab runs list|export`` and ``skiplab report``: read the store."""

from __future__ import annotations

import argparse

from ..datasets import display_name
from ..compare_stores import compare_stores
from ..export import export_mlflow, export_tensorboard
from ..export.targets import ACCEPTED, check_targets
from ..metrics import BPC, metric_of
from ..report import write_report
from ..report.docs import write_docs_page
from ..results import aggregate, pct
from ..store import Store
from ..textable import table
from .common import UsageError, add_json_flag, emit


def _tokens(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def run_list(args: argparse.Namespace) -> None:
    with Store(args.out, create=False) as store:
        runs = store.runs()
    # Language-model runs are judged by validation bits per character (skiplab.metrics): a
    # bpc column, and the dataset and training speed, appear when the store holds any.
    lm = metric_of(runs) is BPC
    if args.all:
        data = [{"id": r["id"], "spec_hash": r["spec_hash"], "seed": r["seed"], "status": r["status"],
                 "group": r["spec"].get("group", ""), "dataset": r["spec"]["dataset"],
                 "skip": r["spec"]["model"]["skip"],
                 "depth": r["spec"]["model"]["depth"], "width": r["spec"]["model"]["width"],
                 "test_accuracy": r["result"].get("test_accuracy"), "val_bpc": r["result"].get("val_bpc"),
                 "tokens_per_second": r["result"].get("tokens_per_second"),
                 "seconds": r["result"].get("seconds")}
                for r in runs]
        head = ["id", "group", "skip", "depth", "width", "seed", "status", "test acc", "seconds"]
        rows = [[d["id"], d["group"], d["skip"], d["depth"], d["width"], d["seed"], d["status"],
                 d["test_accuracy"], d["seconds"]] for d in data]
        if lm:
            head[1:1], head[-1:-1] = ["dataset"], ["val bpc", "tokens/s"]
            rows = [[row[0], display_name(d["dataset"]), *row[1:-1], BPC.format(d["val_bpc"]),
                     _tokens(d["tokens_per_second"]), row[-1]] for row, d in zip(rows, data)]
        text = table(head, rows)
    else:
        data = aggregate(runs)
        head = ["group", "skip", "depth", "width", "params", "seeds", "diverged", "test accuracy %"]
        rows = [[d["group"], d["skip"], d["depth"], d["width"], d["params"], d["seeds"], d["diverged"],
                 pct(d["test_accuracy_mean"], d["test_accuracy_std"], d["complete"])] for d in data]
        if lm:
            head[1:1], head[len(head):] = ["dataset"], ["val bpc", "tokens/s"]
            rows = [[row[0], display_name(d["dataset"]), *row[1:],
                     BPC.text(d["score_mean"], d["score_std"], d["complete"]) if d["metric"] == BPC.key else "-",
                     _tokens(d["tokens_per_second_mean"])] for row, d in zip(rows, data)]
        text = table(head, rows)
    emit(args, data, text + f"\n{len(runs)} runs in {args.out}/runs.db")


def run_export(args: argparse.Namespace) -> None:
    """Each export asked for, in turn: CSV, TensorBoard, MLflow (skiplab.export)."""
    if not (args.csv or args.tensorboard or args.mlflow):
        raise UsageError("say where to export: --csv FILE, --tensorboard DIR and/or --mlflow URI")
    if args.experiment is not None and not args.mlflow:
        raise UsageError("--experiment names the MLflow experiment; give --mlflow URI too")
    check_targets(args.out, args.csv, args.tensorboard, args.mlflow, args.experiment)  # all, before the first is written
    data: dict = {}
    lines = []
    if args.csv:
        with Store(args.out, create=False) as store:
            n = store.export_csv(args.csv)
        data.update({"rows": n, "csv": args.csv})
        lines.append(f"{n} runs written to {args.csv}")
    if args.tensorboard:
        tb = export_tensorboard(args.out, args.tensorboard)
        data["tensorboard"] = tb
        lines.append(f"TensorBoard: {tb['runs']} runs ({tb['scalars']:,} scalar points) in {tb['logdir']}; "
                     f"view: tensorboard --logdir {tb['logdir']}")
    if args.mlflow:
        ml = export_mlflow(args.out, args.mlflow, args.experiment)
        data["mlflow"] = ml
        lines.append(f"MLflow: experiment {ml['experiment']!r}: {ml['added']} runs added, {ml['unchanged']} unchanged, "
                     f"{ml['replaced']} replaced; report: {ml['report']}; "
                     f"view: mlflow ui --backend-store-uri {ml['tracking_uri']}")
    emit(args, data, "\n".join(lines))


def run_compare(args: argparse.Namespace) -> None:
    """Two stores of the same runs (another machine, engine or version), cell by cell."""
    c = compare_stores(args.a, args.b, margin=args.margin)
    metric = metric_of([{"metric": c["metric"]}])
    head = ["group", "skip", "depth", "width", f"{args.a}", f"{args.b}", f"diff ({c['unit']})", "p", "p (Holm)"]
    if args.margin is not None:
        head.append("equal within margin")
    rows = []
    for d in c["cells"]:
        row = [d["group"], d["skip"], d["depth"], d["width"], metric.text(d["mean_a"], d["std_a"], d["n_a"]),
               metric.text(d["mean_b"], d["std_b"], d["n_b"]), f"{d['diff']:+.{metric.digits}f}",
               f"{d['p']:.3f}", f"{d['p_holm']:.3f}" + (" differ" if d["differ"] else "")]
        if args.margin is not None:
            row.append("yes" if d["equivalent"] else "not shown")
        rows.append(row)
    lines = [table(head, rows), c["summary"]]
    if c["untested"]:
        lines.append(f"{len(c['untested'])} configurations in common have fewer than 2 scores a side: not tested")
    if c["only_a"] or c["only_b"]:
        lines.append(f"in one store only: {len(c['only_a'])} configurations in {args.a}, "
                     f"{len(c['only_b'])} in {args.b}")
    emit(args, c, "\n".join(lines))


def _margin(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def run_report(args: argparse.Namespace) -> None:
    if args.format == "docs" and not args.to:
        raise UsageError("--format docs: name the page's folder with --to (e.g. --to docs/results/study)")
    if args.format != "docs" and (args.to or args.title):
        raise UsageError(f"{'--to' if args.to else '--title'}: only with --format docs")
    with Store(args.out, create=False) as store:
        if args.format == "docs":
            files = write_docs_page(store, args.to, title=args.title)
            emit(args, {name: str(path) for name, path in files.items()},
                 f"docs page: {files['index.md']}\nalso: {len(files) - 2} figures in figures/, listed in {files['../index.md']}")
            return
        files = write_report(store, args.out)
    emit(args, {name: str(path) for name, path in files.items()},
         f"report: {files['report.html']}\nalso: report.md, {len(files) - 2} figure files in figures/ (PNG and SVG)")


def add_parser(sub) -> None:
    p = sub.add_parser("runs", help="list or export stored runs", description="Read the results store.")
    rs = p.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=type(p))
    rs.required = True
    lp = rs.add_parser("list", help="one line per configuration (mean +- std over seeds); --all: per run")
    lp.add_argument("--out", default="skiplab-out", help="results folder (default: %(default)s)")
    lp.add_argument("--all", action="store_true", help="one line per run")
    add_json_flag(lp)
    lp.set_defaults(run=run_list)
    ep = rs.add_parser("export", help="write every run to a CSV file, TensorBoard and/or MLflow",
                       description="Export every stored run: a CSV file (one row per run), TensorBoard event "
                                   "files (curves as scalars, the spec as hparams) and/or an MLflow store "
                                   "(params, metric histories, provenance tags, the report as an artifact). "
                                   "Give one or more of --csv, --tensorboard, --mlflow.")
    ep.add_argument("--out", default="skiplab-out", help="results folder (default: %(default)s)")
    ep.add_argument("--csv", metavar="FILE", help="CSV file to write (in an existing folder)")
    ep.add_argument("--tensorboard", metavar="DIR",
                    help="TensorBoard log folder (in an existing folder): one run per stored run, DIR/GROUP/SKIP-depthD-widthW-HASH-seedS "
                         "(needs skiplab[tensorboard])")
    ep.add_argument("--mlflow", metavar="URI",
                    help=f"local MLflow store: {ACCEPTED} (a bare word names an existing folder; ./NAME makes a new one); a folder gets FOLDER/mlflow.db and FOLDER/mlartifacts; "
                         "only the last folder of a path is created; exporting again adds only what is new "
                         "(needs skiplab[mlflow])")
    ep.add_argument("--experiment", metavar="NAME",
                    help="MLflow experiment to write into (default: the results folder's name)")
    add_json_flag(ep)
    ep.set_defaults(run=run_export)
    cp = rs.add_parser("compare", help="two stores of the same runs, cell by cell (Welch's test, Holm-adjusted)",
                       description="Compare two results folders that hold the same configurations (the same "
                                   "study on another machine, engine or version): per configuration, the two "
                                   "sets of per-seed scores by Welch's t-test, the p-values of all cells "
                                   "adjusted by Holm's method. Another CPU rounds differently, so results are "
                                   "expected to differ in their digits but not beyond their spread.")
    cp.add_argument("a", metavar="DIR_A", help="first results folder")
    cp.add_argument("b", metavar="DIR_B", help="second results folder")
    cp.add_argument("--margin", type=_margin, metavar="M",
                    help="also test agreement within M (accuracy points, or bpc) by two one-sided tests; "
                         "without it, a cell that does not differ is only 'not separated'")
    add_json_flag(cp)
    cp.set_defaults(run=run_compare)

    p = sub.add_parser("report", help="rebuild DIR/report.html, report.md and figures/ from the store",
                       description="Rebuild the report from the results store: DIR/report.html (one "
                                   "self-contained page), DIR/report.md, and every figure as PNG and SVG "
                                   "in DIR/figures/.")
    p.add_argument("--out", default="skiplab-out", help="results folder (default: %(default)s)")
    p.add_argument("--format", choices=("report", "docs"), default="report",
                   help="report: DIR/report.html, report.md, figures/; docs: one result page for the documentation "
                        "site, with the machine, the command and the date (default: %(default)s)")
    p.add_argument("--to", default=None, metavar="FOLDER",
                   help="with --format docs: the page's folder, e.g. docs/results/study (FOLDER/index.md and "
                        "FOLDER/figures/; the parent folder must exist, and its index.md lists the page)")
    p.add_argument("--title", default=None, help="with --format docs: the page's title (default: from the plan)")
    add_json_flag(p)
    p.set_defaults(run=run_report)
