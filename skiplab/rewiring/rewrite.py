"""Rewriting a traced module's graph: each merge node becomes a call of its
:class:`~.sites.MergeSites` (the child ``skiplab_merges``), and the forward is generated from
the new graph (``Graph.python_code``), as ``GraphModule`` does, but bound to a subclass of
the module's own class so that the module keeps its class, attributes and state dict."""

from __future__ import annotations

from typing import Callable

import torch.fx as fx

from .find import Found

SITES = "skiplab_merges"


def rewritten_forward(found: Found, several: bool) -> Callable:
    """The forward of ``found.module`` with its rewired merges calling ``skiplab_merges``;
    ``several``: the stream is several tensors (the module's input goes through
    ``enter`` first, and each merge is handed the face, see :mod:`.sites`)."""
    old = found.graph
    new = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    out = new.graph_copy(old, values)
    new.output(out)
    position = {n: i for i, n in enumerate(new.nodes)}
    chosen = [(m, fm) for m, fm in zip(found.merges, found.fx_merges) if m.rewired]
    if several:
        p = values[chosen[0][1].root]
        with new.inserting_after(p):
            entered = new.call_module(SITES, ("enter", 0, p))
        p.replace_all_uses_with(entered, delete_user_cb=lambda user: user is not entered)
    replaced: dict[fx.Node, fx.Node] = {}  # merge nodes erased -> the calls that replaced them
    for j, (merge, fm) in enumerate(chosen):
        node, skip, f = (replaced.get(values[n], values[n]) for n in (fm.node, fm.skip, fm.f))
        with new.inserting_after(node):
            w = new.call_module(SITES, ("merge", j, skip, f))
        node.replace_all_uses_with(w, delete_user_cb=lambda user: user is not w)
        if fm.in_place:  # the tensor added into: later reads of it see the merge
            target = node.args[0]
            for user in list(target.users):
                if user is not node and user is not w and position.get(user, -1) > position[node]:
                    user.replace_input_with(target, w)
        new.erase_node(node)
        replaced[node] = w
    new.lint()
    code = new.python_code(root_module="self")
    scope = dict(code.globals)
    exec(compile(code.src, f"<skiplab.rewire {found.name or type(found.module).__name__}>", "exec"), scope)
    return scope["forward"]
