"""``skiplab train``: one configuration per strategy, N seeds, results in the store."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from ..cost import match_budget
from ..datasets import dataset_ref, load_dataset
from ..metrics import BPC, metric_of
from ..progress import ProgressBar, StepRate
from ..results import pct
from ..run.config import DEVICES, ENGINES, PRECISIONS, SCHEDULES, RunSpec, TrainConfig
from ..run.loop import preflight
from ..run.optim import OPTIMIZERS
from ..run.runner import group_key, run_all
from ..stats import mean_std
from ..store import Store
from ..textable import table
from .common import UsageError, add_json_flag, add_model_args, emit, specs_for_data

_T = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def add_step_args(g) -> None:
    """The optimisation flags every training command takes (``train``, ``compare``): batch
    size, optimiser, learning rate and schedule, weight decay, clipping, warm-up, device."""
    g.add_argument("--batch-size", type=int, default=_T["batch_size"], help="(default: %(default)s)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=_T["optimizer"], help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=_T["lr"], help="peak learning rate (default: %(default)s)")
    g.add_argument("--schedule", choices=SCHEDULES, default=_T["schedule"], help="(default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=_T["weight_decay"], help="(default: %(default)s)")
    g.add_argument("--grad-clip", type=float, default=_T["grad_clip"], help="max grad norm, 0 = off (default: 0)")
    g.add_argument("--warmup", type=int, default=_T["warmup"],
                   help="linear learning-rate warm-up steps, then the schedule; 0 = off (default: 0)")
    g.add_argument("--device", choices=DEVICES, default=_T["device"], help="(default: %(default)s)")


def add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--dataset", default="mnist1d",
                   help="mnist1d | digits | pydoc (text) | a .txt/.npz/.csv file | a CIFAR-10 or MNIST folder "
                        "(default: %(default)s)")
    g.add_argument("--label-column", default="label", help="label column of a .csv dataset (default: %(default)s)")
    g.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 (default: %(default)s)")
    g.add_argument("--epochs", type=float, default=_T["epochs"],
                   help="passes over the training set; a fraction trains on that share of one pass (default: %(default)s)")
    add_step_args(g)
    g.add_argument("--engine", choices=ENGINES, default=_T["engine"],
                   help="batched: a configuration's seeds train as one vmapped computation, same numbers within "
                        "1e-4; loop: one seed at a time (default: %(default)s; docs/engines.md)")
    add_accelerator_args(g)
    b = p.add_argument_group("matched budget")
    b.add_argument("--params", type=int, help="size each strategy's width to this many parameters")
    b.add_argument("--flops", type=int, help="size each strategy's width to this many FLOPs per sample")
    p.add_argument("--out", default="skiplab-out", help="results store folder (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="runs in parallel, one process each (default: min(cores, runs))")


def add_accelerator_args(g) -> None:
    """--compile and --precision (train and study)."""
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step's forward and backward; the same results up to rounding, "
                        "so not part of a run's identity; the compile time is reported; falls back to eager, "
                        "saying why, where compiling fails (docs/engines.md)")
    g.add_argument("--precision", choices=PRECISIONS, default=_T["precision"],
                   help="bf16: the forward under bf16 autocast, the loss in fp32; CUDA only; part of a run's "
                        "identity (default: %(default)s)")


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(optimizer=args.optimizer, lr=args.lr, schedule=args.schedule, batch_size=args.batch_size,
                       epochs=args.epochs, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                       warmup=args.warmup, device=args.device, engine=args.engine, compile=args.compile,
                       precision=args.precision)


def run(args: argparse.Namespace) -> None:
    if args.params is not None and args.flops is not None:
        raise UsageError("--params and --flops: give one budget, not both")
    if args.seeds < 1:
        raise UsageError(f"--seeds: must be >= 1, got {args.seeds}")
    cfg = train_config(args)
    dataset = dataset_ref(args.dataset)  # a relative path, made absolute once: resumable from anywhere
    data = load_dataset(dataset, args.label_column)
    # The dataset fills in what the user left out; what the user gave is checked, not overwritten.
    specs = specs_for_data(args, data)
    if args.params is not None or args.flops is not None:
        specs = [match_budget(s, params=args.params, flops=args.flops).spec for s in specs]
    runs = [RunSpec(s, cfg, dataset, seed, "train", args.label_column)
            for s in specs for seed in range(args.seeds)]
    if args.workers is not None and args.workers < 1:  # checked before `or`, which would turn 0 into the default
        raise UsageError(f"--workers: must be >= 1, got {args.workers}")
    tasks = len({group_key(r) for r in runs})  # a configuration's seeds are one task (batched)
    workers = args.workers or min(os.cpu_count() or 1, tasks)
    preflight(runs, load=lambda *_: data)  # before the store is opened: a bad call stores nothing
    bar = ProgressBar(len(runs), "train", enabled=not args.json)
    with Store(args.out) as store:
        before = store.finished_keys()
        done, rate = [len([r for r in runs if (r.spec_hash, r.seed) in before])], StepRate()
        flight, mine = [0], set()

        def on_done(n, total, o):  # a run stored: the bar counts it
            mine.add((o["spec_hash"], o["seed"]))
            done[0] = len(runs) - total + n
            rate.reset()
            bar.update(done[0], f"{o['spec']['model']['skip']} seed {o['seed']}: {o['status']}; "
                                f"{flight[0]} in flight")

        def on_step(step, total, loss, flying):  # in this process only: every step shows
            if step <= 1:
                rate.reset()
            bar.update(done[0], f"{flying} in flight, step {step}/{total}, "
                                f"{rate.tick(step * flying):,.0f} seed-steps/s, loss {loss:.3f}")
        # one scheduler for every command (skiplab.run.scheduler): each run claimed in the store,
        # so two commands on one --out train each run once, inline or in worker processes
        run_all(runs, store, workers=workers, on_done=on_done, on_step=on_step,
                on_flight=lambda n: flight.__setitem__(0, n))
        bar.update(len(runs), "done", force=True)
        bar.close()
        stored = {(r["spec_hash"], r["seed"]): r for r in store.runs()}
    # new: trained and stored by this command; reused: in the store before it began;
    # elsewhere: stored meanwhile by another command on the same store (skiplab.run.scheduler)
    # (a row the store could not read is left out here; Store.runs warned, naming it)
    out = [{**stored[k], "stored": "new" if k in mine else "reused" if k in before else "elsewhere"}
           for k in ((s.spec_hash, s.seed) for s in runs) if k in stored]
    data_out = summarize(out, specs)
    emit(args, data_out, render(data_out, args.out))


def summarize(out: list[dict[str, Any]], specs) -> list[dict[str, Any]]:
    result = []
    for spec in specs:
        mine = [o for o in out if o["spec"]["model"] == spec.to_dict()]
        metric = metric_of(mine)  # val_bpc for a language model, else test_accuracy
        accs = [o["result"]["test_accuracy"] for o in mine if o["status"] == "complete"]
        mean, std = mean_std(accs)  # std None with one seed: no spread to show
        scores = [o["result"].get(metric.key) for o in mine if o["status"] == "complete"]
        score_mean, score_std = mean_std(scores)
        result.append({
            "skip": spec.skip, "model": spec.model, "depth": spec.depth, "width": spec.width,
            "options": dict(spec.options), "params": mine[0]["result"].get("params") if mine else None,
            "runs": [{"seed": o["result"]["seed"], "status": o["status"],
                      "test_accuracy": o["result"].get("test_accuracy"),
                      "train_accuracy": o["result"].get("train_accuracy"),
                      "val_bpc": o["result"].get("val_bpc"),
                      "tokens_per_second": o["result"].get("tokens_per_second"),
                      "seconds": o["result"].get("seconds"), "message": o["result"].get("message", ""),
                      "engine": o["result"].get("trained_by"),
                      "compile_seconds": o["result"].get("compile_seconds"),
                      "stored": o["stored"]} for o in mine],
            "summary": {"test_accuracy_mean": mean, "test_accuracy_std": std,
                        "complete": len(accs), "seeds": len(mine),
                        "metric": metric.key, "score_mean": score_mean, "score_std": score_std,
                        "tokens_per_second_mean": mean_std([r["result"].get("tokens_per_second")
                                                            for r in mine])[0]},
        })
    return result


def render(data: list[dict[str, Any]], out: str) -> str:
    rows = []
    lm = any(d["summary"]["metric"] == BPC.key for d in data)  # a language model: judged by bpc
    for d in data:
        s = d["summary"]
        statuses = ", ".join(sorted({r["status"] for r in d["runs"]}))
        secs = [r["seconds"] for r in d["runs"] if r["seconds"]]
        if lm:
            score = [BPC.text(s["score_mean"], s["score_std"], s["complete"]),
                     "-" if s["tokens_per_second_mean"] is None else f"{s['tokens_per_second_mean']:,.0f}"]
        else:
            score = [pct(s["test_accuracy_mean"], s["test_accuracy_std"], s["complete"], sign=True)]
        rows.append([d["skip"], d["depth"], d["width"], d["params"], *score, f"{s['complete']}/{s['seeds']}",
                     statuses, sum(secs) if secs else None])
    notes = [f"{d['skip']} seed {r['seed']}: {r['status']}: {r['message']}" for d in data for r in d["runs"]
             if r["status"] != "complete"]
    notes += [f"{d['skip']} seed {r['seed']}: trained eagerly: {r['engine'].split('compile failed: ', 1)[1]}"
              for d in data for r in d["runs"] if "compile failed: " in (r.get("engine") or "")]
    compiled = []  # the first step's time less the median step's (RunResult.compile_seconds)
    for d in data:
        runs = [r for r in d["runs"] if r.get("compile_seconds") is not None]
        batched = [r for r in runs if (r.get("engine") or "").startswith("batched")]
        if batched:  # one compile for the batch, the same number in each of its seeds' results
            compiled.append(f"{d['skip']} {batched[0]['compile_seconds']:.1f} (one batch of {len(batched)} seeds)")
        compiled += [f"{d['skip']} seed {r['seed']} {r['compile_seconds']:.1f}" for r in runs if r not in batched]
    if compiled:
        notes.append("compile time (first step less the median step), s: " + ", ".join(compiled))
    score_head = ["val bpc (mean +- std)", "tokens/s"] if lm else ["test accuracy (mean +- std)"]
    return "\n".join([table(["skip", "depth", "width", "params", *score_head, "seeds ok",
                             "status", "seconds"], rows), *notes, f"results stored in {out}/runs.db"])


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one configuration per strategy over seeds",
                       description="Train each strategy's model over seeds; results go to the store.")
    add_model_args(p)
    add_train_args(p)
    add_json_flag(p)
    p.set_defaults(run=run)
