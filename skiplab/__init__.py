"""skiplab: should a skip connection add or concatenate? Measured answers.

Public API::

    from skiplab import ModelSpec, build_model, STRATEGIES
    model = build_model(ModelSpec(model="cnn1d", depth=8, width=32, skip="dense"), seed=0)

Drop-in modules for your own networks: :mod:`skiplab.nn` (``Residual``, ``ReZero``,
``LayerScale``, ``Highway``, ``Concat``, ``DenseBlock``, ``DWA``, ``HyperConnection``, ``MHC``, ``MHCLite``;
also importable from here). The results store as pandas DataFrames: ``load_runs(out)``,
``load_curves(out)`` (:mod:`skiplab.export`, the ``pandas`` extra). Any model's cost per module:
``profile(model, *inputs)`` (:mod:`skiplab.profiling`). Any model's residual merges rewired to
another strategy: ``rewire(model, "rezero", example=x)`` (:mod:`skiplab.rewiring`).
"""

from .export import load_curves, load_runs
from .model import SkipNet, build_model
from .profiling import Profile, profile
from .rewiring import rewire
from .skips import (DWA, MHC, STRATEGIES, MHCLite, Concat, DenseBlock, Highway, HyperConnection, LayerScale, Plain,
                    ReZero, Residual, get_strategy)
from .spec import ModelSpec, SpecError
from .version import __version__


__all__ = [
    "ModelSpec", "SpecError", "SkipNet", "build_model", "STRATEGIES", "get_strategy",
    "Plain", "Residual", "ReZero", "LayerScale", "Highway", "Concat", "DenseBlock", "DWA", "HyperConnection", "MHC", "MHCLite",
    "load_runs", "load_curves", "profile", "Profile", "rewire", "__version__",
]
