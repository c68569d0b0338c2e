"""Cost against depth, one line per strategy, on log-log axes.

On log-log axes a linear law has slope 1 and a quadratic slope 2; an exponential one bends
upwards without bound. Depths where a model could not be built (its state exceeds
``max_state_width``) are drawn dashed: they exist only analytically.
"""

from __future__ import annotations

from ..plotting import save

from typing import Any, Sequence

from ..palette import color

PANELS = (("params", "parameters", lambda c: c["params"]["total"]),
          ("flops", "FLOPs per sample (forward)", lambda c: c["flops"]["total"]),
          ("activation_bytes", "activation memory (bytes, batch {batch})", lambda c: c["activation_bytes"]))


def plot_growth(curves: dict[str, Sequence[dict[str, Any]]], path: str, title: str = "") -> None:
    """``curves``: strategy -> analytic costs at increasing depths (``model_cost`` dicts,
    each with ``buildable`` added). Writes a PNG (or any format matplotlib knows by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2), constrained_layout=True)
    batch = next(iter(curves.values()))[0]["batch"]
    for ax, (_, label, value) in zip(axes, PANELS):
        for skip, costs in curves.items():
            depths = [c["depth"] for c in costs]
            values = [value(c) for c in costs]
            built = [c["buildable"] for c in costs]
            ax.plot(depths, values, color=color(skip), lw=1.8, label=skip)
            if not all(built):
                first = built.index(False)
                ax.plot(depths[max(first - 1, 0):], values[max(first - 1, 0):], color="white", lw=1.0, ls=(0, (3, 3)))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("depth (blocks)")
        ax.set_ylabel(label.format(batch=batch))
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    try:
        save(fig, path, dpi=120)
    finally:
        plt.close(fig)
