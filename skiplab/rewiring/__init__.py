"""Rewire a model's residual merges to another skip strategy.

>>> rewired = skiplab.rewire(model, "rezero", example=x)        # doctest: +SKIP

(The package is ``skiplab.rewiring``, so that ``skiplab.rewire`` is the function.)

:func:`rewire` finds each ``x + f(x)`` of ``model`` (:mod:`.find`: ``torch.fx`` on each
module's own forward, known block patterns where fx fails), and returns a copy of the model
in which each becomes the strategy's connection from the stream contract
(:mod:`skiplab.skips`): ``write(stream, f)``, its branch reading ``read(stream)``. A stream
of several tensors (DenseFormer's block outputs, the copies of hyper-connections and mHC)
is expanded (``init``) before the model's first merge and reduced (``readout``) after its
last, which needs the merges to form one chain (a pre-norm stack: each block hands the next
its last merge). The model passed in is not changed.

Facts asked of the strategy, never of its name: a strategy whose width rule changes the
stream's width (the concatenations) is refused, since the layers after a merge expect the
old width; ``single_tensor`` says whether the chain is needed; ``starts_as_residual`` says
whether the rewired model starts by computing what the original computed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..skips import STRATEGIES, BlockWidths, Site, Strategy, get_strategy
from .find import FX, Found, Merge, Plan, find_merges, fmt
from .patterns import PATTERNS, Pattern
from .rewrite import SITES, rewritten_forward
from .sites import MergeSites, Stream, generated_class, runtime_class

ORIGINAL = "original"  # the name a comparison gives the model as it was written


@dataclass
class Rewiring:
    """What :func:`rewire` did: the strategy, its options, every merge found (rewired or
    left as it is, with why), and per rewired merge the connection's class."""

    strategy: Strategy
    options: dict[str, Any]
    merges: list[Merge]
    batch: int | None
    connections: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One per merge found: name, found by, skip, branch, shape, what it becomes."""
        out, k = [], 0
        for m in self.merges:
            becomes = m.reason
            if m.rewired:
                becomes = self.connections[k]
                k += 1
            out.append({**m.to_dict(), "shape_text": fmt(m.shape, self.batch), "becomes": becomes})
        return out


def _strategy(skip: str | Strategy) -> Strategy:
    return skip if isinstance(skip, Strategy) else get_strategy(skip)


def default_example(model: nn.Module) -> Any:
    """An input for a Hugging Face language model (``config.vocab_size``): token ids
    (2, 8); None for other models."""
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:
        positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 8
        return torch.randint(0, vocab, (2, min(8, int(positions))), generator=torch.Generator().manual_seed(0))
    return None


def keeps_width(strategy: Strategy, opts: dict[str, Any] | None = None, width: int = 8) -> bool:
    """Whether the strategy's merges keep the stream's width (its width rule, asked)."""
    opts = strategy.resolve({}, width) if opts is None else opts
    return all(strategy.widths(width, opts, l) == BlockWidths(width, width, width) for l in (1, 2, 3))


def _names(which) -> str:
    return ", ".join(s.name for s in STRATEGIES.values() if which(s))


def check_applies(strategy: Strategy, opts: dict[str, Any], width: int) -> None:
    """A strategy whose merge changes the stream's width cannot rewire a model whose next
    layers expect the old width (concatenation): UserError, one line."""
    if not keeps_width(strategy, opts, width):
        w = next(strategy.widths(width, opts, l) for l in (1, 2, 3)
                 if strategy.widths(width, opts, l) != BlockWidths(width, width, width))
        raise UserError(f"skip {strategy.name!r} cannot rewire a model: its merge makes the stream {w.out_width} "
                        f"wide from {width} (branch output {w.features}), and the layers after each merge expect "
                        f"{width}; use a strategy that keeps the width ({_names(keeps_width)})")


def plan(model: nn.Module, example: Any = None, channel_dim: int | None = None) -> Plan:
    """The merges :func:`rewire` would rewire (nothing is changed)."""
    if example is None:
        example = default_example(model)
    if example is None:
        raise UserError(f"rewire: give example=, an input batch {type(model).__name__} accepts (the merges' shapes "
                        f"are read from one forward)")
    if channel_dim is not None and channel_dim not in (1, -1):
        raise UserError(f"channel_dim: must be 1 (channels first) or -1 (channels last), got {channel_dim!r}")
    return find_merges(model, example, channel_dim)


def _gate_maker(shape: tuple[int, ...], channel_dim: int):
    def make_gate(c_in: int, c_out: int) -> nn.Module:
        if channel_dim == -1 or len(shape) <= 2:
            return nn.Linear(c_in, c_out)
        conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}.get(len(shape))
        if conv is None:
            raise UserError(f"rewire: no gate layer for a {len(shape)}-D stream with channels first")
        return conv(c_in, c_out, 1)
    return make_gate


def rewire(model: nn.Module, skip: str | Strategy, example: Any = None, *, channel_dim: int | None = None,
           found: Plan | None = None, **options: Any) -> nn.Module:
    """A copy of ``model`` with each residual merge replaced by ``skip``'s connection.

    ``example``: an input batch (a tensor, a tuple of positional inputs or a dict of keyword
    inputs) for the probe forward that reads the merges' shapes; a Hugging Face language
    model gets token ids by default. ``channel_dim``: where the stream's channels are (1 or
    -1), when the guess (channels first after a convolution or batch norm, else last) is
    wrong. ``options``: the strategy's own (``streams=2`` for hyper). ``found``: a plan
    from :func:`plan` of this model, to skip finding again. The copy's
    ``skiplab_rewiring`` (a :class:`Rewiring`) says what was done. Raises UserError (one
    line) when no merge is found, when the strategy cannot apply, or when a stream of
    several tensors meets merges that do not form one chain.
    """
    strategy = _strategy(skip)
    p = found if found is not None else plan(model, example, channel_dim)
    merges = p.rewired
    if not merges:
        left = [m for m in p.merges if not m.rewired]
        what = f"; found {len(left)}, each left as it is: " + "; ".join(f"{m.name}: {m.reason}" for m in left[:3]) \
            if left else ""
        raise UserError(f"rewire: no residual merge (x + f(x)) found in {p.model}: {p.searched()}{what}")
    width = merges[0].width
    opts = strategy.resolve(options, width)
    check_applies(strategy, opts, width)
    several = not strategy.single_tensor(opts)
    if several and p.chain:
        raise UserError(f"skip {strategy.name!r} carries a stream of several tensors from the first merge to the "
                        f"last, which needs the merges to form one chain (a pre-norm stack); here {p.chain}; "
                        f"use a one-tensor strategy "
                        f"({_names(lambda s: keeps_width(s) and s.single_tensor(s.resolve({}, 8)))})")
    if several and len({m.width for m in merges}) > 1:
        raise UserError(f"skip {strategy.name!r} needs one stream width; the merges have widths "
                        f"{sorted({m.width for m in merges})}")
    new = copy.deepcopy(model)
    modules = dict(new.named_modules())
    stream = Stream(strategy, opts) if several else None
    blocks = [f for f in p.found if f.rewired]
    count, k = len(merges), 0
    kinds = []
    for b, f in enumerate(blocks, 1):
        conns = []
        chosen = f.rewired
        for j, m in enumerate(chosen):
            site = Site(index=k + 1, count=count, block=b, depth=len(blocks), last_in_block=j == len(chosen) - 1,
                        widths=BlockWidths(m.width, m.width, m.width), channel_dim=m.channel_dim)
            conns.append(strategy.connection(None, site, opts, _gate_maker(m.shape, m.channel_dim)))
            k += 1
        kinds += [type(c).__name__ for c in conns]
        sites = MergeSites(conns, stream, offset=k - len(conns), first=b == 1)
        if stream is not None:
            stream.connections += conns
        target = modules[f.name]
        if hasattr(target, SITES):
            raise UserError(f"rewire: {f.name or '(model)'} is rewired already; rewire the original model")
        target.add_module(SITES, sites)
        if f.found_by == FX:
            target.__class__ = generated_class(type(target), rewritten_forward(f, several))
        else:
            target.__class__ = runtime_class(type(target), f.pattern.stream)
    device = next((t.device for t in model.parameters()), None)
    if device is not None:
        new.to(device)
    new.skiplab_rewiring = Rewiring(strategy, opts, copy.deepcopy(p.merges), p.batch, kinds)
    return new


__all__ = ["rewire", "plan", "Plan", "Merge", "Found", "Rewiring", "PATTERNS", "Pattern", "ORIGINAL",
           "check_applies", "keeps_width", "default_example"]
