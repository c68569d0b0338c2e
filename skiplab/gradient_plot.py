"""The figure of :mod:`skiplab.gradients`: weight-gradient norm against block index.

One line per strategy (colour from :mod:`skiplab.palette`), the min..max spread over
seeds and batches shaded, log y-scale because the quantities span tens of orders of
magnitude. With a training trajectory a second panel follows the first/last ratio.
Uses matplotlib's object API (no pyplot), so it touches no global figure state and
needs no display.
"""

from __future__ import annotations

from .plotting import save

import math
import os
import pathlib

from matplotlib.figure import Figure

from .gradients import GradientReport
from .palette import color
from .errors import UserError

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_path(path: str | os.PathLike) -> pathlib.Path:
    """Raise ValueError unless a figure can be written at ``path`` (checked before any
    long computation, so a typo does not cost a whole run)."""
    p = pathlib.Path(path)
    if p.suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(f"plot: {str(p)!r} must end in one of {', '.join(PLOT_SUFFIXES)}")
    parent = p.parent if str(p.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise UserError(f"plot: folder {str(parent)!r} does not exist")
    if p.is_dir() or not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"plot: cannot write {str(p)!r}")
    return p


def _positive(values: list[float]) -> list[float]:
    """Zeros and NaNs cannot sit on a log axis: leave a gap there instead."""
    return [v if v > 0 and math.isfinite(v) else math.nan for v in values]


def plot_gradients(reports: list[GradientReport], path: str | os.PathLike) -> pathlib.Path:
    """Write the figure for ``reports`` (one per strategy, same model otherwise) to ``path``."""
    path = check_plot_path(path)
    if not reports:
        raise UserError("plot: nothing to plot (no strategies)")
    with_steps = reports[0].trajectory is not None
    fig = Figure(figsize=(13 if with_steps else 8.5, 4.6), layout="constrained")
    ax = fig.add_subplot(1, 2, 1) if with_steps else fig.add_subplot()
    for r in reports:
        w = r.init.weight_grad_norm
        blocks = list(range(1, len(w.mean) + 1))
        mean = _positive(w.mean)
        label = r.spec.skip if any(not math.isnan(v) for v in mean) else f"{r.spec.skip} (0 at every block)"
        ax.plot(blocks, mean, color=color(r.spec.skip), label=label, linewidth=1.8)
        ax.fill_between(blocks, _positive(w.min), _positive(w.max), color=color(r.spec.skip),
                        alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("block l (1 = next to the input)")
    ax.set_ylabel("weight-gradient norm ||dL/dW_l||")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="skip", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    s, c = reports[0].spec, reports[0].config
    ax.set_title(f"At init: {s.model}, depth {s.depth}, width {s.width}, norm {s.norm}, init {s.init}\n"
                 f"line = mean, band = min..max over {c.seeds} seeds x {c.batches} batches of {c.batch_size}",
                 fontsize="medium")
    if with_steps:
        _plot_trajectory(fig.add_subplot(1, 2, 2), reports)
    return save(fig, path, dpi=120)


def _plot_trajectory(ax, reports: list[GradientReport]) -> None:
    """First/last weight-gradient ratio at each checkpoint of training."""
    for r in reports:
        steps = [snap.step for snap in r.trajectory]
        ratio = [math.nan if snap.first_last_ratio is None else snap.first_last_ratio for snap in r.trajectory]
        ax.plot(steps, _positive(ratio), marker="o", color=color(r.spec.skip), label=r.spec.skip)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("first / last block weight-gradient norm")
    ax.grid(True, which="major", alpha=0.3)
    c = reports[0].config
    ax.set_title(f"Through training: {c.optimizer}, lr {c.learning_rate:g}, batch {c.batch_size}",
                 fontsize="medium")
