"""Profile any PyTorch model: parameters, FLOPs, merge FLOPs, concatenation bytes and
saved activations per module (``skiplab.profile``); see :mod:`.profiler`. Importing it
registers FLOP rules for the attention kernels ``torch.utils.flop_counter`` lacks
(:mod:`.flop_rules`)."""

from .profiler import UncountedOpsWarning, profile, scalar_of
from .result import FIGURES, Profile

__all__ = ["profile", "Profile", "FIGURES", "UncountedOpsWarning", "scalar_of"]
