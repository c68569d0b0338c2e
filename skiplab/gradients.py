"""Gradient and signal-flow diagnostics per block, at init and through training.

The seed answers claim that an additive skip passes the gradient straight through,

    dL/ds_l = dL/ds_L * (1 + d/ds_l sum_i F_i),

so that even the first block of a deep residual net gets a useful gradient, while a
deep plain net loses it. This module measures that claim on a built model, block by
block:

* ``weight_grad_norm``: ||dL/dW_l|| of block l's transform layer (``branch.layer``);
  what an optimizer step actually sees.
* ``feature_grad_norm``: ||dL/df_l|| for the block's new features f_l (branch output).
* ``activation_rms``: RMS of the state s_l after block l, the forward half of signal
  propagation (Brock et al., "Characterizing signal propagation", arXiv 2101.08692).
* ``branch_share`` (every strategy): how much of dL/d(stream) arrives through the
  sublayer's branch rather than through the merge's own path (the identity of add, the
  carried channels of a concatenation): the "dF/dx" versus the "1" of the formula above.
  See :class:`_Probe` for the definition.
* ``composite_gain_forward`` / ``_backward`` (hyper, mhc): the gain of the composite
  residual mapping prod_l H_res,l after each sublayer, the largest absolute row (column)
  sum over tokens (mHC, arXiv 2512.24880, Fig. 3): far above 1, the streams amplify the
  signal (forward) or the gradient (backward) with depth.

Every statistic is measured on several batches of several independently initialised
models (seeds) and reported as mean, min and max per block, so one lucky init does not
decide. Norms are Frobenius norms of gradients of the *batch-mean* loss, so they depend
on the batch size (the noise part shrinks as 1/sqrt(B)): compare runs at one batch size.
The model is in ``train()`` mode (batch norm uses batch statistics) and the loss is
cross-entropy (plus ``aux_weight`` x each auxiliary head's, when the spec has them).

Evidence of speed (``benchmarks/gradients_timing.py``): MLP depth 100, width 100, plain +
add + dense, the default 3 seeds x 2 batches of 128, on a 2-core CPU with torch 2.13:
4.5 s (median of 5; dense 3.7 s of it, its blocks hold 50.5M weights), 7 to 12 s for the
whole ``skiplab gradients`` command with imports, peak memory 1.1 GB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .datasets import Dataset, load_mnist1d
from .errors import UserError
from .fit import check_fits
from .model import build_model
from .objective import flat_logits, loss_and_logits
from .run.optim import make_optimizer
from .spec import ModelSpec
from .validate import choice, integer, number

OPTIMIZERS = ("adam", "sgd")
# Default learning rates: Adam's 1e-3 is Kingma & Ba's (arXiv 1412.6980) default; 0.05
# for SGD is a common starting point for small MLPs on normalised inputs.
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}


# -- Setup ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GradientConfig:
    """How to measure. Every field is checked on creation (SpecError, a ValueError, naming it)."""

    seeds: int = 3  # models initialised with seeds 0..seeds-1; each also draws its own batches
    batches: int = 2  # measurement batches per seed (drawn without replacement from the train set)
    batch_size: int = 128  # samples per batch
    steps: int = 0  # training steps to follow the statistics through; 0 = at init only
    checkpoints: int = 4  # measurements evenly spaced over the steps, besides step 0
    optimizer: str = "adam"  # adam | sgd (plain SGD, no momentum)
    lr: float | None = None  # None = DEFAULT_LR[optimizer]
    # A block "has vanished" when its weight gradient is below this fraction of the last
    # block's: a step of an optimizer like SGD then barely moves it.
    vanish_threshold: float = 1e-6

    def __post_init__(self) -> None:
        for name, minimum in (("seeds", 1), ("batches", 1), ("batch_size", 1), ("steps", 0),
                              ("checkpoints", 1)):
            integer(name, getattr(self, name), minimum)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.lr is not None:
            number("lr", self.lr, 0.0, strict=True)
        number("vanish_threshold", self.vanish_threshold, 0.0, strict=True)

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    def checkpoint_steps(self) -> list[int]:
        """Steps at which statistics are taken: 0, then ``checkpoints`` evenly spaced."""
        if self.steps == 0:
            return [0]
        return sorted({round(self.steps * i / self.checkpoints) for i in range(self.checkpoints + 1)})


# -- Probes -----------------------------------------------------------------------------
def _norm(t: torch.Tensor) -> float:
    # float64: squares of gradients near 1e-25 underflow in float32, and deep plain
    # nets reach such values.
    return float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64))


def _leaves(stream: Any) -> list[torch.Tensor]:
    """The tensors of a stream: a tensor, or nested tuples/lists of them (DenseFormer's)."""
    if isinstance(stream, torch.Tensor):
        return [stream]
    return [t for part in stream for t in _leaves(part)]


def _tapped(stream: Any, sink: list[torch.Tensor]) -> Any:
    """The same stream with every tensor replaced by a view of itself whose gradient is
    appended to ``sink``: same values, its own node in the graph."""
    if isinstance(stream, torch.Tensor):
        view = stream.view_as(stream)
        if view.requires_grad:
            view.register_hook(lambda g: sink.append(g.detach()))
        return view
    return type(stream)(_tapped(part, sink) for part in stream)


def _norm_of(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(_norm(t) ** 2 for t in tensors))


class _Probe:
    """Hooks on one connection (a sublayer: its branch merged into the stream) that record,
    during one forward and backward pass, the RMS of what the head would see after it,
    ||dL/df_l||, the two routes of dL/d(stream), and the connection's residual mixing
    matrix where it has one (hyper-connections, mHC).

    Branch share, through the stream contract. The stream entering a connection reaches
    the loss by two routes: through ``read`` (the branch's input, then the branch), and
    through ``write`` directly (the merge's own path: the identity of add, the carried
    channels of a concatenation, the weighted average of DenseFormer, the mixing of
    hyper-connections, highway's carry and gate). The probe hands ``read`` and ``write``
    separate views of the stream, so the gradient arriving at each is that route's alone:
    ``b`` (read) and ``i`` (write). ``share = ||b|| / (||i|| + ||b||)``: 0 when everything
    flows through the merge (rezero at init, where a_l = 0 makes b exactly zero), 1 for
    plain (no path but the branch), 0.5 when both carry equal norm. Measuring each route
    directly keeps an auxiliary head's gradient out of it and avoids cancellation.
    For DenseFormer the stream also carries the earlier block outputs X_0..X_{i-1} that
    ``write`` averages, so its merge route includes their gradients too: 0 at init
    (alpha_ij = 0 for j < i), growing as the averages learn.
    """

    def __init__(self, block: nn.Module, readout: Callable[[Any], torch.Tensor], mixing: bool):
        self.block, self.readout = block, readout
        self.mixing = mixing  # the strategy mixes copies of the stream: record its H_res
        self.handles: list[Any] = []
        self.reset()
        read, write = block.read, block.write

        def tapped_read(stream):
            if self.mixing:
                self.matrix = block.mixing_matrix(stream)
            return read(_tapped(stream, self.branch_grads))

        def tapped_write(stream, f):
            return write(_tapped(stream, self.identity_grads), f)

        block.read, block.write = tapped_read, tapped_write  # instance attributes shadow the methods
        self.handles.append(block.register_forward_hook(self._on_stream))
        self.handles.append(block.branch.register_forward_hook(self._on_features))

    def reset(self) -> None:
        self.rms = math.nan
        self.feature_grad = math.nan
        self.branch_grads: list[torch.Tensor] = []
        self.identity_grads: list[torch.Tensor] = []
        self.matrix: torch.Tensor | None = None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        del self.block.read, self.block.write

    def _on_stream(self, module, inputs, stream) -> None:  # the stream after this sublayer
        with torch.no_grad():
            h = self.readout(stream)
        self.rms = _norm(h) / math.sqrt(h.numel())

    def _on_features(self, module, inputs, f: torch.Tensor) -> None:  # f = f_l
        if f.requires_grad:
            f.register_hook(lambda g: setattr(self, "feature_grad", _norm(g)))

    @property
    def branch_share(self) -> float:
        b, i = _norm_of(self.branch_grads), _norm_of(self.identity_grads)
        return b / (i + b) if i + b > 0 else math.nan


@torch.no_grad()
def stream_gains(model: nn.Module, x: torch.Tensor) -> dict[str, list[float]] | None:
    """The composite residual gains of a built model's mixing matrices on a batch ``x``
    (see :func:`composite_gains`), or None when its strategy mixes no streams. The model
    is run in eval mode and left as it was."""
    if not model.description.strategy.mixes_streams:
        return None
    matrices = []
    handles = [b.register_forward_pre_hook(lambda m, inputs: matrices.append(m.mixing_matrix(inputs[0])))
               for b in model.blocks]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    forward, backward = composite_gains(matrices)
    return {"forward": forward, "backward": backward, "stochastic_gap": stochastic_gap(matrices)}


def stochastic_gap(matrices: list[torch.Tensor]) -> float:
    """How far the mixing matrices are from doubly stochastic: the largest ``|row sum - 1|``
    or ``|column sum - 1|`` over sublayers and tokens (mHC's Sinkhorn residual after its set
    iterations; mHC-lite's is 0 to rounding by construction; hyper's is unconstrained)."""
    gap = 0.0
    for m in matrices:
        m = m.double()
        gap = max(gap, float((m.sum(-1) - 1).abs().amax()), float((m.sum(-2) - 1).abs().amax()))
    return gap


def composite_gains(matrices: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Gains of the composite residual mapping prod_{l'<=l} H_res,l' after each sublayer l
    (mHC, arXiv 2512.24880, Fig. 3): the largest absolute row sum (forward) and column sum
    (backward) of the product, the largest over tokens. ``matrices``: one (tokens or 1, n, n)
    per sublayer, H_res with x_{l+1} = H_res x_l + ..."""
    forward, backward = [], []
    total = None
    for m in matrices:
        m = m.double()
        total = m if total is None else m @ total  # H_l ... H_1
        a = total.abs()
        forward.append(float(a.sum(-1).amax()))
        backward.append(float(a.sum(-2).amax()))
    return forward, backward


# -- Statistics -------------------------------------------------------------------------
@dataclass(frozen=True)
class Spread:
    """One statistic per block over all samples (seeds x batches): mean, min, max."""

    mean: list[float]
    min: list[float]
    max: list[float]

    @classmethod
    def of(cls, samples: list[list[float]]) -> "Spread":
        """``samples``: one list per (seed, batch), one value per block."""
        t = torch.tensor(samples, dtype=torch.float64)  # (samples, blocks)
        if t.numel() == 0:
            return cls([], [], [])
        return cls(t.mean(0).tolist(), t.amin(0).tolist(), t.amax(0).tolist())


def _ratio(a: float, b: float) -> float | None:
    """a / b, or None where it is undefined (b = 0, or either is NaN)."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


@dataclass(frozen=True)
class Snapshot:
    """The statistics of one moment (init, or a training step), over all seeds."""

    step: int
    loss: float  # mean over samples of the loss that was backpropagated
    accuracy: float  # mean over samples of the main head's accuracy on the batch
    weight_grad_norm: Spread
    feature_grad_norm: Spread
    activation_rms: Spread
    branch_share: Spread  # per sublayer: the branch's share of dL/d(stream) (see _Probe)
    first_last_ratio_samples: list[float | None] = field(repr=False)
    vanish_threshold: float = 1e-6
    # Hyper-connections and mHC: gains of the composite residual mapping after each sublayer
    # (None for strategies without a mixing matrix).
    composite_gain_forward: Spread | None = None
    composite_gain_backward: Spread | None = None

    @property
    def first_last_ratio(self) -> float | None:
        """Mean weight-gradient norm of block 1 over that of the last block. Far below 1:
        the gradient vanishes toward the input; far above: it explodes."""
        w = self.weight_grad_norm.mean
        return _ratio(w[0], w[-1]) if w else None

    @property
    def max_min_ratio(self) -> float | None:
        """Largest over smallest mean weight-gradient norm across blocks (inf when one is 0)."""
        w = self.weight_grad_norm.mean
        if not w or any(math.isnan(v) for v in w) or max(w) == 0:
            return None
        return math.inf if min(w) == 0 else max(w) / min(w)

    @property
    def vanishing_block(self) -> int | None:
        """The first block (1-based) whose mean weight-gradient norm is below
        ``vanish_threshold`` x the last block's; None if none is (or the last is 0)."""
        w = self.weight_grad_norm.mean
        if not w or not w[-1] > 0:
            return None
        return next((l for l, v in enumerate(w, start=1) if v < self.vanish_threshold * w[-1]), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: lists per block, and NaN/inf (which JSON lacks) as null."""
        d: dict[str, Any] = {"step": self.step, "loss": self.loss, "accuracy": self.accuracy}
        for name in ("weight_grad_norm", "feature_grad_norm", "activation_rms"):
            spread: Spread = getattr(self, name)
            d[name], d[name + "_min"], d[name + "_max"] = spread.mean, spread.min, spread.max
        ratios = [r for r in self.first_last_ratio_samples if r is not None]
        d |= {"first_last_ratio": self.first_last_ratio,
              "first_last_ratio_min": min(ratios) if ratios else None,
              "first_last_ratio_max": max(ratios) if ratios else None,
              "max_min_ratio": self.max_min_ratio,
              "vanishing_block": self.vanishing_block}
        for name in ("branch_share", "composite_gain_forward", "composite_gain_backward"):
            spread = getattr(self, name)
            d |= {name: spread.mean if spread else None, name + "_min": spread.min if spread else None,
                  name + "_max": spread.max if spread else None}
        return _json_safe(d)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class GradientReport:
    """Statistics of one spec: at init, and (with ``config.steps``) through training."""

    spec: ModelSpec
    config: GradientConfig
    init: Snapshot
    trajectory: list[Snapshot] | None  # one per checkpoint step, the first is step 0

    def to_dict(self) -> dict[str, Any]:
        """The ``skiplab gradients --json`` object of one strategy."""
        s, c = self.spec, self.config
        d: dict[str, Any] = {"skip": s.skip, "depth": s.depth, "width": s.width, "model": s.model,
                             "norm": s.norm, "init": s.init, "activation": s.activation,
                             "seeds": c.seeds, "batches": c.batches, "batch_size": c.batch_size}
        d |= {k: v for k, v in self.init.to_dict().items() if k != "step"}
        if self.trajectory is not None:
            d["optimizer"], d["lr"] = c.optimizer, c.learning_rate
            d["trajectory"] = [snap.to_dict() for snap in self.trajectory]
        return d


# -- Measuring --------------------------------------------------------------------------
def check_inputs(spec: ModelSpec, data: Dataset, config: GradientConfig) -> None:
    """Raise ValueError (naming the field) unless ``spec`` can be measured on ``data``."""
    spec.check_buildable()
    check_fits(spec, data)  # a text: the model must embed its symbols; then its windows are measured
    data = data.for_model(spec)
    shape = data.input_shape
    if not spec.family.accepts(shape, spec):  # the family's own rule (an MLP flattens any shape)
        raise UserError(f"input_shape: {spec.model} expects {tuple(spec.input_shape)} but dataset "
                         f"{data.name!r} has samples of shape {shape}")
    if spec.classes != data.classes:
        raise UserError(f"classes: the model has {spec.classes} outputs but dataset {data.name!r} "
                         f"has {data.classes} classes")
    n = len(data.y_train)
    if config.batches * config.batch_size > n:
        raise UserError(f"batches: {config.batches} batches of {config.batch_size} need "
                         f"{config.batches * config.batch_size:,} samples; {data.name!r} has {n:,}")
    if spec.norm == "batch" and config.batch_size < 2:
        raise UserError("batch_size: batch norm needs at least 2 samples per batch")


def _measure(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, list]:
    """One sample per batch of every statistic (a list per block), from one forward and
    backward pass each. Leaves the model's ``.grad`` of the last batch in place."""
    model.train()
    d = model.description
    probes = [_Probe(block, lambda stream: d.strategy.readout(stream, d.options), d.strategy.mixes_streams)
              for block in model.blocks]
    out: dict[str, list] = {k: [] for k in ("weight", "feature", "rms", "share", "loss", "accuracy", "gain_f",
                                            "gain_b")}
    try:
        for x, y in batches:
            for p in probes:
                p.reset()
            model.zero_grad(set_to_none=True)
            loss, logits = loss_and_logits(model, x, y)
            loss.backward()
            out["weight"].append([_norm(d.family.branch_weight(b.branch).grad) for b in model.blocks])
            out["feature"].append([p.feature_grad for p in probes])
            out["rms"].append([p.rms for p in probes])
            out["share"].append([p.branch_share for p in probes])
            if probes and all(p.mixing for p in probes):
                forward, backward = composite_gains([p.matrix for p in probes])
                out["gain_f"].append(forward)
                out["gain_b"].append(backward)
            out["loss"].append(loss.item())
            flat, targets = flat_logits(logits, y)  # a language model: every position
            out["accuracy"].append(float((flat.argmax(1) == targets).double().mean()))
    finally:
        for p in probes:
            p.remove()
    return out


def _snapshot(step: int, samples: list[dict[str, list]], threshold: float) -> Snapshot:
    """Pool the per-seed samples of one moment into a Snapshot."""
    pooled = {k: [row for s in samples for row in s[k]] for k in samples[0]}
    weight = pooled["weight"]
    return Snapshot(
        step=step,
        loss=sum(pooled["loss"]) / len(pooled["loss"]),
        accuracy=sum(pooled["accuracy"]) / len(pooled["accuracy"]),
        weight_grad_norm=Spread.of(weight),
        feature_grad_norm=Spread.of(pooled["feature"]),
        activation_rms=Spread.of(pooled["rms"]),
        branch_share=Spread.of(pooled["share"]),
        first_last_ratio_samples=[_ratio(w[0], w[-1]) if w else None for w in weight],
        vanish_threshold=threshold,
        composite_gain_forward=Spread.of(pooled["gain_f"]) if pooled["gain_f"] else None,
        composite_gain_backward=Spread.of(pooled["gain_b"]) if pooled["gain_b"] else None)


def _draw_batches(data: Dataset, config: GradientConfig, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` disjoint batches from the train set, a function of ``seed`` alone."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.y_train), generator=g)[: config.batches * config.batch_size]
    return [(data.x_train[i], data.y_train[i]) for i in idx.split(config.batch_size)]


def _training_stream(data: Dataset, batch_size: int, seed: int):
    """Endless shuffled minibatches of the train set (reshuffled every epoch)."""
    g = torch.Generator().manual_seed(10_000 + seed)  # apart from the measurement batches' stream
    n = len(data.y_train)
    while True:
        for i in torch.randperm(n, generator=g).split(batch_size):
            if len(i) == batch_size:  # a short last batch would change the gradient scale
                yield data.x_train[i], data.y_train[i]


def _follow(spec: ModelSpec, data: Dataset, config: GradientConfig, seed: int,
            measured: Callable[[int], None]) -> dict[int, dict[str, list]]:
    """Build one model, measure at init and at each checkpoint step of training;
    ``measured(step)`` is called after each measurement."""
    model = build_model(spec, seed=seed)
    batches = _draw_batches(data, config, seed)
    wanted = config.checkpoint_steps()
    found = {0: _measure(model, batches)}
    measured(0)
    if config.steps == 0:
        return found
    params = list(model.parameters())
    lr = config.learning_rate
    opt = make_optimizer(config.optimizer, params, lr, momentum=0.0)  # gradients: plain SGD, no momentum
    stream = _training_stream(data, config.batch_size, seed)
    for step in range(1, config.steps + 1):
        x, y = next(stream)
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_and_logits(model, x, y)
        loss.backward()
        opt.step()
        if step in wanted:
            found[step] = _measure(model, batches)
            measured(step)
    return found


def measure_gradients(spec: ModelSpec, data: Dataset | None = None,
                      config: GradientConfig | None = None,
                      progress: Callable[[str], None] | None = None) -> GradientReport:
    """Per-block gradient and signal statistics of ``spec`` (see the module docstring).

    ``data`` defaults to MNIST-1D; statistics use its train set. ``progress`` is called
    with a short note after each measurement, ``seeds x len(config.checkpoint_steps())``
    times in all (for a command line's progress bar). The global RNG is left untouched:
    seeds drive model init and batch draws.
    """
    config = config or GradientConfig()
    data = load_mnist1d() if data is None else data
    check_inputs(spec, data, config)
    data = data.for_model(spec)  # a text: windows of the model's context
    per_seed = []
    for seed in range(config.seeds):
        def measured(step: int, seed: int = seed) -> None:
            if progress is not None:
                progress(f"{spec.skip}, seed {seed + 1}/{config.seeds}" + (f", step {step}" if config.steps else ""))
        per_seed.append(_follow(spec, data, config, seed, measured))
    snaps = [_snapshot(step, [s[step] for s in per_seed], config.vanish_threshold)
             for step in config.checkpoint_steps()]
    return GradientReport(spec, config, snaps[0], snaps if config.steps else None)
