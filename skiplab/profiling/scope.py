"""Which module is running: a stack of dotted names kept by forward hooks.

Every figure the profiler records during a forward is attributed to the innermost module
running when it happens (the top of this stack), so each op lands in exactly one module
and the per-module figures add up to the total. A module reachable under two names (a
shared or tied module) is known by the first name ``named_modules`` gives it.
"""

from __future__ import annotations

from torch import nn


class ModuleStack:
    """Install with ``attach(model)``; ``current`` is the innermost running module's dotted
    name ("" for the model itself) and ``current_module`` the module itself (None outside
    any); ``detach()`` removes the hooks."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.modules: list[nn.Module] = []
        self._handles: list = []

    @property
    def current(self) -> str:
        return self.names[-1] if self.names else ""

    @property
    def current_module(self) -> nn.Module | None:
        return self.modules[-1] if self.modules else None

    def attach(self, model: nn.Module) -> "ModuleStack":
        for name, module in model.named_modules():
            def push(*_, name=name, module=module):
                self.names.append(name)
                self.modules.append(module)

            def pop(*_):
                self.names.pop()
                self.modules.pop()

            self._handles.append(module.register_forward_pre_hook(push))
            # always_call: an exception inside the forward still pops its name
            self._handles.append(module.register_forward_hook(pop, always_call=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.names.clear()
        self.modules.clear()
