"""What a rewired module runs: the connections of its merges, the stream between modules,
and the two ways a module's own code is made to call them.

* A module whose forward ``torch.fx`` traced gets a forward generated from its graph, each
  merge node replaced by a call of :class:`MergeSites` (``skiplab_merges``, a child of the
  module): nothing is intercepted at run time.
* A module of a known block pattern (HF's ``GPT2Block``: fx cannot trace it) keeps its own
  forward, run under :class:`MergeWatch`, a ``TorchFunctionMode`` that turns each addition
  of the stream to another tensor into the connection's merge. Every torch function its
  forward calls (its children's too) passes through the mode's Python handler: a cost per
  op that the fx path does not have.

Either way the module keeps its class (a subclass made here, with the same name), its
attributes and its state dict's keys; the connections' parameters are added under
``<module>.skiplab_merges``.

A stream that is not one tensor (DenseFormer's list of block outputs, the n copies of
hyper-connections and mHC) never passes through the user's code: between merges, the code
sees its **face**, the input of the next branch (``read`` of the next connection; after the
last merge the head's input, ``readout``), and the stream itself waits in :class:`Stream`
until the next merge writes into it. A module that is handed anything but the face its
predecessor returned raises (the stream was changed outside the merges).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# What an addition of two tensors reaches a TorchFunctionMode as.
ADDS = {torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__, torch.add, torch.Tensor.add,
        torch.Tensor.add_}
IN_PLACE_ADDS = {torch.Tensor.__iadd__, torch.Tensor.add_}


class Stream:
    """The state of a multi-tensor stream between rewired modules during one forward, and
    every connection in the order the merges run (a module's last merge hands on the face
    of the next module's first)."""

    def __init__(self, strategy, opts: dict[str, Any]):
        self.strategy, self.opts = strategy, opts
        self.connections: list[nn.Module] = []
        self.face: torch.Tensor | None = None
        self.state: Any = None

    def enter(self, x: torch.Tensor, first: bool) -> Any:
        if first:
            return self.strategy.init(x, self.opts)
        if self.face is None or x is not self.face:
            raise RuntimeError("skiplab.rewire: a rewired module was given a tensor other than the stream's face "
                               "that the previous rewired module returned: the stream was changed between them "
                               "(or the modules ran in another order than when the model was rewired)")
        state, self.face, self.state = self.state, None, None
        return state

    def leave(self, state: Any, next_index: int | None) -> torch.Tensor:
        if next_index is None:  # the last merge of the model: what the head sees
            self.face = self.state = None
            return self.strategy.readout(state, self.opts)
        self.face = self.connections[next_index].read(state)
        self.state = state
        return self.face


class MergeSites(nn.Module):
    """The connections of one module's merges (``connections[j]`` for its merge j, in the
    order they run). ``stream``: None for a one-tensor stream (each merge is
    ``write(skip, f)``), else the model's :class:`Stream`; ``offset``: the global index of
    ``connections[0]``; ``first``: this module's first merge is the model's (it expands)."""

    def __init__(self, connections: list[nn.Module], stream: Stream | None = None, offset: int = 0,
                 first: bool = False):
        super().__init__()
        self.connections = nn.ModuleList(connections)
        self.offset, self.first = offset, first
        self.__dict__["stream"] = stream  # shared by every module's sites: not a child module
        self._state: Any = None

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """The module's stream input -> the face its first branch reads."""
        if self.stream is None:
            return x
        state = self.stream.enter(x, self.first)
        self._state = state
        return self.connections[0].read(state) if self.first else x

    def merge(self, j: int, skip: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Merge j of this module: the branch output ``f`` into the stream; returns what the
        module's code goes on with (the stream, or its face)."""
        if self.stream is None:
            return self.connections[j].write(skip, f)
        state = self.connections[j].write(self._state, f)
        if j + 1 < len(self.connections):
            self._state = state
            return self.connections[j + 1].read(state)
        self._state = None
        g = self.offset + j + 1
        return self.stream.leave(state, g if g < len(self.stream.connections) else None)

    def forward(self, op: str, j: int, *xs: torch.Tensor) -> torch.Tensor:
        """One call site in a generated forward: ``("enter", 0, x)`` or ``("merge", j, skip, f)``."""
        return self.enter(xs[0]) if op == "enter" else self.merge(j, *xs)


class MergeWatch(TorchFunctionMode):
    """Inside a module's forward: each addition of the stream (``face``, tracked by
    identity) and another tensor of its shape is merge ``count``; ``on_merge(j, skip, f,
    in_place, add)`` returns what the code gets instead (the merge's output; ``add()`` runs
    the addition as written), which becomes the stream. Other additions, and everything
    else, run as written."""

    def __init__(self, face: torch.Tensor, on_merge: Callable[[int, torch.Tensor, torch.Tensor, bool], Any]):
        super().__init__()
        self.face, self.on_merge, self.count = face, on_merge, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in ADDS and len(args) == 2 and not kwargs:
            a, b = args
            face = self.face
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and (a is face) != (b is face):
                f = b if a is face else a
                if f.shape == face.shape:
                    out = self.on_merge(self.count, face, f, func in IN_PLACE_ADDS, lambda: func(*args))
                    self.count += 1
                    self.face = out
                    return out
        return func(*args, **kwargs)


_RUNTIME_CLASSES: dict[tuple[type, str], type] = {}


def stream_argument(cls: type, name: str) -> Callable[[tuple, dict], tuple[inspect.BoundArguments, Any]]:
    sig = inspect.signature(cls.forward)

    def bind(module, args, kwargs):
        ba = sig.bind(module, *args, **kwargs)
        return ba, ba.arguments.get(name)
    return bind


def runtime_class(cls: type, stream: str) -> type:
    """``cls`` with a forward that runs ``cls.forward`` under :class:`MergeWatch`, the
    argument ``stream`` being the stream (a known block pattern's rewiring)."""
    key = (cls, stream)
    if key not in _RUNTIME_CLASSES:
        original = cls.forward
        bind = stream_argument(cls, stream)

        def forward(self, *args, **kwargs):
            sites = self.skiplab_merges
            ba, x = bind(self, args, kwargs)
            face = sites.enter(x)
            ba.arguments[stream] = face
            watch = MergeWatch(face, lambda j, skip, f, in_place, add: sites.merge(j, skip, f))
            with watch:
                out = original(*ba.args, **ba.kwargs)
            if watch.count != len(sites.connections):
                raise RuntimeError(f"skiplab.rewire: {cls.__name__} merged its stream {watch.count} times in this "
                                   f"forward, {len(sites.connections)} when it was rewired")
            return out

        _RUNTIME_CLASSES[key] = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                            "__qualname__": cls.__qualname__,
                                                            "skiplab_rewired": "pattern"})
    return _RUNTIME_CLASSES[key]


def generated_class(cls: type, forward: Callable) -> type:
    """``cls`` with ``forward`` (generated from its rewritten fx graph)."""
    return type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "skiplab_rewired": "torch.fx"})
