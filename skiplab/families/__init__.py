"""Model families: the registry (the one place a family's name is looked up), and the
description of a model that the builder reads."""

from __future__ import annotations

from .base import Description, Family, ShapeError
from .cnn1d import CNN1D_FAMILY
from .cnn2d import CNN2D_FAMILY
from .mlp import MLP_FAMILY
from .transformer import TRANSFORMER_FAMILY
from ..errors import UserError

FAMILIES: dict[str, Family] = {f.name: f for f in (MLP_FAMILY, CNN1D_FAMILY, CNN2D_FAMILY, TRANSFORMER_FAMILY)}


def get_family(name: str) -> Family:
    """The family called ``name``; ValueError naming the allowed names otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"model: unknown family {name!r}; allowed: {', '.join(FAMILIES)}") from None


__all__ = ["FAMILIES", "get_family", "Family", "Description", "ShapeError", "MLP_FAMILY", "CNN1D_FAMILY", "CNN2D_FAMILY",
           "TRANSFORMER_FAMILY"]
