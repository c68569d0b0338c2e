"""Configuration checks: one error type and one helper per kind of value, used by every
config (``ModelSpec``, ``TrainConfig``, ``GradientConfig``, strategy options, sweep files),
so that a bad value reads the same everywhere: ``NAME: must be ..., got VALUE``."""

from __future__ import annotations

import math
from typing import Any, Iterable

from .errors import UserError


class SpecError(UserError):
    """A field of a spec or config has a value outside what is allowed; the message names both."""


def integer(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return value


def number(name: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` if it is a finite real number >= ``minimum`` (> with ``strict``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and (value > minimum if strict else value >= minimum)
    if not ok:
        raise SpecError(f"{name}: must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{name}: must be true or false, got {value!r}")
    return value


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise SpecError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value
