"""Growth laws: how a cost grows with depth, classified and fitted.

Counted costs are exact integers, so a law is accepted only if it reproduces them to
float precision: constant, linear or quadratic (least squares on the depths), else
exponential ``a + b * base**depth`` (``base`` found by a 1-D search, ``a``/``b`` by least
squares), accepted when it explains the values to 1e-3 of the largest one (concat-double's
costs are a sum of a 4^d and a 2^d term, so the fit is close, not exact). Anything else is reported as ``unclassified``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import UserError

POLY_LAWS = ("constant", "linear", "quadratic")
EXACT = 1e-9  # relative residual for the polynomial laws (costs are exact integers)
NEAR = 1e-3  # relative residual for the exponential law


def _relative_residual(y: np.ndarray, fit: np.ndarray) -> float:
    scale = np.max(np.abs(y))
    return float(np.max(np.abs(y - fit)) / scale) if scale else 0.0


def _exponential_fit(d: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Best ``y ~ a + b * base**d`` over base in (1, 1024]; returns a, b, base and the
    residual relative to the largest value (so the dominant term decides)."""
    top, scale = d.max(), np.max(np.abs(y))
    ys = y / scale

    def lines(bases: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The least-squares ``ys ~ a + b z`` for every base at once (z = base**(d - max d),
        scaled so that huge powers stay in range), in closed form: a, b and the residual
        relative to the largest value, one array each (every base of a grid in one array
        operation, where one ``lstsq`` per base made ``skiplab cost --depths`` spend seconds
        here); a base whose z does not vary has an infinite residual."""
        z = np.power(bases[:, None], (d - top)[None, :])
        z_mean = z.mean(axis=1)
        zc = z - z_mean[:, None]
        var = np.einsum("gn,gn->g", zc, zc)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.einsum("gn,n->g", zc, ys - ys.mean()) / var
            res = np.max(np.abs(ys[None, :] - (ys.mean() + slope[:, None] * zc)), axis=1)
        return ys.mean() - slope * z_mean, slope, np.where(np.isfinite(res) & (var > 0), res, np.inf)

    grid = np.exp(np.linspace(np.log(1.0001), np.log(1024), 4000))
    best = float(grid[int(np.argmin(lines(grid)[2]))])
    lo, hi = best / 1.01, best * 1.01
    for _ in range(4):  # refine around the best grid point
        grid = np.linspace(lo, hi, 200)
        best = float(grid[int(np.argmin(lines(grid)[2]))])
        step = (hi - lo) / 200
        lo, hi = best - step, best + step
    (a,), (b,), (res,) = lines(np.array([best]))
    a, b = a * scale, b * scale / best ** top
    return float(a), float(b), float(best), res


def classify(depths: Sequence[int], values: Sequence[float]) -> dict[str, Any]:
    """The simplest law that explains ``values`` over ``depths``, with its coefficients.

    Returns ``{"law": ..., "coefficients": {...}, "residual": ...}``; polynomial
    coefficients are ``c0 + c1 d + c2 d^2``, exponential ones ``b * base**d`` (the
    dominant term).
    """
    d = np.asarray(depths, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if len(set(depths)) < 4:
        raise UserError(f"depths: need at least 4 different depths to tell growth laws apart, got {list(depths)}")
    for degree, law in enumerate(POLY_LAWS):
        coef = np.polynomial.polynomial.polyfit(d, y, degree)
        res = _relative_residual(y, np.polynomial.polynomial.polyval(d, coef))
        if res < EXACT:
            return {"law": law, "coefficients": {f"c{i}": float(c) for i, c in enumerate(coef)},
                    "residual": res}
    a, b, base, res = _exponential_fit(d, y)
    if res < NEAR and base > 1.01:
        # Only the dominant term is reported: the constant is lost next to b * base**d
        # (concat-double's costs also carry a smaller 2^d term from biases and the head).
        return {"law": "exponential", "coefficients": {"b": b, "base": base}, "residual": res}
    return {"law": "unclassified", "coefficients": {}, "residual": res}


def parse_depths(text: str) -> list[int]:
    """``a..b`` (inclusive), ``a..b:step``, or a comma-separated list."""
    try:
        if ".." in text:
            span, _, step = text.partition(":")
            lo, hi = (int(t) for t in span.split(".."))
            depths = list(range(lo, hi + 1, int(step) if step else 1))
        else:
            depths = [int(t) for t in text.split(",")]
    except ValueError:
        raise UserError(f"depths: {text!r} is not a..b, a..b:step or a comma-separated list of integers") from None
    if not depths:
        raise UserError(f"depths: {text!r} gives no depths (a..b needs a <= b)")
    if min(depths) < 0:
        raise UserError(f"depths: must be >= 0, got {min(depths)} in {text!r}")
    return depths
