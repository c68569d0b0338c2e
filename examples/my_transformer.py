"""A small character-level GPT, written the way models are written outside skiplab:
``skiplab rewire examples/my_transformer.py:make_model --skip hyper --dry-run --input-shape 32
--dtype int64 --vocab 103`` lists its merges, and ``skiplab compare
examples/my_transformer.py:make_model --skip add,rezero,hyper --dataset pydoc --seeds 3
--out DIR`` trains it rewired.

Pre-norm blocks (Radford et al., GPT-2; Xiong et al., arXiv 2002.04745): ``x = x + attn(norm1(x))``
then ``x = x + mlp(norm2(x))``, each block returning its last merge, so the merges form one
chain and strategies whose stream is several tensors (DenseFormer, hyper-connections, mHC)
can be rewired in. The vocabulary is the distinct characters of this Python's pydoc topics
(what ``--dataset pydoc`` trains on).
"""

import torch
from torch import nn


def pydoc_symbols() -> int:
    from pydoc_data.topics import topics

    return len(set("".join(topics.values())))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, context: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        # True above the diagonal: position t does not attend to later positions
        self.register_buffer("mask", torch.ones(context, context, dtype=torch.bool).triu(1), persistent=False)

    def forward(self, x):  # (B, T, C)
        t = x.shape[1]
        mask = self.mask.narrow(0, 0, t).narrow(1, 0, t)
        h = self.norm1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return x


class TinyGPT(nn.Module):
    def __init__(self, vocab: int, width: int = 32, depth: int = 2, heads: int = 2, context: int = 32):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.randn(context, width) * 0.02)
        self.blocks = nn.Sequential(*[Block(width, heads, context) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx):  # (B, T) token ids -> (B, T, vocab) logits
        x = self.tokens(idx) + self.positions[: idx.shape[1]]
        return self.head(self.norm(self.blocks(x)))


def make_model() -> nn.Module:
    return TinyGPT(pydoc_symbols())
