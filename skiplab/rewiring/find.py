"""Finding a model's residual merges: ``x + f(x)``, where ``f``'s input is ``x``.

Each module's *own* forward is traced with ``torch.fx``, its children kept as single
nodes (``_OwnCode``), so a merge belongs to the module whose code adds: a block, not
the model around it. In a traced graph, an addition ``a + b`` (``operator.add``,
``torch.add``, ``Tensor.add``, in place ``out += identity`` and ``add_``) is a merge when

* one operand is computed from the other (``a`` an ancestor of ``b`` by value, not just by
  shape: ``x.size()`` and ``zeros_like(x)`` do not count), and the path between them holds
  a layer (a child with parameters, or an op on a parameter): ``x + f(x)``. Without a layer
  it is arithmetic (``x + 0.044715 x^3`` inside GELU), not a skip;
* or both come from one tensor ``x`` and only one of the two paths holds a layer: the
  other is a parameterless shortcut, children without parameters only (``nn.Identity()(x)``);
  the merge is ``x + f(x)`` still.
  Where both paths hold layers, the shortcut is a projection (``downsample(x)``): the merge
  is named and left as it is, since the stream changes shape there (or the two operands
  are two branches, not a stream and a branch).

Shapes come from one probe forward of the model on the example input (``ShapeProp`` on
each traced graph with the inputs the module got). A merge whose operands' shapes differ
(a broadcast) is left as it is and named. A module fx cannot trace is matched against the
known block patterns (:mod:`.patterns`), whose merges the probe sees happen
(:class:`~.sites.MergeWatch`); the others are named as not searched.

The probe also records the order the merging modules run in and what each is handed:
a stream of several tensors (DenseFormer, hyper-connections, mHC) can only be rewired when
the merges form one chain, each module's first merge adding the tensor the previous
module returned from its last merge (a pre-norm stack).
"""

from __future__ import annotations

import functools
import inspect
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UserError
from ..profiling.profiler import tensors_of
from .patterns import Pattern, pattern_names, pattern_of
from .sites import MergeWatch

FX = "torch.fx"
SHAPE_METHODS = {"size", "dim", "numel", "nelement", "stride", "type", "get_device", "new_zeros", "new_ones",
                 "new_empty", "new_full", "element_size"}
SHAPE_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda", "layout", "requires_grad"}
SHAPE_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
                   torch.randn_like, torch.randint_like, len}
ADD_FUNCTIONS = {operator.add: False, operator.iadd: True, torch.add: False}
ADD_METHODS = {"add": False, "__add__": False, "__radd__": False, "add_": True, "__iadd__": True}
CHANNEL_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                 nn.modules.instancenorm._InstanceNorm)
CHANNEL_FIRST_FUNCTIONS = {torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d,
                           torch.nn.functional.batch_norm, torch.nn.functional.group_norm}


@dataclass
class Merge:
    """One addition found. ``module``: the dotted name of the module whose forward adds
    (``""``: the model itself); ``index``: its place among that module's merges (1-based);
    ``branch``: the children (or ops) between the stream and the branch output; ``skip``:
    what the stream side carries; ``shape``: the stream's shape at the merge (the probe's
    batch); ``rewired``: whether it becomes the strategy's connection, else ``reason``."""

    module: str
    index: int
    branch: str
    skip: str
    shape: tuple[int, ...] | None
    rewired: bool
    reason: str
    found_by: str
    in_place: bool = False
    channel_dim: int = -1
    of: int = 1  # merges in its module

    @property
    def name(self) -> str:
        where = self.module or "(model)"
        return where if self.of == 1 else f"{where}#{self.index}"

    @property
    def width(self) -> int | None:
        return None if self.shape is None or not self.shape else self.shape[self.channel_dim]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module, "index": self.index, "branch": self.branch,
                "skip": self.skip, "shape": None if self.shape is None else list(self.shape),
                "rewired": self.rewired, "reason": self.reason, "found_by": self.found_by,
                "in_place": self.in_place, "channel_dim": self.channel_dim}


@dataclass
class _FxMerge:
    node: fx.Node
    skip: fx.Node
    f: fx.Node
    root: fx.Node  # the stream the skip carries (the skip itself, or what a parameterless shortcut takes)
    in_place: bool
    kind: str  # "identity" | "shortcut" | "projection"
    shortcut: str = ""


@dataclass
class Found:
    """The merges of one module's own forward."""

    name: str
    module: nn.Module
    found_by: str  # FX or "pattern CLASS"
    merges: list[Merge] = field(default_factory=list)
    graph: fx.Graph | None = None
    fx_merges: list[_FxMerge] = field(default_factory=list)
    pattern: Pattern | None = None
    stream_arg: str | None = None  # the forward argument its first merge's stream comes in by
    chain: str = ""  # "" when its merges form a chain returned by the module; else why not

    @property
    def rewired(self) -> list[Merge]:
        return [m for m in self.merges if m.rewired]


@dataclass
class Plan:
    """What :func:`find_merges` found in a model."""

    model: str  # its class name
    found: list[Found]  # modules with merges, in the order the probe ran them (unrun ones last)
    traced: int  # modules whose own forward fx traced
    untraced: list[tuple[str, str, str]]  # (name, class, why) of modules not searched
    chain: str  # "" when every rewired merge is on one stream chain (several-tensor streams need it)
    batch: int | None  # the probe's batch size (shapes' first dim)

    @property
    def merges(self) -> list[Merge]:
        return [m for f in self.found for m in f.merges]

    @property
    def rewired(self) -> list[Merge]:
        return [m for m in self.merges if m.rewired]

    def searched(self) -> str:
        """What was searched, for the line that says nothing was found."""
        out = (f"traced {self.traced} module{'s' * (self.traced != 1)} with torch.fx, looking for x + f(x) with a "
               f"layer in f")
        if self.untraced:
            classes: dict[str, int] = {}
            for _, cls, _ in self.untraced:
                classes[cls] = classes.get(cls, 0) + 1
            names = ", ".join(f"{c} x{n}" if n > 1 else c for c, n in classes.items())
            out += (f"; {len(self.untraced)} could not be traced and match no known block ({pattern_names()}): "
                    f"{names}")
        return out


class _OwnCode(fx.Tracer):
    """Traces a module's own forward: every child call is one node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return True


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:160]}" if text else type(e).__name__


def _modes(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in module.modules()]


def trace_own(module: nn.Module) -> fx.Graph:
    """The module's own forward as a graph; raises where fx cannot trace it, or where its
    code differs between training and evaluation (a graph specialises on ``self.training``)."""
    modes = _modes(module)
    try:
        graphs = []
        for training in (True, False):
            module.train(training)
            graphs.append(_OwnCode().trace(module))
    finally:
        for m, t in modes:
            m.training = t
    if graphs[0].python_code("self").src != graphs[1].python_code("self").src:
        raise ValueError("its code differs between train() and eval()")
    return graphs[1] if not modes[0][1] else graphs[0]


def _attr(module: nn.Module, target: str) -> Any:
    return functools.reduce(getattr, target.split("."), module)


def _value_inputs(node: fx.Node) -> list[fx.Node]:
    if node.op == "call_method" and node.target in SHAPE_METHODS:
        return []
    if node.op == "call_function":
        if node.target in SHAPE_FUNCTIONS:
            return []
        if node.target is getattr and len(node.args) > 1 and node.args[1] in SHAPE_ATTRIBUTES:
            return []
    return list(node.all_input_nodes)


class _Graph:
    """Value ancestry and layers of one traced graph."""

    def __init__(self, graph: fx.Graph, module: nn.Module):
        self.module = module
        self.nodes = list(graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.deps: dict[fx.Node, frozenset] = {}
        for n in self.nodes:
            ins = _value_inputs(n)
            self.deps[n] = frozenset().union(*(self.deps[i] | {i} for i in ins)) if ins else frozenset()
        self.placeholders = [n for n in self.nodes if n.op == "placeholder"]

    def activation(self, n: Any) -> bool:
        return isinstance(n, fx.Node) and (n.op == "placeholder" or any(p in self.deps[n] for p in self.placeholders))

    def layer(self, n: fx.Node) -> bool:
        """A child with parameters, or an op on a parameter (``F.linear(x, self.w)``, ``self.alpha * f``)."""
        if n.op == "call_module":
            return any(True for _ in _attr(self.module, n.target).parameters())
        if n.op in ("call_function", "call_method"):
            return any(i.op == "get_attr" and isinstance(_attr(self.module, i.target), nn.Parameter)
                       for i in n.all_input_nodes)
        return False

    def path(self, s: fx.Node, f: fx.Node) -> list[fx.Node]:
        """The nodes after ``s`` up to ``f`` that ``f``'s value depends on through ``s``."""
        return [n for n in self.nodes if s in self.deps[n] and (n is f or n in self.deps[f])]

    def classify(self, a: Any, b: Any) -> tuple[str, fx.Node, fx.Node, fx.Node, list[fx.Node]] | None:
        """(kind, skip, f, root, shortcut path) of ``a + b``, or None when it is no merge."""
        if not (self.activation(a) and self.activation(b)) or a is b:
            return None
        for s, f in ((a, b), (b, a)):
            if s in self.deps[f]:
                return ("identity", s, f, s, []) if any(self.layer(n) for n in self.path(s, f)) else None
        common = [n for n in (self.deps[a] | {a}) & (self.deps[b] | {b}) if self.activation(n)]
        if not common:
            return None
        fork = max(common, key=self.order.__getitem__)
        pa, pb = self.path(fork, a), self.path(fork, b)
        la, lb = sum(self.layer(n) for n in pa), sum(self.layer(n) for n in pb)
        if not la and not lb:
            return None
        if la and lb:  # the side with fewer layers is the shortcut
            s, f, ps = (b, a, pb) if lb <= la else (a, b, pa)
            return "projection", s, f, fork, ps
        s, f, ps = (b, a, pb) if la else (a, b, pa)
        if any(n.op != "call_module" for n in ps):  # arithmetic on x, not a shortcut module
            return None
        return "shortcut", s, f, fork, ps

    def describe(self, nodes: list[fx.Node], limit: int = 6) -> str:
        names = [str(n.target) if n.op == "call_module" else getattr(n.target, "__name__", str(n.target))
                 for n in nodes if n.op in ("call_module", "call_function", "call_method")]
        calls = [str(n.target) for n in nodes if n.op == "call_module"]
        names = calls or names
        if len(names) > limit:
            names = names[:3] + ["..."] + names[-2:]
        return " -> ".join(names) or "-"


def _add_operands(node: fx.Node) -> tuple[Any, Any, bool] | None:
    if node.kwargs or len(node.args) != 2:
        return None
    if node.op == "call_function" and node.target in ADD_FUNCTIONS:
        return node.args[0], node.args[1], ADD_FUNCTIONS[node.target]
    if node.op == "call_method" and node.target in ADD_METHODS:
        return node.args[0], node.args[1], ADD_METHODS[node.target]
    return None


def _channel_dim(g: _Graph, nodes: list[fx.Node]) -> int:
    """Channels first (1) when the branch's first layer is a convolution or a batch/group
    norm, else last (-1)."""
    for n in nodes:
        if n.op == "call_module":
            m = _attr(g.module, n.target)
            if any(True for _ in m.parameters()):
                first = next((c for c in m.modules() if any(True for _ in c.parameters(recurse=False))), m)
                return 1 if isinstance(first, CHANNEL_FIRST) else -1
        elif n.op == "call_function" and g.layer(n):
            return 1 if n.target in CHANNEL_FIRST_FUNCTIONS else -1
    return -1


def _analyse(name: str, module: nn.Module, graph: fx.Graph) -> Found | None:
    g = _Graph(graph, module)
    fx_merges = []
    for n in g.nodes:
        ops = _add_operands(n)
        if ops is None:
            continue
        c = g.classify(ops[0], ops[1])
        if c is None:
            continue
        kind, s, f, root, ps = c
        fx_merges.append(_FxMerge(n, s, f, root, ops[2], kind, g.describe(ps)))
    if not fx_merges:
        return None
    found = Found(name, module, FX, graph=graph, fx_merges=fx_merges)
    for i, m in enumerate(fx_merges, 1):
        branch = g.path(m.root, m.f)
        earlier = [k for k, e in enumerate(fx_merges[:i - 1], 1) if e.node is m.root]
        skip = (str(m.root.target) if m.root.op == "placeholder" else f"#{earlier[0]}" if earlier
                else m.root.name)
        if m.kind != "identity":
            skip = f"{m.shortcut}({skip})"
        found.merges.append(Merge(name, i, g.describe(branch), skip, None, m.kind != "projection", "",
                                  FX, m.in_place, _channel_dim(g, branch), len(fx_merges)))
        if m.kind == "projection":
            found.merges[-1].reason = "projection shortcut: left as it is"
    found.chain = _fx_chain(g, fx_merges)
    first = fx_merges[0].root
    found.stream_arg = str(first.target) if first.op == "placeholder" else None
    return found


def _fx_chain(g: _Graph, merges: list[_FxMerge]) -> str:
    """'' when the merges form one chain: the first adds a forward argument, each next one
    the previous merge's output, and the module returns the last; else why not."""
    for i, m in enumerate(merges):
        if m.kind == "projection":
            return f"its merge {i + 1} is a projection shortcut"
        want = merges[i - 1].node if i else None
        if i == 0 and m.root.op != "placeholder":
            return f"its first merge adds {m.root.name}, not an argument of its forward"
        if i and m.root is not want:
            return f"its merge {i + 1} does not add the output of merge {i}"
    out = next(n for n in reversed(g.nodes) if n.op == "output").args[0]
    last = merges[-1].node
    if out is not last and not (isinstance(out, (tuple, list)) and out and out[0] is last):
        return "it does not return its last merge (something follows it, such as an activation)"
    return ""


def _bind(module: nn.Module, args: tuple, kwargs: dict) -> inspect.BoundArguments | None:
    try:
        ba = inspect.signature(module.forward).bind(*args, **kwargs)
    except TypeError:
        return None
    ba.apply_defaults()
    return ba


def _first_out(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) and out else out


def _as_call(example: Any) -> tuple[tuple, dict]:
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    return (example,), {}


def find_merges(model: nn.Module, example: Any, channel_dim: int | None = None) -> Plan:
    """The merges of ``model`` (see the module docstring), with shapes from one forward of
    ``example`` (a tensor, a tuple of positional inputs or a dict of keyword inputs) in
    eval mode without gradients; the model is left as it was."""
    if not isinstance(model, nn.Module):
        raise UserError(f"rewire: expected a torch.nn.Module, got {type(model).__name__}")
    found: dict[str, Found] = {}
    untraced: list[tuple[str, str, str]] = []
    traced = 0
    seen: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in seen:
            continue
        seen.add(id(module))
        builtin = type(module).__module__.startswith("torch.nn.modules")
        if builtin and not any(True for _ in module.children()):
            continue  # a torch layer (Linear, LayerNorm, ReLU): no residual merge in its code
        try:
            graph = trace_own(module)
        except Exception as e:  # noqa: BLE001 - any trace failure: try the patterns
            p = pattern_of(module)
            if p is not None:
                found[name] = Found(name, module, f"pattern {type(module).__name__}", pattern=p, stream_arg=p.stream)
            elif not builtin:
                untraced.append((name or "(model)", type(module).__name__, _first_line(e)))
            continue
        traced += 1
        f = _analyse(name, module, graph)
        if f is not None:
            found[name] = f
    order, batch, calls = _probe(model, example, found)
    if channel_dim is not None:
        for f in found.values():
            for m in f.merges:
                m.channel_dim = channel_dim
    ran = [found[n] for n in order]
    rest = [f for n, f in found.items() if n not in order]
    for f in rest:
        for m in f.merges:
            if m.rewired:
                m.rewired, m.reason = False, "not run by the example input: left as it is"
    plan = Plan(type(model).__name__, ran + rest, traced, untraced, "", batch)
    plan.chain = _model_chain(plan, calls)
    return plan


class _Call:
    def __init__(self, name: str):
        self.name, self.stream, self.out, self.args, self.kwargs = name, None, None, (), {}
        self.watch: MergeWatch | None = None
        self.seen: list[tuple[tuple[int, ...], bool]] = []


def _probe(model: nn.Module, example: Any, found: dict[str, Found]) -> tuple[list[str], int | None, list[tuple]]:
    """Run ``model`` once on ``example``; per module with merges: its inputs (for shapes),
    the stream it is handed and what it returns, the merges a pattern block makes. Returns
    the names in the order they ran, the batch size, and (name, stream in, out) per call."""
    args, kwargs = _as_call(example)
    calls: list[_Call] = []
    first_call: dict[str, _Call] = {}
    handles = []
    modules = {id(f.module): f for f in found.values()}

    def pre(module, a, k):
        f = modules[id(module)]
        c = _Call(f.name)
        ba = _bind(module, a, k)
        if ba is not None and f.stream_arg is not None:
            c.stream = ba.arguments.get(f.stream_arg)
        c.args, c.kwargs = a, k
        if f.pattern is not None and isinstance(c.stream, torch.Tensor):
            def seen(j, face, g, in_place, add, c=c):
                c.seen.append((tuple(face.shape), in_place))
                return add()
            c.watch = MergeWatch(c.stream, seen)
            c.watch.__enter__()
        calls.append(c)
        first_call.setdefault(f.name, c)

    def post(module, a, k, out):
        c = next(c for c in reversed(calls) if c.name == modules[id(module)].name and c.out is None)
        if c.watch is not None:
            c.watch.__exit__(None, None, None)
        c.out = _first_out(out)
        if c.watch is not None:
            c.last_face = c.watch.face

    for f in found.values():
        handles.append(f.module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(f.module.register_forward_hook(post, with_kwargs=True))
    modes = _modes(model)
    try:
        model.eval()
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the user's model or input: one line
        raise UserError(f"rewire: the model rejects the example input: {_first_line(e)}") from None
    finally:
        for c in calls:
            if c.watch is not None and c.out is None:
                c.watch.__exit__(None, None, None)
        for h in handles:
            h.remove()
        for m, t in modes:
            m.training = t
    batch = next((t.shape[0] for t in tensors_of((args, kwargs)) if t.dim() > 0), None)
    for name, c in first_call.items():
        f = found[name]
        if f.pattern is not None:
            _pattern_merges(f, c)
        else:
            _fx_shapes(f, c, batch)
    return list(first_call), batch, [(c.name, c.stream, c.out) for c in calls]


def _pattern_merges(f: Found, c: _Call) -> None:
    p = f.pattern
    n = len(c.seen)
    if p.projected(f.module):
        f.merges = [Merge(f.name, 1, p.branches[0], f"{p.projection}({p.stream})", None, False,
                          "projection shortcut: left as it is", f.found_by, False, p.channel_dim, 1)]
        f.chain = "its merge is a projection shortcut"
        return
    if n != p.merges:
        f.merges = [Merge(f.name, i + 1, b, p.stream, None, False,
                          f"the probe saw {n} additions of the stream, the pattern has {p.merges}: left as it is",
                          f.found_by, False, p.channel_dim, p.merges) for i, b in enumerate(p.branches)]
        f.chain = "its merges were not seen"
        return
    f.merges = [Merge(f.name, i + 1, b, f"#{i}" if i else p.stream, shape, True, "", f.found_by, in_place,
                      p.channel_dim, n)
                for i, (b, (shape, in_place)) in enumerate(zip(p.branches, c.seen))]
    last = getattr(c, "last_face", None)
    f.chain = "" if c.out is last else "it does not return its last merge"


def _fx_shapes(f: Found, c: _Call, batch: int | None) -> None:
    ba = _bind(f.module, c.args, c.kwargs)
    placeholders = [n for n in f.graph.nodes if n.op == "placeholder"]
    try:
        values = [ba.arguments[str(p.target)] for p in placeholders]
        gm = fx.GraphModule(f.module, f.graph)
        modes = _modes(f.module)
        f.module.eval()
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(*values)
        finally:
            for m, t in modes:
                m.training = t
    except Exception as e:  # noqa: BLE001 - no shapes: the merges stay as they are, named
        for m in f.merges:
            if m.rewired:
                m.rewired, m.reason = False, f"its shapes could not be read ({_first_line(e)}): left as it is"
        return

    def shape(n: fx.Node) -> tuple[int, ...] | None:
        meta = n.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    for m, fm in zip(f.merges, f.fx_merges):
        s, g, r = shape(fm.skip), shape(fm.f), shape(fm.root)
        m.shape = s
        if not m.rewired:
            if r is not None and s is not None and r != s:
                m.reason = f"projection shortcut {fmt(r, batch)} -> {fmt(s, batch)}: left as it is"
            else:
                m.reason = "both operands pass through layers (a projection shortcut, or two branches): left as it is"
            continue
        if s is None or g is None:
            m.rewired, m.reason = False, "its operands are not tensors with shapes: left as it is"
        elif s != g:
            m.rewired, m.reason = False, f"shapes differ ({fmt(s, batch)} + {fmt(g, batch)}, a broadcast): left as it is"
        elif r is not None and r != s:
            m.rewired, m.reason = False, f"its shortcut changes the shape {fmt(r, batch)} -> {fmt(s, batch)}: left as it is"
    if any(not m.rewired for m in f.merges) and not f.chain:
        f.chain = "one of its merges is left as it is"


def fmt(shape: tuple[int, ...] | None, batch: int | None = None) -> str:
    if shape is None:
        return "?"
    dims = ["B" if i == 0 and batch is not None and d == batch else str(d) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ")"


def _model_chain(plan: Plan, calls: list[tuple[str, Any, Any]]) -> str:
    """'' when the rewired merges form one stream over the whole model (needed by a
    stream of several tensors), else why not, naming the module."""
    rewired = {f.name for f in plan.found if f.rewired}
    if not rewired:
        return "no merge is rewired"
    for f in plan.found:
        if f.chain and (f.rewired or f.pattern is not None):
            return f"{f.name or '(model)'} ({type(f.module).__name__}): {f.chain}"
    return check_call_chain([c for c in calls if c[0] in rewired])


def check_call_chain(calls: list[tuple[str, Any, Any]]) -> str:
    """'' when each module is called once and is handed what the one before returned."""
    names = [c[0] for c in calls]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        return f"{twice or '(model)'} runs more than once in a forward"
    for (n1, _, out), (n2, x, _) in zip(calls, calls[1:]):
        if x is not out:
            return f"{n2} is not handed what {n1} returned (something runs on the stream between them)"
    return ""
