"""skiplab: should a skip connection add or concatenate? Measured answers.

Public API::

    from skiplab import ModelSpec, build_model, STRATEGIES
    model = build_model(ModelSpec(model="cnn1d", depth=8, width=32, skip="dense"), seed=0)

Drop-in modules for your own networks live in :mod:`skiplab.skips`
(``Residual``, ``ReZero``, ``LayerScale``, ``Highway``, ``Concat``, ``DenseBlock``, ``DWA``,
``HyperConnection``, ``MHC``).
"""

from .model import SkipNet, build_model
from .skips import (DWA, MHC, STRATEGIES, Concat, DenseBlock, Highway, HyperConnection, LayerScale, Plain,
                    ReZero, Residual, get_strategy)
from .spec import ModelSpec, SpecError

__version__ = "0.1.0"

__all__ = [
    "ModelSpec", "SpecError", "SkipNet", "build_model", "STRATEGIES", "get_strategy",
    "Plain", "Residual", "ReZero", "LayerScale", "Highway", "Concat", "DenseBlock", "DWA", "HyperConnection", "MHC",
    "__version__",
]
