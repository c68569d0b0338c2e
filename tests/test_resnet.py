"""The resnet family (skiplab/families/resnet.py), added in one file with no cost code: the
published parameter counts of He et al.'s CIFAR ResNets (arXiv 1512.03385, Table 6) and of
DenseNet-BC (Huang et al., arXiv 1608.06993, Table 2), counted on the built model and
against closed forms written here from the papers' text; depth as the papers count it; the
shortcut options; the strategies it refuses; its options on the command line and in sweep
files; training on a CIFAR-10 folder."""

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skiplab import STRATEGIES, ModelSpec, SpecError, build_model
from skiplab.cli import main
from skiplab.cost import model_cost, param_counts
from skiplab.run.config import RunSpec
from skiplab.store import Store
from skiplab.sweep import SweepError, parse_sweep


def resnet_params(n, w=16, classes=10, shortcut="A", conv_bias=False, fc_bias=False, k=3):
    """He et al., Sec. 4.2, written from the text: a 3x3 conv of w filters; 3 stages of n
    blocks of two 3x3 convs with w, 2w, 4w filters, the first of stages 2 and 3 strided;
    batch norm after every conv; global average pool; a Linear. Option B adds a 1x1
    projection (and its batch norm) where a stage starts (Sec. 3.3); option A adds nothing."""
    def conv(i, o, kk=k):
        return i * o * kk * kk + o * conv_bias

    total, prev = conv(3, w) + 2 * w, w
    for stage, c in enumerate((w, 2 * w, 4 * w)):
        for j in range(n):
            total += conv(prev if j == 0 else c, c) + 2 * c + conv(c, c) + 2 * c
            if j == 0 and stage and shortcut == "B":
                total += conv(prev, c, 1) + 2 * c
        prev = c
    return total + prev * classes + classes * fc_bias


def densenet_bc_params(n, k, classes=10, bias=False):
    """Huang et al., Sec. 3 and 4.1, written from the text: a 3x3 conv of 2k filters; 3 dense
    blocks of n layers BN-ReLU-Conv(1x1, 4k)-BN-ReLU-Conv(3x3, k), each adding k channels;
    between two blocks BN-ReLU-Conv(1x1) to floor(m / 2) of the m channels, then 2x2
    average pooling; BN-ReLU, global average pool, a Linear."""
    def conv(i, o, kk):
        return i * o * kk * kk + o * bias

    total, m = conv(3, 2 * k, 3), 2 * k
    for block in range(3):
        for _ in range(n):
            total += 2 * m + conv(m, 4 * k, 1) + 2 * 4 * k + conv(4 * k, k, 3)
            m += k
        if block < 2:
            total += 2 * m + conv(m, m // 2, 1)
            m //= 2
    return total + 2 * m + m * classes + classes * bias


# -- the published counts ---------------------------------------------------------------------
@pytest.mark.parametrize("depth, published", [(20, 0.27), (56, 0.85), (110, 1.7)])
def test_resnet_counts_are_the_papers(depth, published):
    """Table 6 (He et al.): ResNet-20 0.27M, -56 0.85M, -110 1.7M parameters, on CIFAR-10
    shapes (3 x 32 x 32, 10 classes: the family's default input)."""
    spec = ModelSpec(model="resnet", depth=depth, skip="add")
    assert spec.input_shape == (3, 32, 32) and spec.classes == 10 and spec.width == 16 and not spec.bias
    total = model_cost(spec)["params"]["total"]
    assert round(total / 1e6, 2 if published < 1 else 1) == published
    n = (depth - 2) // 6
    assert total == resnet_params(n)
    # the torchvision-style count (fc with a bias), widely quoted: 269,722 and 853,018
    assert param_counts(spec.replace(bias=True))["total"] == resnet_params(n, conv_bias=True, fc_bias=True)


def test_densenet_bc_100_count_is_the_papers():
    """Table 2 (Huang et al.): DenseNet-BC, L = 100, k = 12: 0.8M parameters."""
    spec = ModelSpec(model="resnet", depth=100, skip="dense", width=24, options={"growth": 12})
    total = model_cost(spec)["params"]["total"]
    assert round(total / 1e6, 1) == 0.8
    assert total == densenet_bc_params(16, 12) == 769_152
    assert spec.state_width == 342  # 150 + 16 x 12 into the last BN (the m of the formula above)
    assert param_counts(spec.replace(bias=True))["total"] == densenet_bc_params(16, 12, bias=True)


def test_option_b_adds_the_projections_and_a_plain_net_has_none():
    a = param_counts(ModelSpec(model="resnet", depth=32, skip="add"))["total"]
    b = param_counts(ModelSpec(model="resnet", depth=32, skip="add", shortcut="B"))["total"]
    assert a == resnet_params(5) and b == resnet_params(5, shortcut="B")
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 projections and their BN
    plain = ModelSpec(model="resnet", depth=32, skip="plain", shortcut="B")
    # a plain net carries nothing: the shortcut option does not change it, nor its identity
    assert plain.shortcut == "A" and plain == ModelSpec(model="resnet", depth=32, skip="plain")
    assert param_counts(plain)["total"] == a


def test_merges_and_copies_are_counted_on_the_built_model():
    """No cost code in the family: the profiler counts ResNet-20's additions (one FLOP per
    element of every block's output: 3 blocks at 16 x 32 x 32, 32 x 16 x 16 and 64 x 8 x 8
    each) and option A copies nothing; DenseNet concatenates and adds nothing."""
    c = model_cost(ModelSpec(model="resnet", depth=20, skip="add"))
    assert c["flops"]["merge"] == 3 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8) and c["concat_bytes"] == 0
    assert [b["merge_flops"] for b in c["per_block"]] == [16 * 1024] * 3 + [32 * 256] * 3 + [64 * 64] * 3
    d = model_cost(ModelSpec(model="resnet", depth=10, skip="dense", width=8, options={"growth": 4}))
    assert d["flops"]["merge"] == 0 and d["concat_bytes"] > 0


# -- depth, stages and shapes -------------------------------------------------------------------
def _stage_outputs(spec, x):
    net = build_model(spec, seed=0)
    shapes = []
    for block in net.blocks:
        block.register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape[1:])))
    net(x)
    return shapes


def test_stages_halve_the_image_and_double_the_channels():
    spec = ModelSpec(model="resnet", depth=14, skip="add", width=4)  # n = 2
    assert spec.blocks == 6
    assert _stage_outputs(spec, torch.randn(2, 3, 32, 32)) == [(4, 32, 32)] * 2 + [(8, 16, 16)] * 2 + [(16, 8, 8)] * 2
    four = ModelSpec(model="resnet", depth=18, skip="add", width=4, stages=4, input_shape=(3, 16, 16))
    assert _stage_outputs(four, torch.randn(2, 3, 16, 16)) == [(4, 16, 16)] * 2 + [(8, 8, 8)] * 2 + \
        [(16, 4, 4)] * 2 + [(32, 2, 2)] * 2


def test_dense_blocks_grow_and_transitions_compress_by_half():
    spec = ModelSpec(model="resnet", depth=16, skip="dense", width=8, options={"growth": 4})  # n = 2
    # stage 1: 8 -> 12 -> 16; transition: 8; stage 2: 12, 16; transition: 8; stage 3: 12, 16
    assert [w.out_width for w in spec.block_widths()] == [12, 16, 12, 16, 12, 16]
    assert _stage_outputs(spec, torch.randn(2, 3, 32, 32)) == [(12, 32, 32), (16, 32, 32), (12, 16, 16),
                                                                (16, 16, 16), (12, 8, 8), (16, 8, 8)]


@pytest.mark.parametrize("skip, depth, match", [
    ("add", 21, r"^depth: resnet with skip 'add' counts weighted layers as He et al.'s count .* 8, 14, 20, \.\.\. "
                r"\(20, 56, 110: ResNet-20, -56, -110\); got 21$"),
    ("add", 2, r"^depth: .*n >= 1"),
    ("dense", 56, r"^depth: resnet with skip 'dense' counts weighted layers as DenseNet-BC's count .* 10, 16, 22, "
                  r"\.\.\. \(100: DenseNet-BC-100\); got 56$"),
])
def test_depth_counts_layers_as_the_papers_do(skip, depth, match):
    with pytest.raises(SpecError, match=match):
        ModelSpec(model="resnet", skip=skip, depth=depth)


def test_defaults_are_the_papers_smallest_nets():
    assert ModelSpec(model="resnet").depth == 20 and ModelSpec(model="resnet", skip="dense").depth == 100
    assert ModelSpec(model="resnet").kernel_size == 3


def test_bad_shapes_and_widths_name_the_field():
    with pytest.raises(SpecError, match=r"^input_shape: resnet halves height and width 2 times, so both must be "
                                        r"at least 4, got \(3, 3, 32\)$"):
        ModelSpec(model="resnet", input_shape=(3, 3, 32))
    with pytest.raises(SpecError, match=r"^input_shape: resnet takes \(channels, height, width\)"):
        ModelSpec(model="resnet", input_shape=(3, 32))
    # concat-half's state does not grow; DenseNet's transitions halve it: 4 -> 2 -> 1, odd
    with pytest.raises(SpecError, match=r"^width: resnet's transition to stage 3 compresses 2 channels to 1 .*"
                                        r"skip 'concat-half' cannot take \(it splits the state in halves"):
        ModelSpec(model="resnet", skip="concat-half", depth=10, width=4)
    with pytest.raises(SpecError, match=r"^shortcut: 'C' is not one of A, B$"):
        ModelSpec(model="resnet", shortcut="C")
    with pytest.raises(SpecError, match=r"^stages: must be an integer >= 1, got 0$"):
        ModelSpec(model="resnet", stages=0)


def test_strategies_that_cannot_cross_a_transition_are_refused_with_their_reason():
    refused = [s for s in STRATEGIES.values() if not s.reshape]
    assert refused and len(refused) < len(STRATEGIES)
    for s in refused:
        with pytest.raises(SpecError) as e:
            ModelSpec(model="resnet", skip=s.name)
        line = str(e.value)
        assert line.startswith(f"skip: {s.name!r} cannot cross the stride-2 transitions between resnet's stages: ")
        assert line.endswith(s.reshape_reason) and "\n" not in line
    for s in STRATEGIES.values():  # the others build and run
        if s.reshape:
            depth = 10 if s.reshape == "transition" else 8
            net = build_model(ModelSpec(model="resnet", skip=s.name, depth=depth, width=8), seed=0)
            assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# -- the shortcut, written from the paper ---------------------------------------------------------
def test_option_a_is_subsample_and_zero_pad_then_relu():
    """With ReZero's a = 0 at init the branch adds nothing, so a stage's first block is its
    shortcut followed by the ReLU: x[:, :, ::2, ::2] with as many zero channels appended
    (He et al., Sec. 3.3, option A; Fig. 2's ReLU after the addition)."""
    spec = ModelSpec(model="resnet", depth=8, skip="rezero", width=4)
    net = build_model(spec, seed=0).eval()
    ins = {}
    net.blocks[1].register_forward_pre_hook(lambda m, args: ins.setdefault("s", args[0]))
    net.blocks[1].register_forward_hook(lambda m, args, out: ins.setdefault("out", out))
    net(torch.randn(2, 3, 32, 32))
    s = ins["s"]
    want = torch.cat([s[:, :, ::2, ::2], torch.zeros(2, 4, 16, 16)], dim=1).relu()
    assert torch.equal(ins["out"], want)


def test_option_b_is_a_strided_projection_with_batch_norm():
    spec = ModelSpec(model="resnet", depth=8, skip="add", width=4, shortcut="B")
    net = build_model(spec, seed=0).eval()
    block = net.blocks[1]  # After(Strided(Residual))
    proj = block.inner.shortcut
    conv, norm = proj
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (4, 8, (1, 1), (2, 2))
    s = torch.randn(2, 4, 32, 32)
    f = block.branch(s)
    assert torch.allclose(block(s), (norm(F.conv2d(s, conv.weight, stride=2)) + f).relu())


# -- diagnostics, init and lesions see the stages -------------------------------------------------------
@pytest.mark.parametrize("skip, depth", [("add", 8), ("plain", 8), ("dense", 10), ("concat-prev", 10)])
def test_kaiming_init_and_lesions_keep_shapes(skip, depth):
    spec = ModelSpec(model="resnet", skip=skip, depth=depth, width=8, init="kaiming", input_shape=(3, 8, 8))
    net = build_model(spec, seed=0)
    x = torch.randn(4, 3, 8, 8)
    assert torch.isfinite(net(x)).all()
    for block in net.blocks:  # every block removed at once: the stream still has every stage's shape
        block.lesion()
    assert net(x).shape == (4, 10)


def test_gradient_routes_are_measured_at_every_block():
    """The gradient diagnostics tap every connection's read and write (skiplab.gradients):
    at a stage's first block too, behind the shortcut and the transition."""
    from skiplab.datasets import Dataset
    from skiplab.gradients import GradientConfig, measure_gradients
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 3, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)
    data = Dataset("toy", x, y, x, y, classes=10)
    for skip, depth in (("add", 8), ("dense", 10)):
        spec = ModelSpec(model="resnet", skip=skip, depth=depth, width=8, input_shape=(3, 8, 8))
        report = measure_gradients(spec, data, GradientConfig(seeds=1, batches=1, batch_size=8))
        share = report.init.branch_share.mean
        assert len(share) == 3 and all(0 < v < 1 for v in share), (skip, share)


# -- options on the command line and in sweep files ---------------------------------------------------------
def test_family_options_are_flags(capsys):
    assert main(["build", "--model", "resnet", "--depth", "20", "--shortcut", "B", "--stages", "3", "--json"]) == 0
    (d,) = json.loads(capsys.readouterr().out)
    assert d["shortcut"] == "B" and d["stages"] == 3 and d["params"]["total"] == resnet_params(3, shortcut="B")
    assert main(["build", "--model", "mlp", "--stages", "2"]) == 2
    assert capsys.readouterr().err.strip() == "skiplab: error: stages: only the resnet family takes it; model 'mlp' does not"
    assert main(["build", "--model", "resnet", "--depth", "19"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skiplab: error: depth: resnet with skip 'add' counts weighted layers") and err.count("\n") == 1


def test_family_options_are_sweep_keys(tmp_path):
    folder = tmp_path / "cifar"
    write_cifar(folder / "cifar-10-batches-py", 4)
    sweep = parse_sweep({"sweep": {"seeds": 1}, "grid": {"model": "resnet", "skip": "add", "depth": 8, "width": 4,
                                                         "shortcut": ["A", "B"], "dataset": str(folder)}})
    assert [r.model.shortcut for r in sweep.runs] == ["A", "B"] and sweep.configs == 2
    assert all(r.model.input_shape == (3, 32, 32) for r in sweep.runs)
    # as a strategy option goes to the strategies that declare it, a family option goes to
    # the models whose family declares it, and one that none of them takes is refused
    mixed = parse_sweep({"sweep": {"seeds": 1}, "grid": {"model": ["cnn2d", "resnet"], "depth": 8, "width": 4,
                                                         "shortcut": "B", "dataset": str(folder)}})
    assert [(r.model.model, r.model.to_dict().get("shortcut")) for r in mixed.runs] == [("cnn2d", None),
                                                                                         ("resnet", "B")]
    with pytest.raises(SweepError, match=r"^sweep: \[grid\] stages: only the resnet family takes it, not 'cnn2d'; "):
        parse_sweep({"sweep": {"seeds": 1}, "grid": {"model": "cnn2d", "stages": 2, "dataset": str(folder)}})


def test_identity_holds_the_family_options_by_name():
    spec = ModelSpec(model="resnet", depth=8, skip="add", width=4, shortcut="B")
    d = spec.to_dict()
    assert d["stages"] == 3 and d["shortcut"] == "B" and "family_options" not in d and "heads" not in d
    assert ModelSpec.from_dict(d) == spec
    assert RunSpec.from_dict(RunSpec(spec).to_dict()).spec_hash == RunSpec(spec).spec_hash
    assert RunSpec(spec).spec_hash != RunSpec(spec.replace(shortcut="A")).spec_hash
    assert "stages" not in ModelSpec(model="cnn2d").to_dict()


# -- training on a CIFAR-10 folder ---------------------------------------------------------------------------
def write_cifar(folder, per_batch):
    """A CIFAR-10 folder in torchvision's layout (cifar-10-batches-py: five data batches and a
    test batch, pickled dicts of b'data' (N, 3072) uint8 and b'labels'), random images."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize("argv", [
    ["--skip", "plain,add", "--depth", "8", "--width", "4", "--shortcut", "B"],
    ["--skip", "dense", "--depth", "10", "--width", "4", "--growth", "2", "--memory", "efficient"],
])
def test_trains_on_a_cifar10_folder(tmp_path, capsys, argv):
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", 8)  # 40 train, 8 test images
    out = tmp_path / "out"
    assert main(["train", "--model", "resnet", *argv, "--dataset", str(tmp_path / "cifar"), "--seeds", "1",
                 "--epochs", "1", "--batch-size", "16", "--workers", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    with Store(out) as store:
        runs = store.runs()
    assert len(runs) == len(argv[1].split(","))
    for run in runs:
        model = run["spec"]["model"]
        assert run["status"] == "complete", run
        assert model["model"] == "resnet" and model["input_shape"] == [3, 32, 32] and model["stages"] == 3
        assert 0 <= run["result"]["test_accuracy"] <= 1
