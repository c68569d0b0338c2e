"""Blocks whose merges are known without tracing them: the fall-back where ``torch.fx``
cannot trace a block's own forward (Hugging Face's blocks take optional arguments and
branch on them; its ``deprecate_kwarg`` wrapper alone defeats fx).

A pattern names the block's class, the argument that carries the stream, how many times
its forward adds the stream to a branch's output, and those branches (for the listing).
Nothing is assumed beyond that: a probe forward watches the block (``MergeWatch``) and
the merges are the additions of the stream it sees; a count other than the pattern's
leaves the block as it is, named. A torchvision block with a ``downsample`` adds a
projection of its input, not its input: that merge is named and left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Pattern:
    classes: tuple[str, ...]  # class names (any module of one of them, with the children below)
    stream: str  # the forward's argument that carries the stream
    branches: tuple[str, ...]  # the branch of each merge, in order (so the merge count too)
    channel_dim: int  # where the channels sit in the stream's layout
    children: tuple[str, ...]  # the block must have these children
    projection: str = ""  # a child that, when present and not None, is a projection shortcut
    source: str = ""

    @property
    def merges(self) -> int:
        return len(self.branches)

    def matches(self, module: nn.Module) -> bool:
        return type(module).__name__ in self.classes and all(hasattr(module, c) for c in self.children)

    def projected(self, module: nn.Module) -> bool:
        return bool(self.projection) and getattr(module, self.projection, None) is not None


PATTERNS: tuple[Pattern, ...] = (
    Pattern(("GPT2Block",), "hidden_states", ("ln_1 -> attn", "ln_2 -> mlp"), -1, ("ln_1", "attn", "ln_2", "mlp"),
            source="Hugging Face transformers, GPT-2 (pre-norm: x + attn(ln_1(x)), then x + mlp(ln_2(x)))"),
    Pattern(("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"), "hidden_states",
            ("input_layernorm -> self_attn", "post_attention_layernorm -> mlp"), -1,
            ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"),
            source="Hugging Face transformers, Llama-style decoder layers (pre-norm, two merges)"),
    Pattern(("Block",), "x", ("norm1 -> attn", "norm2 -> mlp"), -1, ("norm1", "attn", "norm2", "mlp"),
            source="timm, vision transformer block (pre-norm, two merges)"),
    Pattern(("BasicBlock",), "x", ("conv1 -> bn1 -> relu -> conv2 -> bn2",), 1, ("conv1", "bn1", "conv2", "bn2"),
            projection="downsample", source="torchvision, ResNet BasicBlock (out += identity)"),
    Pattern(("Bottleneck",), "x", ("conv1 -> bn1 -> conv2 -> bn2 -> conv3 -> bn3",), 1, ("conv1", "conv2", "conv3", "bn3"),
            projection="downsample", source="torchvision, ResNet Bottleneck (out += identity)"),
)


def pattern_of(module: nn.Module) -> Pattern | None:
    return next((p for p in PATTERNS if p.matches(module)), None)


def pattern_names() -> str:
    return ", ".join(c for p in PATTERNS for c in p.classes)
