"""The transformer family: a hand-written nanoGPT-style reference with the same weights,
exact costs (attention included) against PyTorch's counters, every strategy through the
stream contract, post-norm placement, and the family's own input rules."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skiplab import STRATEGIES, ModelSpec, SpecError, build_model
from skiplab.cost import model_cost, classify, growth_over_depths, measure_cost


# -- a reference written here, independently of skiplab (nanoGPT's shape, no dropout) -----
class RefBlock(nn.Module):
    def __init__(self, C, heads, ratio):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, ratio * C), nn.Linear(ratio * C, C)
        self.heads = heads

    def attn(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, T, self.heads, C // self.heads).permute(0, 2, 1, 3) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # PyTorch's own kernel
        return self.c_proj(y.permute(0, 2, 1, 3).reshape(B, T, C))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class RefGPT(nn.Module):
    def __init__(self, vocab, context, C, depth, heads, ratio):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(context, C)
        self.h = nn.ModuleList(RefBlock(C, heads, ratio) for _ in range(depth))
        self.ln_f, self.lm_head = nn.LayerNorm(C), nn.Linear(C, vocab)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def _copy_into_reference(net, ref):
    """skiplab's weights, module by module, into the reference."""
    with torch.no_grad():
        ref.wte.weight.copy_(net.stem.embed.weight)
        ref.wpe.weight.copy_(net.stem.positions)
        for i, block in enumerate(ref.h):
            attn, mlp = net.blocks[2 * i].branch, net.blocks[2 * i + 1].branch
            for mine, theirs in ((attn.norm, block.ln_1), (attn.body.qkv, block.c_attn), (attn.body.proj, block.c_proj),
                                 (mlp.norm, block.ln_2), (mlp.body.fc, block.c_fc), (mlp.body.proj, block.mlp_proj)):
                theirs.weight.copy_(mine.weight)
                theirs.bias.copy_(mine.bias)
        ref.ln_f.weight.copy_(net.head.norm.weight)
        ref.ln_f.bias.copy_(net.head.norm.bias)
        ref.lm_head.weight.copy_(net.head.fc.weight)
        ref.lm_head.bias.copy_(net.head.fc.bias)


def test_add_pre_norm_matches_a_hand_written_nanogpt():
    spec = ModelSpec(model="transformer", skip="add", depth=3, width=32, heads=4, vocab=50, classes=50, context=16)
    net = build_model(spec, seed=0).eval()
    ref = RefGPT(50, 16, 32, 3, 4, 4).eval()
    _copy_into_reference(net, ref)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    idx = torch.randint(0, 50, (5, 16), generator=torch.Generator().manual_seed(1))
    ours, theirs = net(idx), ref(idx)
    assert ours.shape == (5, 16, 50)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
    # Causal: changing a later token never changes an earlier position's logits.
    idx2 = idx.clone()
    idx2[:, 10] = (idx2[:, 10] + 1) % 50
    assert torch.equal(net(idx2)[:, :10], ours[:, :10]) and not torch.equal(net(idx2)[:, 10:], ours[:, 10:])


def test_post_norm_is_norm_of_the_sum():
    """placement post: x <- LN(x + F(x)) after every sublayer, no final norm (Xiong et al. Fig. 1)."""
    spec = ModelSpec(model="transformer", skip="add", depth=2, width=16, heads=2, vocab=11, classes=11, context=8,
                     placement="post")
    net = build_model(spec, seed=3).eval()
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    x = net.stem(idx)
    for block in net.blocks:
        x = block.norm(x + block.branch(x))
    assert isinstance(net.head.norm, nn.Identity)
    assert torch.allclose(net(idx), net.head.fc(x), atol=1e-6)


# -- costs: counted on fake tensors == counted on the CPU, exactly ------------------------
def _check(spec, batch=3):
    a, m = model_cost(spec, batch), measure_cost(spec, batch, repeats=0, backward=False)
    where = str(spec)
    assert a["params"] == m["params"], where
    assert a["flops"]["matmul"] == m["flops"]["matmul"], where
    assert [b["flops"] for b in a["per_block"]] == [b["flops"] for b in m["per_block"]], where
    assert a["flops"]["merge"] == m["flops"]["merge"], where
    assert a["concat_bytes"] == m["concat_bytes"], where
    assert a["activation_bytes"] == m["activation_bytes"], where


def _grid(skip, depths, tokens=(True, False), norms=("layer", "rms", "none"), placements=("pre", "post")):
    for tok in tokens:
        data = dict(vocab=13, classes=13, context=6) if tok else dict(input_shape=(3, 5))
        for norm in norms:
            for placement in placements:
                if placement == "post" and not STRATEGIES[skip].single_stream:
                    continue
                for depth in depths:
                    yield ModelSpec(model="transformer", skip=skip, depth=depth, width=4, heads=2, norm=norm,
                                    placement=placement, bias=depth % 2 == 0, aux_every=2, **data,
                                    options={"growth": 2} if skip == "dense" else {})


@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_analytic_equals_measured(skip):
    for spec in _grid(skip, (0, 1, 3), norms=("layer", "rms")):
        _check(spec)


@pytest.mark.slow
@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_analytic_equals_measured_full_grid(skip):
    for spec in _grid(skip, (0, 1, 2, 5)):
        _check(spec)


def test_attention_flops_per_token():
    """QK^T and AV: 2 T C FLOPs per token each at full context (docs/families/transformer.md); with the
    projections (qkv 6C^2, out 2C^2) and the MLP (16 C^2 at ratio 4): 24 C^2 + 4 T C per
    token per block, the known transformer count (Kaplan et al., arXiv 2001.08361, Table 1)."""
    T, C = 32, 16
    base = dict(model="transformer", skip="add", width=C, heads=2, vocab=7, classes=7, context=T, bias=False)
    one, two = (model_cost(ModelSpec(depth=d, **base), batch=1)["flops"]["matmul"] for d in (1, 2))
    assert (two - one) / T == 24 * C * C + 4 * T * C
    c = model_cost(ModelSpec(depth=1, **base))
    assert c["flops_per_token"] == c["flops"]["total"] / T


def test_growth_laws_over_depth():
    depths = list(range(1, 9))
    base = dict(model="transformer", width=16, heads=2, vocab=7, classes=7, context=8)
    add = growth_over_depths(ModelSpec(skip="add", **base), depths)
    dense = growth_over_depths(ModelSpec(skip="dense", options={"growth": 8}, **base), depths)
    assert add["params"]["law"] == "linear" and dense["params"]["law"] == "quadratic"
    # every DWA averages all earlier block outputs: its merge work grows quadratically
    dwa = [model_cost(ModelSpec(skip="dwa", depth=d, **base))["flops"]["merge"] for d in depths]
    assert classify(depths, dwa)["law"] == "quadratic"


# -- every strategy trains through the contract ------------------------------------------
@pytest.mark.parametrize("skip", list(STRATEGIES))
def test_every_strategy_forward_backward(skip):
    spec = ModelSpec(model="transformer", skip=skip, depth=2, width=8, heads=2, vocab=9, classes=9, context=5,
                     aux_every=1, options={"growth": 4} if skip == "dense" else {})
    net = build_model(spec, seed=0)
    idx = torch.randint(0, 9, (4, 5))
    logits, aux = net(idx, return_aux=True)
    assert logits.shape == (4, 5, 9) and aux[0].shape == (4, 5, 9)
    F.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_numeric_sequences_classify():
    spec = ModelSpec(model="transformer", depth=2, width=8, heads=2, input_shape=(1, 40), classes=10)
    assert spec.context == 40
    assert build_model(spec, seed=0)(torch.randn(3, 1, 40)).shape == (3, 10)


# -- bad specs: one line naming the field -------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(width=30, heads=4), r"heads: 4 heads must divide the width \(30\)"),
    (dict(skip="dense", width=32, heads=4, options={"growth": 6}), r"heads: 4 heads must divide sublayer 1's features \(6\)"),
    (dict(context=64, input_shape=(1, 40)), r"context 64 is longer than the data's 40 steps"),
    (dict(vocab=10, classes=12), r"classes: a token model predicts the next token, so classes must equal vocab"),
    (dict(placement="post", skip="hyper"), r"placement: 'post' .* skip 'hyper' carries several tensors"),
    (dict(placement="side"), r"placement: 'side' is not one of pre, post"),
    (dict(norm="batch"), r"norm: "),
])
def test_bad_transformer_specs(kw, match):
    with pytest.raises(SpecError, match=match):
        ModelSpec(model="transformer", **kw)


def test_transformer_fields_refused_elsewhere_and_absent_from_identity():
    with pytest.raises(SpecError, match="heads: only the transformer family takes it"):
        ModelSpec(model="mlp", heads=2)
    assert "heads" not in ModelSpec(model="cnn1d").to_dict()
    assert ModelSpec(model="transformer", vocab=5, classes=5).to_dict()["context"] == 64
    assert math.isfinite(model_cost(ModelSpec(model="transformer", depth=40, width=64, skip="concat-double",
                                                 vocab=5, classes=5))["flops"]["total"])


def test_a_sweep_file_takes_the_transformer_keys():
    from skiplab.sweep import parse_sweep

    sweep = parse_sweep({"sweep": {"seeds": 1},
                         "grid": {"model": "transformer", "skip": ["add", "mhc"], "depth": 2, "width": 16,
                                  "heads": [2, 4], "context": 32, "mlp_ratio": 2, "dataset": "pydoc"},
                         "train": {"epochs": 0.5}})
    specs = [r.model for r in sweep.runs]
    assert len(specs) == 4 and {s.heads for s in specs} == {2, 4}
    assert all(s.vocab == s.classes == 103 and s.context == 32 and s.mlp_ratio == 2 for s in specs)
    assert all(r.dataset.startswith("pydoc@") and r.train.epochs == 0.5 for r in sweep.runs)
