"""``skiplab gradients``: per-block gradient and signal statistics, at init and through
training, for each strategy (see :mod:`skiplab.gradients`)."""

from __future__ import annotations

import argparse
import time
from ..datasets import DATASETS, dataset_ref, load_dataset
from ..gradient_plot import check_plot_path, plot_gradients
from ..gradients import DEFAULT_LR, OPTIMIZERS, GradientConfig, GradientReport, check_inputs, measure_gradients
from ..progress import ProgressBar
from ..block_gradients import BlockGradients, block_gradients
from ..textable import table
from ..user_model import DTYPES, check_accepts, example_input, load_model
from .common import UsageError, add_json_flag, add_model_args, emit, specs_for_data

# Seconds of silence before the progress bar appears: quick runs print only their answer.
QUIET_SECONDS = 2.0


def run(args: argparse.Namespace) -> None:
    if args.target is not None:
        return run_user_model(args)
    if args.blocks is not None or args.dtype is not None:
        flag = "--blocks" if args.blocks is not None else "--dtype"
        raise UsageError(f"{flag}: applies to a model from a file; give FILE.py:FACTORY before the flags")
    # Validate everything before the first (possibly long) measurement.
    data = load_dataset(dataset_ref(args.dataset))
    specs = specs_for_data(args, data)
    config = GradientConfig(seeds=args.seeds, batches=args.batches, batch_size=args.batch_size,
                            steps=args.steps, checkpoints=args.checkpoints, optimizer=args.optimizer,
                            lr=args.lr)
    if args.plot is not None:
        check_plot_path(args.plot)
    for spec in specs:
        check_inputs(spec, data, config)
    bar = ProgressBar(len(specs) * config.seeds * len(config.checkpoint_steps()), label="gradients",
                      enabled=not args.json)
    done = 0

    def progress(note: str) -> None:
        nonlocal done
        done += 1
        if time.monotonic() - bar.start >= QUIET_SECONDS:
            bar.update(done, note)

    try:
        reports = [measure_gradients(spec, data, config, progress) for spec in specs]
    finally:
        bar.close()
    if args.plot is not None:
        plot_gradients(reports, args.plot)
    emit(args, [r.to_dict() for r in reports], render(reports, data.name))


def run_user_model(args: argparse.Namespace) -> None:
    """``skiplab gradients FILE.py:FACTORY --blocks PATTERN --input-shape ...``."""
    if args.blocks is None:
        raise UsageError("--blocks: say which modules are the blocks, e.g. --blocks 'layers.*' "
                         "(a dotted-name pattern; * stays within one name)")
    if args.input_shape is None:
        raise UsageError("--input-shape: give the per-sample input shape of the model, e.g. 3,32,32")
    if args.steps or args.plot is not None:
        raise UsageError(f"{'--steps' if args.steps else '--plot'}: only for skiplab's own models; "
                         f"a model from a file is measured at init")
    dtype = args.dtype or "float32"
    example_input(args.input_shape, args.batch_size, dtype, args.vocab)  # bad shapes fail here, once
    check_accepts(load_model(args.target), example_input(args.input_shape, 2 if args.batch_size > 1 else 1, dtype,
                                                         args.vocab))
    result = block_gradients(
        lambda seed: load_model(args.target, seed=seed),
        lambda seed, i: example_input(args.input_shape, args.batch_size, dtype, args.vocab,
                                      seed=1000 * seed + i),
        args.blocks, seeds=args.seeds, batches=args.batches)
    emit(args, {"target": args.target, "seeds": args.seeds, "batches": args.batches,
                "batch_size": args.batch_size, **result.to_dict()}, render_blocks(args, result))


def render_blocks(args: argparse.Namespace, r: BlockGradients) -> str:
    head = (f"gradients at init: {args.target}, blocks {args.blocks!r} ({len(r.blocks)} modules); random inputs "
            f"{tuple(args.input_shape)}, {args.seeds} seeds x {args.batches} batches of {args.batch_size}, "
            f"loss = the model's own or cross-entropy on random labels, train mode")
    w = r.weight_grad_norm
    rows = [[name, w.mean[i], w.min[i], w.max[i]] for i, name in enumerate(r.blocks)]
    return "\n".join([head, table(["block", "||dL/dW|| mean", "min", "max"], rows),
                      f"first/last = {'-' if r.first_last_ratio is None else format(r.first_last_ratio, '.4g')} "
                      f"(block {r.blocks[0]}'s weight-gradient norm over {r.blocks[-1]}'s; the norm of all "
                      f"of a block's parameter gradients together)"])


# -- the readable table -----------------------------------------------------------------
def _sample_blocks(depth: int, count: int = 5) -> list[int]:
    """Up to ``count`` block indices spread from 1 to ``depth``, both ends included."""
    if depth <= count:
        return list(range(1, depth + 1))
    return sorted({1 + round((depth - 1) * i / (count - 1)) for i in range(count)})


def render(reports: list[GradientReport], dataset: str) -> str:
    s, c = reports[0].spec, reports[0].config
    head = (f"gradients at init: {s.model}, depth {s.depth}, width {s.width}, norm {s.norm}, init {s.init}, "
            f"activation {s.activation}; {dataset} train set, {c.seeds} seeds x {c.batches} batches of "
            f"{c.batch_size}, loss = cross-entropy, train mode")
    rows = []
    for r in reports:
        d = r.init.to_dict()
        spread = ("-" if d["first_last_ratio_min"] is None
                  else f"{d['first_last_ratio_min']:.3g}..{d['first_last_ratio_max']:.3g}")
        rows.append([r.spec.skip, r.init.first_last_ratio, spread, r.init.max_min_ratio,
                     r.init.vanishing_block, d["activation_rms"][-1] if d["activation_rms"] else None,
                     r.init.loss])
    out = [head, table(["skip", "first/last", "(min..max)", "max/min", "vanishing block",
                        "last-state RMS", "loss"], rows)]
    blocks = _sample_blocks(s.blocks)
    if blocks:
        cols = ["skip"] + [f"block {l}" for l in blocks]

        def pick(values: list[float]) -> list[float]:
            return [values[l - 1] for l in blocks]

        out.append("weight-gradient norm ||dL/dW_l|| (mean)\n" + table(
            cols, [[r.spec.skip] + pick(r.init.weight_grad_norm.mean) for r in reports]))
        out.append("state RMS after the block (mean)\n" + table(
            cols, [[r.spec.skip] + pick(r.init.activation_rms.mean) for r in reports]))
        out.append("branch share ||b|| / (||merge|| + ||b||) of dL/d(stream): through the branch vs the "
                   "merge's own path (mean)\n" + table(
                       cols, [[r.spec.skip] + pick(r.init.branch_share.mean) for r in reports]))
        gains = [r for r in reports if r.init.composite_gain_forward is not None]
        if gains:
            out.append("composite residual gain prod H_res after the block (mHC's Fig. 3): max abs row sum "
                       "forward / column sum backward, largest over tokens (mean over samples)\n" + table(
                           cols, [[f"{r.spec.skip} {way}"] + pick(getattr(r.init, f"composite_gain_{way}").mean)
                                  for r in gains for way in ("forward", "backward")]))
    out.append(f"first/last = block 1's weight-gradient norm over block {s.blocks}'s (mean over samples; "
               f"min..max of the per-sample ratio; - where the last is 0, as for rezero at init); "
               f"vanishing block = first block below {c.vanish_threshold:g} x the last's")
    for r in reports:
        if r.trajectory is None:
            continue
        gain = r.init.composite_gain_forward is not None
        rows = [[snap.step, snap.loss, snap.accuracy, snap.first_last_ratio, snap.max_min_ratio,
                 snap.vanishing_block]
                + ([snap.composite_gain_forward.mean[-1], snap.composite_gain_backward.mean[-1]] if gain else [])
                for snap in r.trajectory]
        out.append(f"{r.spec.skip}: through {c.steps} steps of {c.optimizer}, lr {c.learning_rate:g} "
                   f"(statistics on the same batches as at init)\n"
                   + table(["step", "loss", "accuracy", "first/last", "max/min", "vanishing block"]
                           + (["gain fwd (last)", "gain bwd (last)"] if gain else []), rows))
    return "\n\n".join(out)


# -- arguments --------------------------------------------------------------------------
def add_parser(sub) -> None:
    p = sub.add_parser(
        "gradients", help="per-block gradient and signal statistics, at init and through training",
        description="Measure, per block and for each strategy, the weight-gradient norm, the gradient "
                    "of the block's new features, the state's RMS and (additive skips) the share of "
                    "the gradient that flows through the branch rather than the identity; mean and "
                    "min..max over seeds and batches.")
    p.add_argument("target", metavar="FILE.py:FACTORY", nargs="?", default=None,
                   help="measure your own model instead: FACTORY() from FILE.py, with --blocks and --input-shape")
    add_model_args(p)
    u = p.add_argument_group("your own model (FILE.py:FACTORY)")
    u.add_argument("--blocks", metavar="PATTERN", default=None,
                   help="the modules whose weight-gradient norms are reported, by dotted name; * matches "
                        "within one name, e.g. 'transformer.h.*' or 'stages.*.*'")
    u.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="input dtype; an integer dtype draws token ids in [0, --vocab) (default: float32)")
    g = p.add_argument_group("measurement")
    g.add_argument("--dataset", default="mnist1d",
                   help=f"data whose train set feeds the batches: {', '.join(DATASETS)} (default: mnist1d)")
    g.add_argument("--seeds", type=int, default=GradientConfig.seeds,
                   help=f"independently initialised models, seeds 0..S-1 (default: {GradientConfig.seeds})")
    g.add_argument("--batches", type=int, default=GradientConfig.batches,
                   help=f"measurement batches per seed (default: {GradientConfig.batches})")
    g.add_argument("--batch-size", type=int, default=GradientConfig.batch_size,
                   help=f"samples per batch (default: {GradientConfig.batch_size})")
    t = p.add_argument_group("training (to follow the statistics through --steps)")
    t.add_argument("--steps", type=int, default=0, help="training steps; 0 = at init only (default: 0)")
    t.add_argument("--checkpoints", type=int, default=GradientConfig.checkpoints,
                   help=f"measurements spread over the steps, besides step 0 "
                        f"(default: {GradientConfig.checkpoints})")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=GradientConfig.optimizer,
                   help=f"(default: {GradientConfig.optimizer})")
    t.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    o = p.add_argument_group("output")
    o.add_argument("--plot", metavar="FILE.png", default=None,
                   help="write the figure: gradient norm per block, one line per strategy (.png, .svg, .pdf)")
    add_json_flag(o)
    p.set_defaults(run=run)
