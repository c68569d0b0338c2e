"""memory="efficient" for the concatenating strategies (issue 14): the same numbers as the
naive path, at linear activation memory.

Equality is relative to the largest magnitude of each tensor (max |a - b| / max |b|),
the normwise measure. The two paths add a dense state's gradient in a different order (see
skips/shared_storage.py), so they agree to rounding, not bit for bit, and how far depends on
the CPU's kernels: in float32 a gradient summed over 48 positions with cancellation was
1.08e-6 apart on one machine and under 1e-6 on another. So the models run in float64, whose
rounding (2.2e-16 per operation) leaves such sums within about 1e-13 of each other;
TOL = 1e-9 bounds that with a margin of 10^4 for cancellation, and still fails on any real
difference between the paths (a wrong term is of the order of the values themselves)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from skiplab import ModelSpec, build_model
from skiplab.cost import model_cost
from skiplab.cost.growth import growth_over_depths
from skiplab.cost.measure import measure_cost, saved_activation_bytes
from skiplab.objective import loss_and_logits
from skiplab.skips import STRATEGIES, Concat, DenseBlock
from skiplab.skips.shared_storage import split_branch

CONCATS = [name for name, s in STRATEGIES.items() if any(o.name == "memory" for o in s.options)]
TOL = 1e-9  # float64; the module docstring says why


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.double() if t.is_floating_point() else t  # token ids stay integers


FAMILIES = [  # (model, norms, extra spec fields)
    ("mlp", ["batch", "none"], {}),
    ("cnn1d", ["batch", "layer"], {}),
    ("cnn2d", ["batch"], {"input_shape": (1, 6, 6)}),
    ("transformer", ["layer", "rms"], {"vocab": 11, "classes": 11, "context": 8}),
    # DenseNet-BC: 2 dense blocks of 2 bottleneck layers and a transition between them (depth
    # 2 x 2 x 2 + 3 layers): the stream restarts there, the aux head after block 2 reads it before
    ("resnet", ["batch", "none"], {"input_shape": (1, 6, 6), "stages": 2, "depth": 11}),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|; a gradient that is zero but for rounding (a bias before batch
    norm, whose exact gradient is 0) is compared absolutely."""
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 1e-6 else 1.0)


def pair(model, skip, norm, extra, depth=3, width=8, aux_every=0):
    specs = [ModelSpec(**{"depth": depth, **extra}, model=model, skip=skip, width=width, norm=norm,
                       aux_every=aux_every, options={"memory": m}) for m in ("naive", "efficient")]
    naive, efficient = (build_model(s, seed=1).double() for s in specs)
    efficient.load_state_dict(naive.state_dict())
    return specs[0], naive, efficient


def test_every_concatenating_strategy_declares_memory():
    assert set(CONCATS) == {"dense", "concat-prev", "concat-double", "concat-half"}


@pytest.mark.parametrize("model,norms,extra", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_same_outputs_loss_gradients_and_statistics(model, norms, extra):
    for norm, skip, mode in itertools.product(norms, ["dense", "concat-prev", "concat-half"], ["train", "eval"]):
        aux = 2 if model != "transformer" else 0
        spec, naive, efficient = pair(model, skip, norm, extra, aux_every=aux)
        x, y = map(f64, spec.family.random_batch(spec, 6, torch.Generator().manual_seed(0)))
        got = []
        for m in (naive, efficient):
            getattr(m, mode)()
            loss, logits = loss_and_logits(m, x, y)
            loss.backward()
            got.append((logits, loss, dict(m.named_parameters()), dict(m.named_buffers())))
        (l0, s0, p0, b0), (l1, s1, p1, b1) = got
        where = f"{model} {norm} {skip} {mode}"
        assert rel(l1, l0) <= TOL and rel(s1, s0) <= TOL, where
        for n, p in p0.items():
            assert p.grad is not None and rel(p1[n].grad, p.grad) <= TOL, f"{where}: {n}"
        for n, b in b0.items():  # batch norm's running statistics: one update per step, as naive
            assert torch.equal(b1[n], b), f"{where}: {n}"
        if mode == "train" and norm == "batch":
            assert all(v.item() == 1 for n, v in b1.items() if n.endswith("num_batches_tracked"))


def test_concat_double_too():
    spec, naive, efficient = pair("mlp", "concat-double", "batch", {}, depth=4, width=4)
    x, y = map(f64, spec.family.random_batch(spec, 5, torch.Generator().manual_seed(0)))
    for m in (naive, efficient):
        loss_and_logits(m, x, y)[0].backward()
    for (n, p), q in zip(naive.named_parameters(), efficient.parameters()):
        assert rel(q.grad, p.grad) <= TOL, n


def test_densenet_bc_block_with_batch_norm_in_the_recomputed_prefix():
    """DenseNet-BC's BN -> ReLU -> conv layers (Huang et al., Sec. 3): the prefix that is
    recomputed holds batch norm, whose running statistics must move once per step."""
    def layers():
        torch.manual_seed(3)
        return [nn.Sequential(nn.BatchNorm1d(6 + 4 * i), nn.ReLU(), nn.Conv1d(6 + 4 * i, 4, 3, padding=1))
                for i in range(4)]
    naive, efficient = DenseBlock(layers()).double(), DenseBlock(layers(), memory="efficient").double()
    x = torch.randn(5, 6, 10, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for block in (naive, efficient):
        out = block(x)
        out.square().sum().backward()
        outs.append(out)
        grads.append([x.grad.clone()] + [p.grad for p in block.parameters()])
        x.grad = None
    assert outs[0].shape == (5, 22, 10) and rel(outs[1], outs[0]) <= TOL
    for g1, g0 in zip(grads[1], grads[0]):
        assert rel(g1, g0) <= TOL
    for b1, b0 in zip(efficient.buffers(), naive.buffers()):
        assert torch.equal(b1, b0)
    assert [m.num_batches_tracked.item() for m in efficient.modules() if isinstance(m, nn.BatchNorm1d)] == [1] * 4

    def saved(block):
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        params = {p.untyped_storage().data_ptr() for p in [*block.parameters(), *block.buffers(), x]}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            block(x)
        return sum(v for k, v in seen.items() if k not in params)
    assert saved(efficient) < saved(naive)


def test_standalone_concat_takes_and_returns_a_tensor():
    f = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    assert torch.equal(Concat(f, memory="efficient")(x), Concat(f)(x))
    with pytest.raises(ValueError, match="memory"):
        Concat(f, memory="fast")


def test_a_branch_without_a_leading_layer_is_refused_in_one_line():
    class Odd(nn.Module):
        def forward(self, z):
            return z[:, :2] * 2
    with pytest.raises(ValueError, match="must start with norms or activations, then a Linear or Conv"):
        split_branch(Odd())
    with pytest.raises(ValueError, match="Linear or Conv"):
        DenseBlock([nn.Sequential(nn.Dropout(), nn.Linear(4, 2))], memory="efficient")(torch.randn(2, 4))


def test_two_hundred_training_steps_end_at_the_same_parameters():
    spec, naive, efficient = pair("mlp", "dense", "batch", {}, depth=4, width=16)
    g = torch.Generator().manual_seed(0)
    data = [tuple(map(f64, spec.family.random_batch(spec, 32, g))) for _ in range(10)]
    for m in (naive, efficient):
        m.train()
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        for step in range(200):
            x, y = data[step % len(data)]
            opt.zero_grad()
            loss_and_logits(m, x, y)[0].backward()
            opt.step()
    for (n, p), q in zip(naive.state_dict().items(), efficient.state_dict().values()):
        # 200 Adam steps divide by sqrt(v): a 1e-13 difference can grow by the steps' count
        # and Adam's 1/eps at worst; 1e-7 in float64 still fails on any difference of method
        assert rel(q.double(), p.double()) <= 1e-7, n


@pytest.mark.parametrize("model,norms,extra", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_analytic_equals_measured_exactly(model, norms, extra):
    for norm, skip, depth in itertools.product(norms[:1], CONCATS, [extra["depth"]] if "depth" in extra else [0, 1, 3]):
        if skip == "concat-double" and model != "mlp":
            continue  # its width doubles per block; the MLP covers its rule
        aux = 1 if model != "transformer" and depth >= 3 else 0
        spec = ModelSpec(**{**extra, "depth": depth}, model=model, skip=skip, width=8, norm=norm, aux_every=aux,
                         options={"memory": "efficient"})
        a, m = model_cost(spec, 4), measure_cost(spec, 4, repeats=0)
        where = f"{model} {skip} depth {depth}"
        assert a["activation_bytes"] == m["activation_bytes"], where
        assert a["concat_bytes"] == m["concat_bytes"], where
        assert a["flops"]["matmul"] == m["flops"]["matmul"] and a["flops"]["merge"] == m["flops"]["merge"], where
        assert [b["concat_bytes"] for b in a["per_block"]] == [b["concat_bytes"] for b in m["per_block"]], where


def test_activation_memory_becomes_linear_and_the_copies_are_counted():
    spec = ModelSpec(skip="dense", depth=1, width=16, options={"growth": 8})
    depths = list(range(1, 65))
    assert growth_over_depths(spec, depths)["activation_bytes"]["law"] == "quadratic"
    efficient = growth_over_depths(spec.replace(options={"growth": 8, "memory": "efficient"}), depths)
    assert efficient["activation_bytes"]["law"] == "linear"
    # What cat really writes: each sublayer's input once (the whole state, sublayer 2 on), then the head's.
    w, k, L, B = 16, 8, 5, 32
    want = 4 * B * (sum(w + (l - 1) * k for l in range(2, L + 1)) + w + L * k)
    eff = spec.replace(depth=L, options={"growth": k, "memory": "efficient"})
    assert model_cost(eff, B)["concat_bytes"] == want


def test_the_efficient_path_keeps_less_than_naive_for_dense():
    spec, naive, efficient = pair("mlp", "dense", "batch", {}, depth=12, width=16)
    x = f64(spec.family.random_batch(spec, 8, torch.Generator().manual_seed(0))[0])
    assert saved_activation_bytes(efficient, x) < 0.6 * saved_activation_bytes(naive, x)


def test_post_placement_is_refused_with_efficient_memory():
    with pytest.raises(ValueError, match="placement: 'post'.*with these options"):
        ModelSpec(model="transformer", skip="dense", placement="post", options={"memory": "efficient"},
                  vocab=11, classes=11).describe()


def test_study_sweeps_and_the_command_line_take_memory(capsys):
    from skiplab.cli import main
    from skiplab.study import plan_for, with_memory
    from skiplab.sweep import SweepError, parse_sweep

    plan = with_memory(plan_for("mlp", quick=True), "efficient")
    trained = {(s.skip, dict(s.options).get("memory")) for _, s in plan.model_specs()}
    assert ("dense", "efficient") in trained and ("add", None) in trained  # add has no memory option
    assert all(dict(s.options)["growth"] for _, s in plan.model_specs() if s.skip == "dense")
    sweep = parse_sweep({"sweep": {"seeds": 1}, "grid": {"skip": ["add", "dense"], "depth": 3,
                                                         "memory": ["naive", "efficient"]}})
    assert sorted((r.model.skip, dict(r.model.options).get("memory", "-")) for r in sweep.runs) == \
        [("add", "-"), ("dense", "-"), ("dense", "efficient")]  # naive is the default: left out of the identity
    with pytest.raises(SweepError, match="memory: 'fast' is not one of naive, efficient"):
        parse_sweep({"grid": {"skip": "dense", "memory": "fast"}})
    assert main(["cost", "--skip", "dense", "--memory", "efficient", "--depths", "1..8", "--json"]) == 0
    assert '"law": "linear"' in capsys.readouterr().out.replace("\n", "").replace('"law":"', '"law": "')
    for argv in (["cost", "--skip", "dense", "--memory", "fast"], ["cost", "--skip", "add", "--memory", "efficient"],
                 ["study", "--memory", "fast", "--quick"]):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own refusal of a choice
            code = e.code
        assert code == 2, argv
        err = capsys.readouterr().err
        assert "memory" in err and "Traceback" not in err


def test_the_report_shows_both_bills_for_the_concatenations():
    from skiplab.report.tables import cost_table
    from skiplab.study import cost_summaries, plan_for, with_memory

    for memory in ("naive", "efficient"):
        costs = cost_summaries(with_memory(plan_for("mlp", quick=True), memory), batch=128)
        head, rows = cost_table(costs)
        assert head[7:10] == ["activation MiB", "naive MiB", "efficient MiB"]
        for c, row in zip(costs, rows):
            by = c.get("activation_bytes_by_memory")
            if c["skip"] in CONCATS:  # the trained bill is one of the two, the other beside it
                assert by and c["activation_bytes"] == by[memory] and row[8] and row[9]
            else:
                assert by is None and row[8] == row[9] == ""
