"""Concatenation at linear memory: each feature stored once, the concatenation recomputed.

A naive dense connection hands every branch ``cat(f_0, ..., f_{l-1})`` and the branch's
first layer keeps that tensor for its weight gradient: sum over l of (w + (l - 1) k)
channels, quadratic in depth, although every channel in it is a copy of a feature that
already exists. Pleiss et al. ("Memory-efficient implementation of DenseNets", arXiv
1707.06990, Sec. 3) keep the features in shared storage and recompute the cheap parts on
the concatenation (the concatenation itself, and the norm and activation of a
pre-activation DenseNet) during backward, never the convolution; their DenseNet-BC-100
went from 2.863 GB to 1.605 GB at about +25% time.

Here that is one autograd Function, :class:`_ConcatLayer`, over a branch's first part:
``y = layer(prefix(cat(pieces)))``. Forward computes ``y`` with nothing kept but the pieces
(the features, which exist anyway) and the layer's weight. Backward rebuilds
``prefix(cat(pieces))`` once, gives the layer's gradients from it with the same ATen
backward calls autograd would use (``mm`` for Linear, ``convolution_backward`` for convs,
so the result matches the naive path), and sends the rest back through the recomputed
prefix. The layer itself is never run twice, which is why this is a Function and not
``torch.utils.checkpoint`` (that would recompute the layer, the expensive part).

A prefix with batch norm computes the same batch statistics again in backward, but its
running statistics are restored afterwards, so they are updated exactly once per step
(torchvision's checkpointed DenseNet updated them twice; see pytorch/vision#2221).

The stream of an efficient dense connection is :class:`Pieces`: the features in order.
A branch learns to take Pieces by declaring ``memory_split()`` -> ``(prefix modules,
first layer, rest)``; any ``nn.Linear``/``nn.Conv*d``, and any ``nn.Sequential`` of
norms/activations then a Linear/conv then anything, is split without being asked.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

# Cheap modules a prefix may hold: recomputing them costs element-wise work only.
_CHEAP = tuple(m for m in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None),
                           nn.Identity, nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU) if m is not None)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class Pieces(tuple):
    """The stream of an efficient concatenating connection: its features in order; their
    concatenation along ``dim`` (the layout's channel dim, set by the connection that
    appended the last piece; None while there is one piece) is the state a naive
    connection holds."""

    dim: int | None
    shared: "Shared | None"  # one per forward pass of a growing (dense) state, else None

    def __new__(cls, items=(), dim: int | None = None, shared: "Shared | None" = None):
        out = super().__new__(cls, items)
        out.dim, out.shared = dim, shared
        out.hold = None  # the concatenation of all but the newest piece, if one was built
        return out


class Shared:
    """What the sublayers of one forward pass of a dense state share (Pleiss et al.'s
    shared storage, Sec. 3): in forward, the last concatenation built (the next one is
    it plus one piece: a two-input cat, as naive, not an l-input one); in backward, the
    whole concatenation rebuilt once (every earlier sublayer's input is a prefix of it)
    and one gradient buffer for it, which each sublayer adds its input's gradient into
    (one add per sublayer, as naive's chain of cats; per-piece gradients would be
    quadratic in ops). A piece's gradient is complete, and handed on, when the sublayer
    it was newest in runs backward: every later sublayer has run by then, since they all
    consume that piece's successors. Both buffers are dropped when the first sublayer's
    backward is done."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None  # forward, during one sublayer: the previous concatenation
        self.values: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None

    def forward_cat(self, pieces: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
        last = self.last
        width = sum(p.shape[dim] for p in pieces[:-1])
        if last is not None and last.shape[dim] == width:
            z = torch.cat([last, pieces[-1]], dim)
        else:
            z = torch.cat(list(pieces), dim) if len(pieces) > 1 else pieces[0]
        self.last = z
        return z

    def backward_cat(self, pieces: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
        width = sum(p.shape[dim] for p in pieces)
        if self.values is None or self.values.shape[dim] < width:
            self.values = torch.cat(list(pieces), dim) if len(pieces) > 1 else pieces[0]
        return self.values.narrow(dim, 0, width)

    def _add(self, g: torch.Tensor, dim: int) -> torch.Tensor:
        """Add ``g`` into the first channels of the gradient buffer; the region added to."""
        width = g.shape[dim]
        if self.grad is None:
            self.grad = g.clone()  # the first to arrive (the head's, in naive's order too)
            return self.grad
        if self.grad.shape[dim] < width:  # a wider gradient than any so far: grow the buffer
            wider = torch.zeros_like(g)
            wider.narrow(dim, 0, self.grad.shape[dim]).copy_(self.grad)
            self.grad = wider
        region = self.grad.narrow(dim, 0, width)
        region += g
        return region

    def add_readout_grad(self, g: torch.Tensor, pieces, dim: int) -> list:
        """A readout's gradient: the newest piece's is handed on now (no sublayer has it as
        its newest input); the rest waits in the buffer for the sublayers."""
        newest = pieces[-1].shape[dim]
        width = g.shape[dim] - newest
        self._add(g.narrow(dim, 0, width), dim)
        return [None] * (len(pieces) - 1) + [g.narrow(dim, width, newest).clone()]

    def add_grad(self, gz: torch.Tensor, pieces, dim: int, need) -> list:
        width = gz.shape[dim]
        g = self._add(gz, dim)
        newest = pieces[-1].shape[dim]
        out = [None] * (len(pieces) - 1) + [g.narrow(dim, width - newest, newest).clone() if need[-1] else None]
        if len(pieces) == 1:
            self.values = self.grad = None  # the first sublayer: this pass is done
        return out


Split = tuple[Sequence[nn.Module], nn.Module, Callable[[torch.Tensor], torch.Tensor]]


def split_branch(branch: nn.Module) -> Split:
    """``(prefix, layer, rest)`` with ``branch(z) == rest(layer(prefix(z)))``; ValueError
    when the branch has no such form."""
    if hasattr(branch, "memory_split"):
        return branch.memory_split()
    if isinstance(branch, _LAYERS):
        return (), branch, lambda y: y
    if isinstance(branch, nn.Sequential):
        mods = list(branch)
        for i, m in enumerate(mods):
            if isinstance(m, _LAYERS):
                rest = nn.Sequential(*mods[i + 1:])
                return mods[:i], m, rest
            if not isinstance(m, _CHEAP):
                break
    raise ValueError(f"memory='efficient': the branch ({type(branch).__name__}) must start with norms or "
                     f"activations, then a Linear or Conv (or declare memory_split()); use memory='naive'")


def run_on_pieces(branch: nn.Module, pieces: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """``branch(cat(pieces, dim))``, keeping only the pieces for backward where the naive
    path keeps the concatenation and what the prefix makes of it."""
    prefix, layer, rest = split_branch(branch)
    return rest(first_layer_on_pieces(pieces, dim, prefix, layer))


def first_layer_on_pieces(pieces: Sequence[torch.Tensor], dim: int, prefix: Sequence[nn.Module],
                          layer: nn.Module) -> torch.Tensor:
    """``layer(prefix(cat(pieces, dim)))`` through :class:`_ConcatLayer`."""
    if not isinstance(layer, _LAYERS):
        raise ValueError(f"memory='efficient': the first layer must be a Linear or Conv, got {type(layer).__name__}")
    prefix_params = [p for m in prefix for p in m.parameters() if p.requires_grad]
    weights = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
    shared = getattr(pieces, "shared", None)
    return _ConcatLayer.apply((dim, tuple(prefix), layer, shared), len(pieces), len(prefix_params), *pieces,
                              *prefix_params, *weights)


def _run_prefix(prefix: Sequence[nn.Module], z: torch.Tensor, hooks: bool = True) -> torch.Tensor:
    """The prefix on ``z``; without module hooks for the recomputation in backward (a hook
    tracker such as FlopCounterMode's would see a second forward inside backward)."""
    for m in prefix:
        z = m(z) if hooks else m.forward(z)
    return z


def _buffers(prefix: Sequence[nn.Module]) -> list[torch.Tensor]:
    return [b for m in prefix for b in m.buffers()]


class _ConcatLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, how, n, m, *tensors):
        dim, prefix, layer, shared = how
        pieces = tensors[:n]
        if shared is not None:
            z = shared.forward_cat(pieces, dim)
        else:
            z = torch.cat(pieces, dim) if n > 1 else pieces[0]
        y = layer(_run_prefix(prefix, z))  # batch norm in the prefix updates its running stats here, once
        ctx.how, ctx.n, ctx.m = how, n, m
        ctx.save_for_backward(*pieces, layer.weight)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        *pieces, weight = ctx.saved_tensors
        (dim, prefix, layer, shared), n, m = ctx.how, ctx.n, ctx.m
        need = ctx.needs_input_grad[3:]
        need_pieces, need_prefix = need[:n], need[n:n + m]
        need_w, need_b = need[n + m], layer.bias is not None and need[n + m + 1]
        if shared is not None:
            z = shared.backward_cat(pieces, dim)
        else:
            z = torch.cat(pieces, dim) if n > 1 else pieces[0]
        g_prefix = [None] * m
        if not prefix:  # the common case (the layer comes first)
            gz, gw, gb = _layer_backward(layer, z, weight, dy, need_w, need_b)
        else:
            with torch.enable_grad():
                leaf = z.detach().requires_grad_(any(need_pieces))
                # Recompute the prefix. Batch norm's running statistics are put back once its
                # gradient is taken (its op keeps them), so the step updates them once, as naive.
                saved = [b.clone() for b in _buffers(prefix)]
                p = _run_prefix(prefix, leaf, hooks=False)
            gp, gw, gb = _layer_backward(layer, p.detach(), weight, dy, need_w, need_b)
            params = [q for m_ in prefix for q in m_.parameters() if q.requires_grad]
            inputs = ([leaf] if leaf.requires_grad else []) + [q for q, g in zip(params, need_prefix) if g]
            grads = iter(torch.autograd.grad(p, inputs, gp, allow_unused=True) if inputs and p.requires_grad else ())
            with torch.no_grad():
                for b, old in zip(_buffers(prefix), saved):
                    b.copy_(old)
            gz = next(grads) if leaf.requires_grad else None
            g_prefix = [next(grads) if g else None for g in need_prefix]
        if gz is None:
            g_pieces = [None] * n
        elif shared is not None:
            g_pieces = shared.add_grad(gz, pieces, dim, need_pieces)
        else:
            g_pieces = _split(gz, pieces, dim, need_pieces)
        tail = [gw] + ([gb] if layer.bias is not None else [])
        return (None, None, None, *g_pieces, *g_prefix, *tail)


def _split(gz: torch.Tensor, pieces, dim: int, need) -> list:
    """The concatenation's gradient cut into its pieces' gradients, each a fresh tensor
    (a view would keep all of ``gz`` alive until that piece's own backward)."""
    if len(pieces) == 1:
        return [gz if need[0] else None]
    parts = gz.split([p.shape[dim] for p in pieces], dim)
    return [g.clone() if want else None for g, want in zip(parts, need)]


def _layer_backward(layer, x, weight, dy, need_w, need_b):
    """Gradients of ``layer(x)`` for input, weight and bias, with the ATen calls autograd's
    own backward formulas make (derivatives.yaml: addmm/mm for linear,
    convolution_backward for convs)."""
    if isinstance(layer, nn.Linear):
        x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        gx = dy2.mm(weight).view(x.shape)
        gw = x2.t().mm(dy2).t() if need_w else None  # addmm's mat2 gradient, transposed back
        gb = dy2.sum(0) if need_b else None
        return gx, gw, gb
    conv = layer
    pad = conv.padding if not isinstance(conv.padding, str) else _same_padding(conv)
    if conv.padding_mode != "zeros":
        raise ValueError("memory='efficient': convs with padding_mode other than 'zeros' are not supported")
    gx, gw, gb = torch.ops.aten.convolution_backward(
        dy, x, weight, [weight.shape[0]] if conv.bias is not None else None, list(conv.stride), list(pad),
        list(conv.dilation), False, [0] * len(conv.stride), conv.groups, [True, bool(need_w), bool(need_b)])
    return gx, gw, gb


def _same_padding(conv) -> tuple[int, ...]:
    if conv.padding == "valid":
        return (0,) * len(conv.kernel_size)
    pads = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    if any(p % 2 for p in pads):
        raise ValueError("memory='efficient': padding='same' with an even kernel is not supported")
    return tuple(p // 2 for p in pads)


def concat(pieces: Pieces) -> torch.Tensor:
    """The materialised state (what the head reads): one copy, or the piece itself."""
    if len(pieces) == 1:
        return pieces[0]
    if pieces.shared is not None:
        return _Readout.apply((pieces.dim, pieces.shared), *pieces)
    return torch.cat(list(pieces), pieces.dim)


class _Readout(torch.autograd.Function):
    """``cat(pieces)`` for a head, whose gradient joins the shared buffer (so a piece's
    gradient is summed in the order naive's chain of cats sums it)."""

    @staticmethod
    def forward(ctx, how, *pieces):
        ctx.how = how
        ctx.widths = [p.shape[how[0]] for p in pieces]
        return torch.cat(pieces, how[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        dim, shared = ctx.how
        pieces = [g.narrow(dim, 0, w) for w in ctx.widths]  # only their widths are read
        return (None, *shared.add_readout_grad(g, pieces, dim))


__all__ = ["Pieces", "split_branch", "run_on_pieces", "first_layer_on_pieces", "concat"]
