"""Functions that may be batched over seeds: the marker a strategy uses, apart from any engine.

A strategy's hand-written autograd Function whose forward and backward treat the leading
dimensions of its tensors as a batch (DWA's weighted sum, mHC's Sinkhorn-Knopp) can run
once for S seeds with the seeds as one more leading dimension: one autograd node for all
of them, where vmap would wrap the Function in a generated one and vmap its backward on
every call. The strategy says so by calling it through :func:`over_leading_dims`; how the
seeds are unwrapped and wrapped again is the batched engine's business
(:func:`skiplab.run.seed_batched.over_seeds`, which registers itself here with
:func:`batch_with` when it is imported). With nothing registered, the call is plain
``fn(*tensors)``, and the engine's own is too outside its vmap. So strategies import this
module and never the engine (``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

from typing import Callable

import torch

# (fn, *tensors) -> fn(*tensors), batched where it can be; None: no batched engine loaded
_batcher: Callable[..., torch.Tensor] | None = None


def over_leading_dims(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)``, for a function that treats its tensors' leading dimensions as a batch:
    a batched engine may run it once for all its seeds, the seeds one more leading dimension."""
    if _batcher is None:
        return fn(*tensors)
    return _batcher(fn, *tensors)


# Is Dynamo tracing (torch.compile)? Then code may take the form Inductor compiles best: the
# batched engine's fast paths step aside, and hyper-connections mix their copies element-wise.
compiling: Callable[[], bool] = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


def batch_with(batcher: Callable[..., torch.Tensor] | None) -> None:
    """Run every :func:`over_leading_dims` call through ``batcher(fn, *tensors)`` (None: plainly)."""
    global _batcher
    _batcher = batcher


__all__ = ["over_leading_dims", "batch_with", "compiling"]
