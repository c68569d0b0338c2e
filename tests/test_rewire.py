"""skiplab.rewire: the merges found (count and names), equality at init, one training step,
on a Hugging Face GPT-2 (block pattern: fx cannot trace it), a hand-written ResNet-18-like
model with torchvision's ``out += identity`` (fx), and the user-written models in
``examples/``. Tolerances: "equal at init" is a relative max difference below 1e-5 of the
outputs (float32; a different merge order in the Sinkhorn-Knopp of mHC and MHA's fast
path being off under a TorchFunctionMode are the only sources of rounding)."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

from skiplab import rewire
from skiplab.errors import UserError
from skiplab.rewiring import plan
from skiplab.rewiring.find import trace_own
from skiplab.skips import STRATEGIES
from skiplab.user_model import load_model

REL = 1e-5
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def residual_starters() -> list[str]:
    """Strategies that declare they start as the residual net (asked, never named)."""
    return [s.name for s in STRATEGIES.values() if s.starts_as_residual]


# -- models ---------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision's BasicBlock as torchvision writes it: ``out += identity``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18ish(nn.Module):
    """ResNet-18's layout (4 stages of 2 basic blocks, the first of stages 2-4 halving the
    resolution through a projection), at widths 8-64 for 3x16x16 inputs."""

    def __init__(self, block=BasicBlock, widths=(8, 16, 32, 64), classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers, c_in = [], widths[0]
        for i, c in enumerate(widths):
            layers.append(nn.Sequential(block(c_in, c, 1 if i == 0 else 2), block(c, c)))
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


RESNET_MERGES = ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
RESNET_PROJECTIONS = {"layer2.0", "layer3.0", "layer4.0"}


def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=103, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


GPT2_MERGES = ["transformer.h.0#1", "transformer.h.0#2", "transformer.h.1#1", "transformer.h.1#2"]


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    return tiny_gpt2().eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 103, (3, 16), generator=torch.Generator().manual_seed(1))


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return getattr(out, "logits", out)


# -- GPT-2 ------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_gpt2_merges_found_by_the_block_pattern(gpt2):
    p = plan(gpt2)
    assert [m.name for m in p.merges] == GPT2_MERGES
    assert all(m.rewired and m.found_by == "pattern GPT2Block" for m in p.merges)
    assert [m.branch for m in p.merges[:2]] == ["ln_1 -> attn", "ln_2 -> mlp"]
    assert all(m.shape == (2, 8, 32) and m.channel_dim == -1 for m in p.merges)  # the default probe: (2, 8) ids
    assert p.chain == ""
    assert any(cls == "GPT2Block" for _, cls, _ in p.untraced) is False  # matched, so not among the unsearched


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
@pytest.mark.parametrize("skip", residual_starters())
def test_gpt2_equals_the_original_at_init(gpt2, tokens, skip):
    rewired = rewire(gpt2, skip).eval()
    assert rel_diff(logits(rewired, tokens), logits(gpt2, tokens)) < REL
    # the connections are there, and their parameters are new ones
    conns = rewired.skiplab_rewiring.connections
    assert len(conns) == 4
    assert sum(p.numel() for p in rewired.parameters()) >= sum(p.numel() for p in gpt2.parameters())


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_gpt2_rezero_starts_without_its_branches(gpt2, tokens):
    """ReZero's a = 0: the output cannot depend on the branches' weights."""
    rewired = rewire(gpt2, "rezero").eval()
    before = logits(rewired, tokens)
    with torch.no_grad():
        for block in rewired.transformer.h:
            block.attn.c_attn.weight.add_(1.0)
            block.mlp.c_fc.weight.mul_(3.0)
    assert torch.equal(logits(rewired, tokens), before)
    assert rel_diff(before, logits(gpt2, tokens)) > 1e-3  # and that is not the original model


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_gpt2_layerscale_is_wired_at_every_merge(gpt2, tokens):
    """LayerScale starts at s + 0.1 f (CaiT), not at the original; with every scale set to
    1 it is the original again, so each merge is wired where the original added."""
    rewired = rewire(gpt2, "layerscale").eval()
    assert rel_diff(logits(rewired, tokens), logits(gpt2, tokens)) > 1e-3
    with torch.no_grad():
        for name, p in rewired.named_parameters():
            if "skiplab_merges" in name:
                p.fill_(1.0)
    assert rel_diff(logits(rewired, tokens), logits(gpt2, tokens)) < REL


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
@pytest.mark.parametrize("skip", ["rezero", "hyper", "mhc", "dwa"])
def test_gpt2_one_training_step(gpt2, tokens, skip):
    torch.manual_seed(0)
    model = rewire(gpt2, skip).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    loss = model(tokens, labels=tokens).loss
    loss.backward()
    merge_grads = [p.grad for n, p in model.named_parameters() if "skiplab_merges" in n]
    assert merge_grads and all(g is not None and torch.isfinite(g).all() for g in merge_grads)
    assert any(g.abs().sum() > 0 for g in merge_grads)
    opt.step()
    with torch.no_grad():
        after = model(tokens, labels=tokens).loss
    assert torch.isfinite(loss) and after < loss


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_gpt2_rewired_model_copies_and_the_original_is_unchanged(gpt2, tokens):
    state = {k: v.clone() for k, v in gpt2.state_dict().items()}
    rewired = rewire(gpt2, "hyper", streams=2)
    assert type(gpt2.transformer.h[0]).__name__ == "GPT2Block" and not hasattr(gpt2.transformer.h[0], "skiplab_merges")
    assert all(torch.equal(v, gpt2.state_dict()[k]) for k, v in state.items())
    # the rewired block is still a GPT2Block (a subclass), with the same keys plus the connections'
    assert isinstance(rewired.transformer.h[0], type(gpt2.transformer.h[0]))
    assert set(gpt2.state_dict()) < set(rewired.state_dict())
    twin = copy.deepcopy(rewired).eval()
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if name.endswith("a_r"):
                p.add_(0.1 * torch.ones_like(p))
    assert rel_diff(logits(rewired.eval(), tokens), logits(gpt2, tokens)) < REL  # the copy's change stays in the copy
    assert rel_diff(logits(twin, tokens), logits(gpt2, tokens)) > 1e-3


# -- a ResNet-18-like model with out += identity ---------------------------------------
@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return ResNet18ish().eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def test_resnet_merges_found_by_fx(resnet, images):
    p = plan(resnet, images)
    assert [m.name for m in p.merges] == RESNET_MERGES
    # (fx records ``out += identity`` as ``out + identity``, rebinding out: in_place is not known here)
    assert all(m.found_by == "torch.fx" and m.channel_dim == 1 for m in p.merges)
    left = {m.name for m in p.merges if not m.rewired}
    assert left == RESNET_PROJECTIONS
    assert all("projection shortcut" in m.reason for m in p.merges if not m.rewired)
    assert p.merges[0].branch == "conv1 -> bn1 -> relu -> conv2 -> bn2" and p.merges[0].skip == "x"
    assert p.merges[3].shape == (4, 16, 8, 8)


def test_resnet_equal_at_init_and_rewired_merges_are_used(resnet, images):
    assert rel_diff(logits(rewire(resnet, "add", images), images), logits(resnet, images)) < REL
    rz = rewire(resnet, "rezero", images).eval()
    # ReZero: the five rewired blocks are the identity; the projections are left as they were
    assert rel_diff(logits(rz, images), logits(resnet, images)) > 1e-3
    assert len(rz.skiplab_rewiring.connections) == 5
    assert type(rz.layer1[0]).skiplab_rewired == "torch.fx" and not hasattr(rz.layer2[0], "skiplab_merges")


def test_resnet_one_training_step(resnet, images):
    model = rewire(resnet, "layerscale", images).train()
    y = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = nn.functional.cross_entropy(model(images), y)
    loss.backward()
    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    assert len(gammas) == 5 and all(g.grad is not None and g.grad.abs().sum() > 0 for g in gammas)
    opt.step()
    assert nn.functional.cross_entropy(model(images), y) < loss


def test_resnet_refuses_several_tensor_streams_and_concatenation(resnet, images):
    with pytest.raises(UserError, match=r"one chain .* layer1\.0 \(BasicBlock\): it does not return its last merge"):
        rewire(resnet, "hyper", images)
    with pytest.raises(UserError, match=r"skip 'dense' cannot rewire a model: its merge makes the stream 16 wide from 8"):
        rewire(resnet, "dense", images)


class UntraceableBlock(BasicBlock):
    """A BasicBlock fx cannot trace (it branches on shapes): the torchvision pattern applies."""

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if out.shape != identity.shape:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


UntraceableBlock.__name__ = "BasicBlock"


def test_resnet_block_pattern_where_fx_fails(images):
    torch.manual_seed(0)
    model = ResNet18ish(block=UntraceableBlock).eval()
    with pytest.raises(Exception):
        trace_own(model.layer1[0])
    p = plan(model, images)
    assert [m.name for m in p.merges] == RESNET_MERGES
    assert {m.name for m in p.merges if not m.rewired} == RESNET_PROJECTIONS
    assert all(m.found_by == "pattern BasicBlock" for m in p.merges)
    assert all(m.in_place for m in p.merges if m.rewired)
    assert rel_diff(logits(rewire(model, "add", images, found=p), images), logits(model, images)) < REL
    rz = rewire(model, "rezero", images, found=p).train()
    nn.functional.cross_entropy(rz(images), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for n, p in rz.named_parameters() if n.endswith("alpha"))


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_torchvision_resnet18(images):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    p = plan(model, images)
    assert len(p.merges) == 8 and sum(m.rewired for m in p.merges) == 5
    assert rel_diff(logits(rewire(model, "add", images, found=p), images), logits(model, images)) < REL


# -- the user-written models in examples/ ------------------------------------------------
def test_example_transformer_fx_and_several_tensor_streams():
    model = load_model("examples/my_transformer.py:make_model").eval()
    x = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(3))
    p = plan(model, x)
    assert [m.name for m in p.merges] == ["blocks.0#1", "blocks.0#2", "blocks.1#1", "blocks.1#2"]
    assert all(m.found_by == "torch.fx" and m.rewired for m in p.merges)
    assert [m.branch for m in p.merges[:2]] == ["norm1 -> attn", "norm2 -> mlp"]
    assert [m.skip for m in p.merges[:2]] == ["x", "#1"] and p.chain == ""
    for skip in residual_starters():
        assert rel_diff(logits(rewire(model, skip, x, found=p), x), logits(model, x)) < REL, skip
    trained = rewire(model, "mhc", x, found=p, streams=2).train()
    loss = nn.functional.cross_entropy(trained(x).flatten(0, 1), x.flatten())
    loss.backward()
    assert all(p.grad is not None for p in trained.parameters())


def test_example_resnet_shortcut_modules():
    model = load_model("examples/my_resnet.py:make_model").eval()
    x = torch.randn(2, 3, 16, 16)
    p = plan(model, x)
    assert len(p.merges) == 6
    assert [m.name for m in p.merges if not m.rewired] == ["stages.1.0", "stages.2.0"]
    assert all(m.skip == "shortcut(x)" for m in p.merges)  # nn.Identity, or the projection
    assert rel_diff(logits(rewire(model, "add", x, found=p), x), logits(model, x)) < REL


# -- what is and is not a merge ---------------------------------------------------------
class Parallel(nn.Module):
    """GPT-J's parallel block: x + attn(ln(x)) + mlp(ln(x)); and GELU's x + 0.044715 x^3."""

    def __init__(self):
        super().__init__()
        self.ln, self.a, self.m = nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = self.ln(x)
        g = x + 0.044715 * x * x * x  # arithmetic, no layer: not a merge
        return x + self.a(h) + self.m(h) + 0 * g


def test_what_is_not_a_merge():
    p = plan(Parallel(), torch.randn(2, 8))
    assert len(p.merges) == 2  # x + a(h); then (that) + m(h), where both operands pass through layers
    assert p.merges[0].rewired and not p.merges[1].rewired
    assert "both operands pass through layers" in p.merges[1].reason


class ModeDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Linear(4, 4)

    def forward(self, x):
        return x + (self.f(x) if self.training else 2 * self.f(x))


def test_code_that_depends_on_training_is_not_traced():
    with pytest.raises(ValueError, match="differs between train"):
        trace_own(ModeDependent())
    with pytest.raises(UserError, match=r"no residual merge .* found in ModeDependent: traced 0 modules .* "
                                        r"1 could not be traced .*: ModeDependent"):
        rewire(ModeDependent(), "add", torch.randn(2, 4))


def test_no_merge_names_what_was_searched():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(UserError, match=r"^rewire: no residual merge \(x \+ f\(x\)\) found in Sequential: traced 1 "
                                        r"module with torch.fx, looking for x \+ f\(x\) with a layer in f$"):
        rewire(mlp, "rezero", torch.randn(2, 4))
    with pytest.raises(UserError, match="give example="):
        rewire(mlp, "rezero")
