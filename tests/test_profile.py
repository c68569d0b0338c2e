"""skiplab.profile on any model. Method: on skiplab's own models ``skiplab.cost.model_cost``
(the same counter on fake tensors; tests/test_cost.py checks it against the CPU's) must
agree exactly, totals and per block, for every strategy, family, norm and several depths;
on a Hugging Face GPT-2
the references are PyTorch's own: ``num_parameters()``, ``FlopCounterMode`` and a
``saved_tensors_hooks`` total written out here; on hand-written modules, the merge rule is
checked against counts done by hand."""

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from skiplab import STRATEGIES, ModelSpec, Profile, build_model, profile
from skiplab.cost import model_cost
from skiplab.families import FAMILIES
from skiplab.profiling import FIGURES

BATCH = 3
SHAPES = {"mlp": (3, 4), "cnn1d": (2, 7), "cnn2d": (2, 3, 5), "transformer": (2, 5), "resnet": (2, 4, 5)}
EXTRA = {"transformer": {"heads": 1}}  # one head, so that width 4 divides


def _spec(model, skip, **kw):
    """A 3-block model; resnet's is 1 block per stage, its depth counted as its papers count
    layers (He et al. 6n + 2; DenseNet-BC 6n + 4 where the stream restarts), its width 8,
    so that concat-half's state, halved by each transition, keeps channels to halve."""
    if model == "resnet":
        kw["depth"] = 8 + (2 if STRATEGIES[skip].reshape == "transition" else 0)
        kw["width"] = 8
    return ModelSpec(model=model, skip=skip, **{"depth": 3, "width": 4, **kw}, input_shape=SHAPES[model],
                     classes=3, **EXTRA.get(model, {}))


def _takes(model, skip) -> bool:
    return model != "resnet" or bool(STRATEGIES[skip].reshape)  # resnet refuses what cannot cross a transition


def _check_against_cost(spec: ModelSpec) -> None:
    model = build_model(spec, seed=0).train()
    x, _ = spec.family.random_batch(spec, BATCH, torch.Generator().manual_seed(0))
    p = profile(model, x)
    a = model_cost(spec, BATCH)
    where = str(spec)
    assert p.total["params"] == a["params"]["total"], where
    assert p.total["flops"] == BATCH * a["flops"]["matmul"], where  # aux_every=0: no aux heads
    assert p.total["concat_bytes"] == a["concat_bytes"], where
    assert p.total["saved_bytes"] == a["activation_bytes"], where
    # model_cost counts the strategies' merges; a stem that adds learned positions to
    # its output (the transformer's) does an element-wise sum too, which the rule counts
    # and the cost's merge figure leaves out (and the heads'): compare without them.
    outside = sum(p.of(part)["merge_flops"] for part in ("stem", "head"))
    assert p.total["merge_flops"] - outside == BATCH * a["flops"]["merge"], where
    for i, b in enumerate(a["per_block"]):
        got = p.of(f"blocks.{i}")
        assert got["params"] == b["params"], (where, i)
        assert got["flops"] == BATCH * b["flops"], (where, i)
        assert got["merge_flops"] == BATCH * b["merge_flops"], (where, i)
        assert got["concat_bytes"] == b["concat_bytes"], (where, i)
    assert {k: sum(v[k] for v in p.own.values()) for k in FIGURES} == {k: p.total[k] for k in FIGURES}


@pytest.mark.parametrize("model", list(FAMILIES))
def test_cost_equals_profile_for_every_strategy_norm_and_depth(model):
    # skiplab cost (the model on fake CPU tensors) and skiplab profile (the model built with
    # real weights, on a real batch) are one code path: every figure equal, per block too
    for skip in filter(lambda skip: _takes(model, skip), STRATEGIES):
        for k, norm in enumerate(FAMILIES[model].norms):
            for depth in ((1, 4) if k == 0 else (2,)):  # every norm; depths 1..4 (66 s of CPU took 1, 3, 5 each)
                _check_against_cost(_spec(model, skip, depth=depth, norm=norm, aux_every=0))


def _memory_options():
    """(strategy, option value) for every value of every strategy's ``memory`` option."""
    for name, s in STRATEGIES.items():
        for o in s.options:
            if o.name == "memory":
                for value in o.choices:
                    yield name, value


@pytest.mark.parametrize("model", list(FAMILIES))
def test_profile_equals_cost_with_memory_efficient_concatenation(model):
    # the efficient concatenation builds the branch's input inside a custom autograd
    # Function in the branch: its cat bytes and what it saves must still be booked right
    options = list(_memory_options())
    assert options, "no strategy declares a memory option any more: drop this test"
    for skip, value in options:
        if _takes(model, skip):
            _check_against_cost(_spec(model, skip, options={"memory": value}))


# -- the merge rule, on modules written out by hand --------------------------------------
class _Merges(nn.Module):
    """Each line's expected merge FLOPs for x of shape (2, 3) is in its comment."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.g = nn.Parameter(torch.ones(3))
        self.bias = nn.Parameter(torch.zeros(3))
        self.f = nn.Linear(3, 3)

    def forward(self, x):
        f = self.f(x)
        s = x + f  # 6: two activations
        s = s + self.a * f  # 6 + 6: ReZero's a * f, then the sum
        s = s + self.g * f  # 6 + 6: LayerScale's g * f (g broadcast), then the sum
        s = s + self.bias  # 6: a weight added to an activation (the rule cannot tell a bias from
        #                    hyper-connections' s * t + A; nn.Linear's own bias is inside addmm)
        s = 0.5 * s + 1.0  # 0: a scaling and a shift by numbers
        s = s / torch.tensor(2.0)  # 0: a 0-dim tensor is a number
        s = s + torch.ones(1, 3)  # 0: a constant (made from no weight and no data) acts as a number
        s = s + x.mean(0, keepdim=True)  # 0: an activation broadcast into a sum
        s = torch.lerp(s, f, 0.3)  # 6: merges s and f (a fixed mix of two activations)
        stacked = torch.stack([s, f])  # 0 FLOPs; 2 x 6 x 4 bytes written
        mean = stacked.sum(0) / 2  # 6 (sum over 2 copies) + 6 (the division makes it a mean)
        return torch.cat([mean, s], 1)  # 2 x 6 x 4 bytes written


def test_merge_rule_by_hand():
    p = profile(_Merges(), torch.randn(2, 3))
    assert p.total["merge_flops"] == 6 + 12 + 12 + 6 + 6 + 12
    assert p.total["concat_bytes"] == 2 * 6 * 4 * 2
    assert p.own["f"]["merge_flops"] == 0 and p.own[""]["merge_flops"] == p.total["merge_flops"]


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = self.inner(x) + x  # the merge runs in the model's own forward: booked to ""
        return self.out(h)


def test_booked_to_the_innermost_module_and_renderings(monkeypatch):
    p = profile(_Nested(), torch.randn(5, 4), timed=True, repeats=1)
    assert p.own[""]["merge_flops"] == 20 and p.of("inner")["merge_flops"] == 0
    assert p.own["inner.0"]["flops"] == 2 * 5 * 4 * 4 and p.of("inner")["params"] == 20
    assert p.total["backward_flops"] > 0 and p.total["seconds_forward_backward"] > 0
    for depth in (0, 1, 2, 3):  # every grouping's rows add up to the total
        rows = p.rows(depth)
        assert {k: sum(r[1][k] for r in rows) for k in FIGURES} == {k: p.total[k] for k in FIGURES}
    d = json.loads(p.to_json())
    assert d["total"]["params"] == 20 + 10 and [m["name"] for m in d["modules"]] == p.modules
    text = p.table(depth_group=1, top=1)
    assert "inner" in text and "(2 more)" in text and "total" in text
    pd = pytest.importorskip("pandas", reason="the pandas extra is not installed: pip install 'skiplab[pandas]'")
    frame = p.to_dataframe()
    assert isinstance(frame, pd.DataFrame) and set(FIGURES) <= set(frame.columns) and len(frame) == len(p.modules)


def test_dataframe_without_pandas_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"skiplab\[pandas\]"):
        profile(_Nested(), torch.randn(2, 4)).to_dataframe()


def test_profile_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, torch.randn(6, 4), timed=True, repeats=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_profile_leaves_gradients_the_caller_has_as_they_were():
    # its backward pass (and the timed ones) reach the caller's input and parameters: no
    # gradient is left where there was none, and one there is not accumulated into
    x, model = torch.randn(6, 4, requires_grad=True), nn.Linear(4, 2)
    profile(model, x, timed=True, repeats=1)
    assert x.grad is None and model.weight.grad is None
    x.grad, model.weight.grad = torch.full_like(x, 3.0), torch.full_like(model.weight, 3.0)
    profile(model, x, timed=True, repeats=1)
    assert torch.equal(x.grad, torch.full_like(x, 3.0)) and model.bias.grad is None
    assert torch.equal(model.weight.grad, torch.full_like(model.weight, 3.0))


def test_profile_rejects_what_is_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        profile(lambda x: x, torch.randn(2))
    assert isinstance(profile(nn.Identity(), torch.randn(2, 3)), Profile)


# -- a Hugging Face GPT-2, random init, nothing downloaded ---------------------------------
def test_gpt2_against_pytorch_counters():
    transformers = pytest.importorskip("transformers", reason="transformers (a test-only dependency: "
                                                              "pip install 'skiplab[test]') is not installed")
    # eager attention, so that FlopCounterMode is an independent reference (under SDPA it counts
    # the CPU flash kernel only by the rule skiplab.profiling registers; tests/test_profile_counter.py
    # checks SDPA against eager)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").train()
    ids = torch.randint(0, 100, (2, 16))
    p = profile(model, ids, use_cache=False)  # use_cache: no key/value cache, so no cat into it

    assert p.total["params"] == model.num_parameters()  # the tied lm_head weight once
    with FlopCounterMode(display=False) as counter:
        model(ids, use_cache=False)
    assert p.total["flops"] == counter.get_total_flops()

    excluded = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), ids]}
    saved = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in excluded and s.nbytes() > 0:
            saved[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, use_cache=False)
    assert p.total["saved_bytes"] == sum(saved.values())

    for k in FIGURES:  # every module's own figures add up to the totals, and each layer's subtree
        assert sum(v[k] for v in p.own.values()) == p.total[k]
        assert sum(p.of(f"transformer.h.{i}")[k] for i in range(2)) + sum(
            v[k] for n, v in p.own.items() if not n.startswith("transformer.h.")) == p.total[k]
    # The two residual adds per layer, 2 x (B T C), are merges in the layer's own forward;
    # gelu_new's two products of activations, 2 x (B T 4C), count too (a GELU written out);
    # dropout's x * mask does not. The positional table (a weight) added to the token
    # embeddings, B T C, counts in the model's stem at every batch size.
    btc = 2 * 16 * 64
    for i in range(2):
        layer = p.of(f"transformer.h.{i}")
        assert p.own[f"transformer.h.{i}"]["merge_flops"] == 2 * btc
        assert p.own[f"transformer.h.{i}.mlp.act"]["merge_flops"] == 2 * 4 * btc
        assert layer["merge_flops"] == 2 * btc + 2 * 4 * btc and layer["concat_bytes"] == 0
    assert p.own["transformer"]["merge_flops"] == btc
    assert p.total["backward_flops"] > p.total["flops"]
