"""The profiler's counter on what models written elsewhere do (issue 25, items 3 and 6):
SDPA kernels against the explicit attention path, in-place residual adds, per-sample
figures that do not depend on the batch size, concatenations a recompute executes again
in backward, and ops with no FLOP rule named instead of counted as 0. The references are
written out here, counted by hand, or PyTorch's ``FlopCounterMode``; torchvision and
transformers models are used where installed (random init, nothing downloaded)."""

import json
import math
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from skiplab import ModelSpec, build_model, profile
from skiplab.cli import main
from skiplab.profiling import FIGURES, UncountedOpsWarning

CPU_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


class _Ops(TorchDispatchMode):
    """The ATen ops a call runs."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


def _backward_flops(model, *inputs):
    """FlopCounterMode over one backward of the sum of ``model``'s output (profile's start)."""
    out = model(*inputs)
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# -- SDPA: the fused kernels against the explicit path ------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention, through F.scaled_dot_product_attention or written out."""

    def __init__(self, C, heads, causal, dropout, sdpa):
        super().__init__()
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.C, self.heads, self.causal, self.dropout, self.sdpa = C, heads, causal, dropout, sdpa

    def forward(self, x):
        B, T, C = x.shape
        h, d = self.heads, C // self.heads
        q, k, v = (t.view(B, T, h, d).transpose(1, 2) for t in self.qkv(x).split(C, dim=-1))
        p = self.dropout if self.training else 0.0
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d)
            if self.causal:
                att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            y = F.dropout(att.softmax(dim=-1), p, self.training) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_sdpa_counts_the_explicit_paths_flops(causal, dropout, mode):
    B, T, C, h = 3, 10, 16, 4
    x = torch.randn(B, T, C)
    torch.manual_seed(0)
    sdpa = getattr(Attention(C, h, causal, dropout, sdpa=True), mode)()
    explicit = getattr(Attention(C, h, causal, dropout, sdpa=False), mode)()
    explicit.load_state_dict(sdpa.state_dict())
    ops = _Ops()
    with ops:
        sdpa(x)
    fused = CPU_FLASH in ops.seen  # the CPU flash kernel, else SDPA's math fallback (dropout in training)
    assert fused == (dropout == 0.0 or mode == "eval")

    s, e = profile(sdpa, x), profile(explicit, x)
    assert not s.uncounted_ops and not e.uncounted_ops
    # projections 2 B T C (3C + C); QK^T and AV 2 B T T C each: a causal mask as the full T x T
    attention = 2 * 2 * B * T * T * C
    assert s.total["flops"] == e.total["flops"] == 2 * B * T * C * 4 * C + attention
    assert s.total["merge_flops"] == e.total["merge_flops"] == 0  # scaling, mask, softmax, dropout: no merge
    # Backward: the fused kernel recomputes the scores (one QK^T more, torch's convention for
    # the CUDA kernels too); the math fallback differentiates the explicit path's ops.
    recompute = 2 * B * T * T * C if fused else 0
    assert s.total["backward_flops"] == e.total["backward_flops"] + recompute
    assert s.total["backward_flops"] == _backward_flops(sdpa, x)  # FlopCounterMode agrees
    assert e.total["backward_flops"] == _backward_flops(explicit, x)
    if fused:
        # What the CPU flash kernel keeps: q, k, v (views of the qkv output: that storage once),
        # its output (laid out (B, T, h, d): the projection's input is a view of it) and one
        # log-sum-exp per head and query; the input x is not counted. No T x T matrix.
        assert s.total["saved_bytes"] == 4 * (B * T * 3 * C + B * T * C + B * h * T)


def test_hf_gpt2_sdpa_equals_eager():
    transformers = pytest.importorskip("transformers", reason="transformers (a test-only dependency: "
                                                              "pip install 'skiplab[test]') is not installed")
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    for mode in ("train", "eval"):
        got = {}
        for impl in ("sdpa", "eager"):
            torch.manual_seed(0)
            model = getattr(transformers.AutoModelForCausalLM.from_config(config, attn_implementation=impl), mode)()
            got[impl] = profile(model, ids, use_cache=False)
            assert not got[impl].uncounted_ops
        assert got["sdpa"].total["flops"] == got["eager"].total["flops"], mode
        assert got["sdpa"].total["merge_flops"] == got["eager"].total["merge_flops"], mode
        # QK^T and AV of 2 layers x 4 heads x 16 x 16 x 16, counted under SDPA too
        assert got["sdpa"].of("transformer.h.0.attn")["flops"] == got["eager"].of("transformer.h.0.attn")["flops"]


def test_skiplab_transformer_uses_sdpa():
    spec = ModelSpec(model="transformer", skip="add", depth=1, width=8, heads=2, vocab=11, classes=11, context=6)
    model = build_model(spec, seed=0)
    x, _ = spec.family.random_batch(spec, 2, torch.Generator().manual_seed(0))
    ops = _Ops()
    with ops:
        model(x)
    assert CPU_FLASH in ops.seen and torch.ops.aten.bmm not in ops.seen
    p = profile(model, x)
    # one block: qkv 6 C^2, out 2 C^2, MLP 16 C^2 per token; attention 4 T C per token
    T, C = 6, 8
    head = 2 * C * 11
    assert p.total["flops"] == 2 * T * (24 * C * C + 4 * T * C + head)


# -- in-place merges ------------------------------------------------------------------
class BasicBlock(nn.Module):
    """A ResNet basic block as torchvision writes it: the residual add in place."""

    def __init__(self, C, in_place=True):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(C, C, 3, padding=1, bias=False), nn.BatchNorm2d(C)
        self.conv2, self.bn2 = nn.Conv2d(C, C, 3, padding=1, bias=False), nn.BatchNorm2d(C)
        self.relu = nn.ReLU(inplace=True)
        self.in_place = in_place

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.in_place:
            out += identity
        else:
            out = out + identity
        return self.relu(out)


class _InPlace(nn.Module):
    """Each line's merge FLOPs for x of shape (2, 3) in its comment."""

    def __init__(self):
        super().__init__()
        self.f = nn.Linear(3, 3)
        self.register_buffer("running", torch.zeros(3))

    def forward(self, x):
        f = self.f(x)
        s = f.clone()
        s.add_(x)  # 6: two activations
        s.mul_(f)  # 6: a product of activations
        s.add_(1.0)  # 0: a shift by a number
        s.add_(self.f.bias)  # 6: a weight added to an activation, as out of place
        self.running.mul_(0.9).add_(0.1 * x.mean(0))  # 0: written into a buffer (a running statistic)
        acc = torch.zeros_like(f)
        acc += f  # 0: into a constant (zeros): a copy, not a sum of two activations
        acc += s  # 6: acc holds an activation now
        return acc


def test_in_place_adds_are_merges():
    x = torch.randn(2, 8, 5, 5)
    one = nn.Sequential(BasicBlock(8), BasicBlock(8)).train()
    other = nn.Sequential(BasicBlock(8, in_place=False), BasicBlock(8, in_place=False)).train()
    other.load_state_dict(one.state_dict())
    p, q = profile(one, x), profile(other, x.clone())
    assert p.total["merge_flops"] == q.total["merge_flops"] == 2 * 2 * 8 * 5 * 5  # one add per block
    assert p.own["0"]["merge_flops"] == p.own["1"]["merge_flops"] == 2 * 8 * 5 * 5
    assert p.total["flops"] == q.total["flops"]
    assert profile(_InPlace(), torch.randn(2, 3)).total["merge_flops"] == 6 + 6 + 6 + 6


@pytest.mark.slow
def test_torchvision_resnet18_merges():
    models = pytest.importorskip("torchvision.models", reason="torchvision is not installed")
    p = profile(models.resnet18().train(), torch.randn(1, 3, 224, 224))
    # 2 basic blocks per stage: 64 x 56^2, 128 x 28^2, 256 x 14^2, 512 x 7^2 elements each
    assert p.total["merge_flops"] == 2 * (64 * 56 ** 2 + 128 * 28 ** 2 + 256 * 14 ** 2 + 512 * 7 ** 2) == 752_640
    assert not p.uncounted_ops


# -- per sample, whatever the batch ----------------------------------------------------
class TinyGPT(nn.Module):
    """GPT-2's stem (token + position embeddings, positions looked up from arange(T), so
    they broadcast over a batch > 1 and have the output's shape at batch 1) and one block
    with an additive causal mask built from constants."""

    def __init__(self, vocab=20, T=8, C=8):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(T, C)
        self.qkv, self.proj, self.fc = nn.Linear(C, 3 * C), nn.Linear(C, C), nn.Linear(C, C)

    def forward(self, ids):
        B, T = ids.shape
        x = self.wte(ids) + self.wpe(torch.arange(T).unsqueeze(0))  # B T C: a weight added
        q, k, v = self.qkv(x).split(x.shape[-1], dim=-1)
        mask = torch.zeros(T, T).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        att = (q @ k.transpose(-2, -1) + mask).softmax(-1)  # 0: a constant mask
        x = x + self.proj(att @ v)  # B T C
        return x + self.fc(x)  # B T C


def test_per_sample_merges_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = TinyGPT()
    T, C = 8, 8
    for B in (1, 2, 3):
        p = profile(model, torch.randint(0, 20, (B, T)))
        assert p.total["merge_flops"] == B * 3 * T * C, B
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    gpt2 = transformers.AutoModelForCausalLM.from_config(config).eval()
    per_sample = {}
    for B in (1, 2):
        p = profile(gpt2, torch.randint(0, 50, (B, 16)), use_cache=False)
        per_sample[B] = {n: v["merge_flops"] / B for n, v in p.own.items() if v["merge_flops"]}
    assert per_sample[1] == per_sample[2]
    assert per_sample[1]["transformer"] == 16 * 32  # the position add, at batch 1 and 2 alike


# -- concatenations a recompute executes again ------------------------------------------
class CheckpointedDenseLayer(nn.Module):
    """A memory-efficient DenseNet layer as torchvision writes it: cat -> BN -> ReLU -> 1x1
    conv under torch.utils.checkpoint (so backward concatenates again), then a 3x3 conv."""

    def __init__(self, c_in, growth, reentrant):
        super().__init__()
        self.norm, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, 2 * growth, 1, bias=False)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)
        self.reentrant = reentrant

    def bottleneck(self, *features):
        return self.conv1(F.relu(self.norm(torch.cat(features, 1))))

    def forward(self, features):
        return self.conv2(cp.checkpoint(self.bottleneck, *features, use_reentrant=self.reentrant))


class DenseBlock(nn.Module):
    def __init__(self, c0, growth, layers, reentrant):
        super().__init__()
        self.layers = nn.ModuleList(CheckpointedDenseLayer(c0 + i * growth, growth, reentrant) for i in range(layers))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_recompute_concatenations(reentrant):
    B, c0, k, H = 2, 4, 3, 5
    x = torch.randn(B, c0, H, H, requires_grad=True)  # so the reentrant checkpoint has a gradient to send
    p = profile(DenseBlock(c0, k, 3, reentrant).train(), x)
    layer_cat = [4 * B * (c0 + i * k) * H * H for i in range(3)]  # each layer's input, fp32
    assert [p.own[f"layers.{i}"]["recompute_concat_bytes"] for i in range(3)] == layer_cat
    assert p.total["recompute_concat_bytes"] == sum(layer_cat)
    assert p.total["concat_bytes"] == sum(layer_cat) + 4 * B * (c0 + 3 * k) * H * H  # the forward's, with the output


def test_skiplab_memory_efficient_dense_rebuilds_its_widest_input_once():
    for norm in ("none", "batch"):
        naive, efficient = (ModelSpec(model="cnn1d", skip="dense", depth=3, width=4, norm=norm, input_shape=(2, 7),
                                      classes=3, options={"growth": 2, "memory": m}) for m in ("naive", "efficient"))
        x, _ = naive.family.random_batch(naive, 5, torch.Generator().manual_seed(0))
        n, e = (profile(build_model(s, seed=0).train(), x) for s in (naive, efficient))
        assert n.total["recompute_concat_bytes"] == 0
        # the last sublayer's input, 4 + 2 x 2 channels x 7 positions x batch 5, rebuilt once in backward
        assert e.total["recompute_concat_bytes"] == e.of("blocks.2")["recompute_concat_bytes"] == 4 * 8 * 7 * 5
    # gradients joined by cat in backward (the qkv split's backward) are no recompute
    spec = ModelSpec(model="transformer", skip="dense", depth=2, width=4, heads=2, vocab=13, classes=13, context=6,
                     options={"growth": 2})
    x, _ = spec.family.random_batch(spec, 3, torch.Generator().manual_seed(0))
    assert profile(build_model(spec, seed=0), x).total["recompute_concat_bytes"] == 0


@pytest.mark.slow
def test_torchvision_densenet121_memory_efficient():
    models = pytest.importorskip("torchvision.models", reason="torchvision is not installed")
    p = profile(models.densenet121(memory_efficient=True).train(), torch.randn(1, 3, 224, 224))
    assert p.total["concat_bytes"] == 42_198_016
    assert p.total["recompute_concat_bytes"] == 36_377_600  # every dense layer's input, concatenated again
    assert sum(1 for v in p.own.values() if v["recompute_concat_bytes"]) == 6 + 12 + 24 + 16


# -- ops with no FLOP rule ------------------------------------------------------------
@torch.library.custom_op("skiplab_test::fused_attention", mutates_args=())
def _fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v


@torch.library.custom_op("skiplab_test::fused_attention_backward", mutates_args=())
def _fused_attention_backward(g: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                              v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = (q @ k.transpose(-2, -1)).softmax(-1)
    dp = g @ v.transpose(-2, -1)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))  # through the softmax
    return ds @ k, ds.transpose(-2, -1) @ q, p.transpose(-2, -1) @ g


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, g):
    return _fused_attention_backward(g, *ctx.saved_tensors)


torch.library.register_autograd("skiplab_test::fused_attention", _backward, setup_context=_setup)


class _CustomAttention(nn.Module):
    def __init__(self, C=8):
        super().__init__()
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(_fused_attention(q.contiguous(), k.contiguous(), v.contiguous()))


def test_an_op_without_a_rule_is_named_not_counted_as_zero(monkeypatch):
    x = torch.randn(2, 5, 8)
    with pytest.warns(UncountedOpsWarning, match=r"skiplab_test\.fused_attention \(1 call\)"):
        p = profile(_CustomAttention(), x)
    assert p.uncounted_ops == {"skiplab_test.fused_attention": 1, "skiplab_test.fused_attention_backward": 1}
    assert p.total["flops"] == 2 * 2 * 5 * 8 * 4 * 8  # the projections only: what is counted
    d = json.loads(p.to_json())
    assert d["uncounted_ops"] == p.uncounted_ops
    assert "NOT COUNTED" in p.table() and "skiplab_test.fused_attention" in p.table()

    # the CPU flash kernel with its rule taken away: named, where it used to vanish silently
    block = Attention(8, 2, causal=True, dropout=0.0, sdpa=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with its rule: no warning
        full = profile(block, x)
    monkeypatch.delitem(flop_registry, CPU_FLASH)
    with pytest.warns(UncountedOpsWarning, match="_scaled_dot_product_flash_attention_for_cpu"):
        missing = profile(block, x)
    assert missing.uncounted_ops == {"aten._scaled_dot_product_flash_attention_for_cpu": 1}
    assert full.total["flops"] - missing.total["flops"] == 2 * 2 * 2 * 5 * 5 * 8


def test_profile_cli_shows_recompute_and_uncounted(tmp_path, capsys):
    f = tmp_path / "net.py"
    f.write_text(textwrap.dedent("""
        from torch import nn
        from skiplab import DenseBlock

        def dense():  # DenseNet-BC-like layers on 1-D sequences: BN -> ReLU -> conv, 2 new channels each
            return DenseBlock([nn.Sequential(nn.BatchNorm1d(4 + 2 * i), nn.ReLU(), nn.Conv1d(4 + 2 * i, 2, 3, padding=1))
                               for i in range(3)], memory="efficient")
    """))
    assert main(["profile", f"{f}:dense", "--input-shape", "4,6", "--batch", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["uncounted_ops"] == {} and d["total"]["recompute_concat_bytes"] > 0
    assert all(set(FIGURES) <= set(m) for m in d["modules"])
    assert main(["profile", f"{f}:dense", "--input-shape", "4,6", "--batch", "2"]) == 0
    assert "recompute concat MiB" in capsys.readouterr().out


def test_profile_cli_names_uncounted_ops_in_one_line(tmp_path, capsys, monkeypatch):
    f = tmp_path / "attn.py"
    f.write_text(textwrap.dedent("""
        import torch.nn.functional as F
        from torch import nn

        class SelfAttention(nn.Module):
            def __init__(self):
                super().__init__()
                self.qkv = nn.Linear(8, 24)

            def forward(self, x):
                q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def make():
            return SelfAttention()
    """))
    monkeypatch.delitem(flop_registry, CPU_FLASH)  # as in a torch without the rule
    assert main(["profile", f"{f}:make", "--input-shape", "5,8", "--batch", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["uncounted_ops"] == {"aten._scaled_dot_product_flash_attention_for_cpu": 1}
    assert captured.err.strip().splitlines() == [
        "skiplab: warning: no FLOP rule for aten._scaled_dot_product_flash_attention_for_cpu: their FLOPs are "
        "not in the counts (uncounted_ops)"]


def test_the_counter_on_the_meta_device():
    """Built on the meta device (no storage), a model counts the FLOPs, merges and
    concatenations it counts on the CPU: kinds and recomputes key storages by identity,
    not by data pointer (0 for every meta tensor)."""
    for skip in ("add", "hyper", "dense"):
        spec = ModelSpec(model="transformer", skip=skip, depth=2, width=8, heads=2, vocab=13, classes=13, context=6,
                         options={"growth": 2} if skip == "dense" else {})
        x, _ = spec.family.random_batch(spec, 3, torch.Generator().manual_seed(0))
        cpu = profile(build_model(spec, seed=0), x).total
        meta = profile(build_model(spec, seed=0).to("meta"), x.to("meta")).total
        assert all(cpu[k] == meta[k] for k in ("params", "flops", "merge_flops", "concat_bytes")), skip
        assert cpu["merge_flops"] > 0
