"""Plotting helpers shared by every figure skiplab draws (the report's, the experiments',
``skiplab cost --plot`` and ``skiplab gradients --plot``): one resolution, one way to put
depth on a log axis, one way to write a file."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from .errors import UserError

DPI = 110  # PNG resolution: a 10-inch figure is 1,100 pixels wide, readable without zooming


def number(v: Any) -> float:
    """A stored number, or NaN (a gap in a line, no bar) for a missing one."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else math.nan


def positive(v: Any) -> float:
    """Zeros and missing values cannot sit on a log axis: a gap instead."""
    x = number(v)
    return x if x > 0 else math.nan


def dodge(x: float, i: int, n: int) -> float:
    """Shift the i-th of n series a little along a log axis so error bars do not overlap."""
    return x * math.exp(0.04 * (i - (n - 1) / 2))


def depth_axis(ax: Axes, depths: list[int], label: str = "depth (blocks)") -> None:
    """Depths on a log x axis, ticked at the depths measured."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(depths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel(label)
    ax.set_xlim(min(depths) / 1.3, max(depths) * 1.3)


def save(fig: Figure, path: str | os.PathLike, fmt: str | None = None, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` atomically (a temporary file, then a rename: never a
    half-written figure); a path that cannot be written is one ValueError naming it."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".") or "png"
    # one temporary name per process: two commands on one --out (two experiments at once)
    # write the same figure, and a shared name let one rename the other's file away
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
        os.replace(tmp, path)
    except (OSError, ValueError) as e:
        tmp.unlink(missing_ok=True) if tmp.parent.is_dir() else None
        raise UserError(f"figure: cannot write {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    return path


def save_png_and_svg(fig: Figure, png: Path, svg: Path) -> None:
    """Write ``fig`` as PNG and SVG, each atomically."""
    save(fig, png, "png")
    fig.set_layout_engine("none")  # keep the PNG's layout: the SVG need not solve it again
    save(fig, svg, "svg")
