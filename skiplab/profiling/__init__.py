"""Profile any PyTorch model: parameters, FLOPs, merge FLOPs, concatenation bytes and
saved activations per module (``skiplab.profile``); see :mod:`.profiler`."""

from .profiler import profile, scalar_of
from .result import FIGURES, Profile

__all__ = ["profile", "Profile", "FIGURES", "scalar_of"]
