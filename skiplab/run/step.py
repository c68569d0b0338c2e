"""The training step's parts, the same for both engines: the step function (compiled where
asked, eager where compiling fails: :class:`StepFunction`), step times (:class:`StepClock`),
each seed's divergence watched on the device (:class:`DivergenceWatch`) and read back every
:func:`sync_interval` steps, the forward's autocast dtype and channels-last layout."""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from .. import clock
from ..families import get_family
from ..spec import ModelSpec
from .config import TrainConfig

SYNC_EVERY_ACCELERATOR = 50  # steps between host reads of the loss on an accelerator (and at evaluations)
_SYNC_EVERY: int | None = None  # tests: force an interval on the CPU (None: by device)


def sync_interval(device: torch.device) -> int:
    """Every how many steps the engines read the loss back to the host (to stop a diverged
    run, to report progress): 1 on the CPU, where a read costs nothing and a run stops at
    the very step it diverged; :data:`SYNC_EVERY_ACCELERATOR` elsewhere, where each read
    waits for the device to drain its queue. Between reads the check stays on the device
    (:class:`DivergenceWatch`); evaluations and the last step read it too."""
    if _SYNC_EVERY is not None:
        return _SYNC_EVERY
    return 1 if device.type == "cpu" else SYNC_EVERY_ACCELERATOR


def autocast_dtype(cfg: TrainConfig) -> torch.dtype | None:
    """The dtype the forward is autocast to (``loss_and_logits(..., autocast=)``), or None."""
    return torch.bfloat16 if cfg.precision == "bf16" else None


def wants_channels_last(model: ModelSpec, device: torch.device) -> bool:
    """Whether a run of ``model`` on ``device`` keeps its model and inputs channels-last:
    on CUDA, for a family that asks for it (``Family.channels_last``: cnn2d)."""
    return device.type == "cuda" and get_family(model.model).channels_last


def to_channels_last(t: torch.Tensor) -> torch.Tensor:
    """A 4-D (B, C, H, W) tensor in channels-last memory format; others as they are."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


class StepFunction:
    """The training step's loss function, compiled with torch.compile when ``cfg.compile``
    asks. torch.compile compiles at a call (the first, and a recompile for a new input
    shape, such as a smaller last batch); a call that raises there is run again eagerly,
    and every later one too: the run trains on, ``failed`` says why. Dynamo traces with
    fake tensors, so a failed compile has changed no parameter or buffer; an error that is
    not the compiler's raises again from the eager call."""

    def __init__(self, eager: Callable, cfg: TrainConfig):
        self.eager = eager
        start = clock.now()
        if cfg.compile:
            # Dynamo keeps a function's compiled graphs with its code object, at most 8
            # (torch._dynamo.config.recompile_limit), and past that runs it eagerly without a
            # word: the engines' loss functions share one code object, so a process's ninth
            # compiled run trained eagerly, reported as compiled (measured: tests/test_train_options).
            # Runs in a process follow each other, so each new one starts from a clean cache
            # (a caller's own compiled functions in the process compile again at their next call).
            torch.compiler.reset()
        self.fn = torch.compile(eager) if cfg.compile else eager
        # torch.compile's first use in a process imports the compiler (Dynamo, Inductor):
        # 3.3 s on this project's CPU (docs/scaling.md, "Accelerator options"), a cost of compiling
        # that the first step's time misses (uncounted, it made short compiled runs look
        # slower than eager: docs/scaling.md's 0.13x loop row, now 1.26x)
        self.setup_seconds = clock.now() - start
        self.failed: str | None = None  # why compiling failed
        self.first_compiled = False  # the first call ran compiled (its time is the compile time)
        self.new_shape = False  # the last call met input shapes not seen before: it compiled
        self._shapes: set[tuple] = set()

    def __call__(self, *args):
        if self.fn is self.eager:
            self.new_shape = False
            return self.eager(*args)
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        self.new_shape = shapes not in self._shapes
        self._shapes.add(shapes)
        try:
            out = self.fn(*args)
        except Exception as e:  # noqa: BLE001 - any compile failure: train eagerly, saying why
            self.fn = self.eager
            self.failed = f"compile failed: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
            return self.eager(*args)
        self.first_compiled = True
        return out

    def compile_seconds(self, steps: "StepClock") -> float | None:
        """What compiling cost this run: the compiler's set-up, and the excess of the first
        step and of each recompiling one over a typical step (None if no step ran compiled)."""
        if not self.first_compiled:
            return None
        first = steps.compile_seconds()
        return self.setup_seconds + (first or 0.0)


class StepClock:
    """Wall times of steps, for :attr:`RunResult.compile_seconds`: the first step, the steps
    that met a new input shape (a recompile: a smaller last batch, say), and up to 20 others,
    whose median is a typical step."""

    KEEP = 21  # the first step and 20 more

    def __init__(self) -> None:
        self.times: list[float] = []
        self.recompiles: list[float] = []
        self.start = 0.0

    def begin(self) -> None:
        self.start = clock.now()

    def end(self, new_shape: bool = False) -> None:
        t = clock.now() - self.start
        if not self.times:
            self.times.append(t)
        elif new_shape:
            self.recompiles.append(t)
        elif len(self.times) < self.KEEP:
            self.times.append(t)

    def compile_seconds(self) -> float | None:
        """The first step's and each recompiling step's excess over the median of the others
        (the first alone if it is the only one)."""
        if not self.times:
            return None
        rest = self.times[1:]
        typical = statistics.median(rest) if rest else 0.0
        return max(0.0, self.times[0] - typical) + sum(max(0.0, t - typical) for t in self.recompiles)


class DivergenceWatch:
    """Each seed's first non-finite loss, watched on the device: per step, ``see(losses,
    step)`` records (with ``torch.where``, no host read) the first step whose loss is not
    finite and that loss, and sums loss x predictions for the running train loss (float64,
    as the Python floats it replaces). ``read()`` brings them to the host: the engines call
    it every :func:`sync_interval` steps, at each evaluation and at the last step."""

    def __init__(self, seeds: int, device: torch.device):
        self.first = torch.full((seeds,), -1, dtype=torch.long, device=device)  # 0-based step; -1: finite so far
        self.value = torch.zeros(seeds, device=device)  # the loss at that step
        self.run_loss = torch.zeros(seeds, dtype=torch.float64, device=device)
        self.last = torch.zeros(seeds, device=device)  # the latest loss (progress reports)

    def see(self, losses: torch.Tensor, step: int, predictions: int) -> None:
        losses = losses.detach()
        fresh = ~torch.isfinite(losses) & (self.first < 0)
        self.first = torch.where(fresh, step, self.first)
        self.value = torch.where(fresh, losses, self.value)
        self.run_loss += losses.double() * predictions
        self.last = losses

    def read(self) -> tuple[list[int], list[float], list[float]]:
        """(first bad step, its loss, latest loss), each a list over the seeds."""
        return self.first.tolist(), self.value.tolist(), self.last.tolist()


__all__ = ["StepFunction", "StepClock", "DivergenceWatch", "sync_interval", "autocast_dtype", "wants_channels_last",
           "to_channels_last", "SYNC_EVERY_ACCELERATOR"]
