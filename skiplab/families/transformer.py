"""The transformer family: nanoGPT-shaped decoder blocks on a sequence, layout (B, T, C).

Stem: a token embedding (``vocab`` > 0) or a Linear from per-step features (numeric
sequences, e.g. MNIST-1D as 40 steps of one feature), plus learned positions. Each block is
two sublayers, each merged into the stream by the strategy: causal self-attention
(``heads``; qkv and output projections) then an MLP (Linear(C, r C) -> GELU -> Linear(r C, C),
r = ``mlp_ratio``). ``placement``: ``pre`` (default; x + F(norm(x)), a final norm before the
head) or ``post`` (the original Transformer's norm(x + F(x)); Xiong et al., arXiv 2002.04745,
compare the two). Head: next-token logits at every position (token input) or mean-pool ->
Linear (classification of numeric sequences).

Attention is ``F.scaled_dot_product_attention(q, k, v, is_causal=True)``: PyTorch picks the
kernel (flash on a CPU or GPU), so no T x T matrix is kept per head. Its FLOPs are counted
by the rules ``skiplab.profiling.flop_rules`` registers for the kernels
``torch.utils.flop_counter`` lacks (the CPU flash kernel in torch 2.13), a causal mask as the
full T x T (2 T C FLOPs per token each for QK^T and AV, what the explicit path's matmuls
cost).

With a strategy that changes widths (dense), a sublayer maps its input width to its
``features``: attention then works in ``features`` channels (heads must divide them) and
the MLP's hidden layer is ``mlp_ratio x features`` wide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..layers import make_activation
from ..skips.base import Connection, Option
from ..skips.shared_storage import Pieces, run_on_pieces
from .base import AfterMerge, Family, ShapeError

PLACEMENTS = ("pre", "post")


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, is_causal=True)``. Under ``torch.func.vmap`` on
    a CPU (the seed-batched engine) through SDPA's math backend: torch 2.13 has no batching
    rule for the CPU flash kernel, so vmap would run it once per seed with a warning, and the
    math backend is made of ops vmap batches (same FLOPs under the full T x T convention)."""
    if q.device.type == "cpu" and torch._C._are_functorch_transforms_active():
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, (B, T, in_width) -> (B, T, width) (Vaswani et al.,
    arXiv 1706.03762, Eq. 1; the causal mask of GPT, Radford et al. 2018)."""

    def __init__(self, in_width: int, width: int, heads: int, bias: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"CausalSelfAttention: heads ({heads}) must divide the width ({width})")
        self.width, self.heads = width, heads
        self.qkv = nn.Linear(in_width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.qkv(z))

    @property
    def first_layer(self) -> nn.Linear:
        return self.qkv

    def after_first(self, qkv: torch.Tensor) -> torch.Tensor:
        """Everything after the input projection, on its output (B, T, 3 width)."""
        B, T, _ = qkv.shape
        h, d = self.heads, self.width // self.heads
        q, k, v = (t.view(B, T, h, d).transpose(1, 2) for t in qkv.split(self.width, dim=-1))
        y = causal_attention(q, k, v)  # (B, h, T, d); scale 1 / sqrt(d)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, self.width))


class MLPSublayer(nn.Sequential):
    """Linear(in, r w) -> activation -> Linear(r w, w) (GPT-2's 4x MLP with GELU)."""

    def __init__(self, in_width: int, width: int, ratio: int, activation: str, bias: bool):
        super().__init__()
        self.fc = nn.Linear(in_width, ratio * width, bias=bias)
        self.act = make_activation(activation)
        self.proj = nn.Linear(ratio * width, width, bias=bias)

    @property
    def first_layer(self) -> nn.Linear:
        return self.fc

    def after_first(self, y: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(y))


class Sublayer(nn.Sequential):
    """A branch: norm (pre placement) then attention or the MLP."""

    def __init__(self, norm: nn.Module, body: nn.Module):
        super().__init__()
        self.norm = norm
        self.body = body

    takes_pieces = True  # forward accepts Pieces (below)

    def memory_split(self):
        """For memory-efficient concatenation (skips/shared_storage.py): the pre-norm is
        recomputed in backward, the body's input projection is not."""
        return (self.norm,), self.body.first_layer, self.body.after_first

    def forward(self, z):
        if isinstance(z, Pieces):  # a dense state kept as its features (memory="efficient")
            return run_on_pieces(self, z, z.dim)
        return super().forward(z)


class Stem(nn.Module):
    """Token embedding (or a Linear from per-step features) plus learned positions."""

    def __init__(self, spec, in_channels: int):
        super().__init__()
        self.tokens = spec.vocab > 0
        if self.tokens:
            self.embed = nn.Embedding(spec.vocab, spec.width)
        else:
            self.embed = nn.Linear(in_channels, spec.width, bias=spec.bias)
        # A parameter sliced per call, not an Embedding of arange(T): a slice keeps nothing
        # for backward. N(0, 1) as nn.Embedding's default init.
        self.positions = nn.Parameter(torch.randn(spec.context, spec.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x) + self.positions[:x.shape[1]]


class Readout(nn.Module):
    """Final norm (pre placement), then per-position logits or mean-pool -> Linear."""

    def __init__(self, norm: nn.Module, width: int, classes: int, bias: bool, pool: bool):
        super().__init__()
        self.norm = norm
        self.pool = pool
        self.fc = nn.Linear(width, classes, bias=bias)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = self.norm(s)
        return self.fc(s.mean(dim=1) if self.pool else s)


class PostNorm(AfterMerge):
    """Post-LN placement: ``norm(write(stream, f))``, the original Transformer's
    ``x <- LN(x + F(x))`` for any single-tensor strategy (Xiong et al., arXiv 2002.04745, Fig. 1)."""

    def __init__(self, inner: Connection, norm: nn.Module):
        super().__init__(inner, norm, "norm")


class Transformer(Family):
    name = "transformer"
    summary = "nanoGPT-shaped: blocks of causal self-attention then MLP, each merged by the skip; (B, T, C)"
    layout = "(B, T, C)"
    channel_dim = -1
    sublayers_per_block = 2
    default_input_shape = (1, 40)  # numeric: MNIST-1D as 40 steps of one feature
    input_form = "(features, steps) for numeric sequences, or (context,) for tokens"
    norms = ("layer", "rms", "none")
    default_norm = "layer"
    default_activation = "gelu"
    takes_tokens = True
    options = (
        Option("heads", int, 4, "attention heads; must divide the width (each attention sublayer's features)"),
        Option("context", int, None, "sequence length T (default: 64 for text; the data's steps for numeric sequences)"),
        Option("mlp_ratio", int, 4, "the MLP sublayer's hidden width over its output width (GPT-2: 4)"),
        # Xiong et al., arXiv 2002.04745, compare the two placements
        Option("placement", str, "pre", "pre: x + F(norm(x)); post: norm(x + F(x))", choices=PLACEMENTS),
        Option("vocab", int, 0, "token ids of this many symbols, a language model (train: from the text dataset); "
               "0: numeric input", minimum=0),
    )
    sublayer_names = ("attention", "mlp")

    # -- shapes -------------------------------------------------------------------------
    def check_input_shape(self, shape):
        if len(shape) not in (1, 2):
            raise ShapeError(f"transformer takes {self.input_form}")
        return shape

    def resolve_shape(self, spec) -> tuple[tuple[int, ...], dict]:
        """``(input_shape, {"context": T})`` of a spec: tokens are ``(context,)``; a numeric
        sequence ``(features, steps)`` has ``context = steps``."""
        if spec.vocab > 0:
            context = spec.context or 64
            if spec.input_shape is not None and tuple(spec.input_shape) != (context,):
                raise ShapeError(f"a token model takes (context,) = ({context},)")
            return (context,), {"context": context}
        shape = tuple(spec.input_shape) if spec.input_shape is not None else self.default_input_shape
        if len(shape) != 2:
            raise ShapeError(f"the transformer reads a sequence: (features, steps) of numbers, or token ids "
                             f"with vocab > 0; {','.join(map(str, shape))} has no single sequence axis")
        steps = shape[1]
        if spec.context is not None and spec.context != steps:
            longer = "longer than" if spec.context > steps else "shorter than"
            raise ShapeError(f"context {spec.context} is {longer} the data's {steps} steps; the model reads "
                             f"whole sequences (leave context out to take the data's)", field="")
        return shape, {"context": steps}

    def in_channels(self, shape):
        return shape[0] if len(shape) == 2 else 0  # tokens: the embedding's vocab, not a width

    def positions(self, shape):
        return shape[-1]

    def prepare_input(self, x, spec):
        if spec.vocab > 0:
            if x.dim() != 2 or x.shape[1] > spec.context:
                raise ValueError(f"input: expected token ids (batch, <= {spec.context}), got {tuple(x.shape)}")
            return x
        x = super().prepare_input(x, spec)
        return x.transpose(1, 2).contiguous()  # (B, C, T) -> (B, T, C)

    def random_batch(self, spec, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if spec.vocab > 0:
            x = torch.randint(0, spec.vocab, (batch, spec.context), generator=generator)
            return x, torch.randint(0, spec.classes, (batch, spec.context), generator=generator)
        return super().random_batch(spec, batch, generator)

    def check_spec(self, spec) -> None:
        """The family's own rules, beyond the shape (raises ValueError naming the field)."""
        if spec.placement == "post" and not spec.strategy.single_tensor(spec.opts):
            raise ValueError(f"placement: 'post' normalises the stream after each merge; skip {spec.skip!r} "
                             f"carries several tensors{' (with these options)' if spec.strategy.single_stream else ''}, "
                             f"so it takes placement 'pre' only")
        if spec.vocab > 0 and spec.classes != spec.vocab:
            raise ValueError(f"classes: a token model predicts the next token, so classes must equal vocab "
                             f"({spec.vocab}), got {spec.classes}")
        for site in spec.describe_sites():
            if site.index % 2 == 1 and site.widths.features % spec.heads:
                what = "the width" if site.widths.features == spec.width else f"sublayer {site.index}'s features"
                raise ValueError(f"heads: {spec.heads} heads must divide {what} ({site.widths.features})")

    def sublayer_name(self, site) -> str:
        return f"block {site.block} {self.kind(site)}"

    def size_step(self, spec) -> int:
        return spec.heads  # every attention sublayer's features split among the heads

    def kind(self, site) -> str:
        return self.sublayer_names[(site.index - 1) % 2]

    # -- parts --------------------------------------------------------------------------
    def layer(self, spec, in_width, out_width, bias):
        return nn.Linear(in_width, out_width, bias=bias)

    def norm(self, spec, width):
        if spec.norm == "none":
            return nn.Identity()
        return nn.RMSNorm(width) if spec.norm == "rms" else nn.LayerNorm(width)

    def stem(self, spec, in_channels):
        return Stem(spec, in_channels)

    def branch(self, spec, site):
        w = site.widths
        pre = self.norm(spec, w.in_width) if spec.placement == "pre" else nn.Identity()
        if self.kind(site) == "attention":
            body = CausalSelfAttention(w.in_width, w.features, spec.heads, spec.bias)
        else:
            body = MLPSublayer(w.in_width, w.features, spec.mlp_ratio, spec.activation, spec.bias)
        return Sublayer(pre, body)

    def branch_weight(self, branch):
        """The sublayer's input projection: attention's qkv, the MLP's first Linear."""
        body = branch.body
        return (body.qkv if isinstance(body, CausalSelfAttention) else body.fc).weight

    def place(self, connection, spec, site):
        if spec.placement == "post":
            return PostNorm(connection, self.norm(spec, site.widths.out_width))
        return connection

    def head(self, spec, width):
        final = self.norm(spec, width) if spec.placement == "pre" else nn.Identity()
        return Readout(final, width, spec.classes, spec.bias, pool=spec.vocab == 0)


TRANSFORMER_FAMILY = Transformer()
