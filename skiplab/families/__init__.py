"""Model families: the registry (the one place a family's name is looked up), and the
description of a model that the builder reads."""

from __future__ import annotations

from .base import Description, Family, ShapeError
from .cnn1d import CNN1D_FAMILY
from .cnn2d import CNN2D_FAMILY
from .mlp import MLP_FAMILY
from .resnet import RESNET_FAMILY
from .transformer import TRANSFORMER_FAMILY
from ..errors import UserError

FAMILIES: dict[str, Family] = {f.name: f for f in (MLP_FAMILY, CNN1D_FAMILY, CNN2D_FAMILY, TRANSFORMER_FAMILY,
                                                   RESNET_FAMILY)}


def all_family_options() -> dict[str, list[Family]]:
    """Every option name any family declares -> the families that declare it (for ModelSpec's
    keywords, the command line's flags and sweep files' keys)."""
    out: dict[str, list[Family]] = {}
    for f in FAMILIES.values():
        for o in f.options:
            out.setdefault(o.name, []).append(f)
    return out


def get_family(name: str) -> Family:
    """The family called ``name``; ValueError naming the allowed names otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"model: unknown family {name!r}; allowed: {', '.join(FAMILIES)}") from None


__all__ = ["FAMILIES", "get_family", "all_family_options", "Family", "Description", "ShapeError", "MLP_FAMILY", "CNN1D_FAMILY", "CNN2D_FAMILY",
           "TRANSFORMER_FAMILY"]
