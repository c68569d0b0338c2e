"""The drop-in merge modules against hand computations, and the strategy registry."""

import pytest
import torch
from torch import nn

from skiplab import STRATEGIES, Concat, DenseBlock, Highway, LayerScale, Plain, ReZero, Residual
from skiplab.skips import get_strategy


@pytest.fixture
def x():
    return torch.randn(5, 4, generator=torch.Generator().manual_seed(0))


def test_registry_names_are_designs_twelve_and_mhc_lite():
    assert list(STRATEGIES) == ["plain", "add", "rezero", "layerscale", "highway", "dense",
                                "concat-prev", "concat-double", "concat-half", "dwa", "hyper", "mhc", "mhc-lite"]
    for s in STRATEGIES.values():
        assert s.summary and s.rule and s.source


def test_unknown_strategy_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: plain, add"):
        get_strategy("residual")


def test_plain_and_residual(x):
    f = nn.Linear(4, 4)
    assert torch.equal(Plain(f)(x), f(x))
    assert torch.equal(Residual(f)(x), x + f(x))


def test_residual_projection_and_mismatch(x):
    f, p = nn.Linear(4, 3), nn.Linear(4, 3, bias=False)
    assert torch.allclose(Residual(f, projection=p)(x), p(x) + f(x))
    with pytest.raises(ValueError, match="projection"):
        Residual(f)(x)


def test_rezero_is_identity_at_init_and_only_alpha_learns_first(x):
    m = ReZero(nn.Linear(4, 4))
    y = m(x)
    assert torch.equal(y, x)
    y.pow(2).sum().backward()
    assert m.alpha.grad.abs() > 0
    # a = 0 multiplies the branch's gradient: exactly zero on the first step (ReZero's design).
    assert m.branch.weight.grad.abs().max() == 0


def test_layerscale_scales_each_channel():
    s = torch.randn(2, 3, 7)
    f = nn.Conv1d(3, 3, 3, padding=1)
    m = LayerScale(f, channels=3, init=0.5)
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([1.0, 2.0, 3.0]))
    want = s + torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1) * f(s)
    assert torch.allclose(m(s), want)


@pytest.mark.parametrize("channel_dim", [1, 2, -2, 3, -1])
def test_layerscale_scales_along_its_channel_dim(channel_dim):
    # dims 1 and 2 have one size: a scale put on the wrong one of them broadcasts in silence
    f = torch.randn(2, 5, 5, 5)
    m = LayerScale(nn.Identity(), channels=5, channel_dim=channel_dim)
    with torch.no_grad():
        m.gamma.copy_(torch.arange(5.0))
    shape = [1, 1, 1, 1]
    shape[channel_dim] = 5
    torch.testing.assert_close(m(f), f + torch.arange(5.0).view(shape) * f, rtol=0, atol=0)


def test_layerscale_names_a_channel_count_that_is_not_the_branchs():
    with pytest.raises(ValueError, match=r"LayerScale: 5 scales \(channels=\), but the branch output "
                                         r"\(2, 3, 5, 7\) has 3 channels at channel_dim=1"):
        LayerScale(nn.Identity(), channels=5)(torch.randn(2, 3, 5, 7))


def test_highway_formula_and_gate_bias(x):
    f, g = nn.Linear(4, 4), nn.Linear(4, 4)
    m = Highway(f, g)
    assert torch.all(g.bias == -2.0)
    t = torch.sigmoid(g(x))
    assert torch.allclose(m(x), t * f(x) + (1 - t) * x)
    with pytest.raises(ValueError, match="bias"):
        Highway(f, nn.Linear(4, 4, bias=False))
    with pytest.raises(ValueError, match="Highway: needs gate="):
        Highway(f)


def test_concat_keeps_all_or_the_last_k(x):
    f = nn.Linear(4, 2)
    assert torch.equal(Concat(f)(x), torch.cat([x, f(x)], 1))
    assert torch.equal(Concat(f, keep=3)(x), torch.cat([x[:, 1:], f(x)], 1))
    with pytest.raises(ValueError):
        Concat(f, keep=0)


@pytest.mark.parametrize("memory", ["naive", "efficient"])
def test_concat_keeps_a_whole_state_narrower_than_keep_in_both_memory_modes(x, memory):
    # the state (4 channels) is narrower than keep: all of it is carried, as the Pieces path
    # (memory="efficient") always did; the tensor path raised an IndexError
    f = nn.Linear(4, 2)
    assert torch.equal(Concat(f, keep=10, memory=memory)(x), torch.cat([x, f(x)], 1))
    assert torch.equal(Concat(f, keep=4, memory=memory)(x), torch.cat([x, f(x)], 1))


def test_dense_block_grows_by_the_growth_rate():
    block = DenseBlock([nn.Linear(8 + 4 * i, 4) for i in range(3)])
    y = block(torch.randn(2, 8))
    assert y.shape == (2, 20)


@pytest.mark.parametrize("l", [1, 2, 5])
def test_width_rules_closed_forms(l):
    w, k = 6, 4
    want = {  # (in, features, out), written from docs/design.md's table
        "plain": (w, w, w), "add": (w, w, w), "rezero": (w, w, w), "layerscale": (w, w, w),
        "highway": (w, w, w),
        "dense": (w + (l - 1) * k, k, w + l * k),
        "concat-prev": (w if l == 1 else 2 * w, w, 2 * w),
        "concat-double": (2 ** (l - 1) * w, 2 ** (l - 1) * w, 2 ** l * w),
        "concat-half": (w, w // 2, w),
    }
    for name, s in STRATEGIES.items():
        if name in want:
            given = {"growth": k} if any(o.name == "growth" for o in s.options) else {}
            assert tuple(s.widths(w, s.resolve(given, w), l)) == want[name], name
