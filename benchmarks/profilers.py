"""skiplab.profile beside fvcore, ptflops and torchinfo on three models.

The models: a skiplab dense CNN (cnn2d, depth 6, width 16, DenseNet concatenation), a
ResNet-style CNN written out here (three stages of two basic blocks, widths 16/32/64, the
2nd and 3rd stages downsampling through a 1x1 projection; He et al., arXiv 1512.03385,
Sec. 4.2), both on 3x32x32 images, and a Hugging Face GPT-2 built from a small
``GPT2Config`` (4 layers, width 128, 4 heads, vocabulary 1000, 64 tokens; random init,
nothing downloaded; eager attention, no key/value cache), all for a batch of 8 in train
mode. Each tool is asked for what it reports: parameters, forward FLOPs, merge FLOPs,
concatenation bytes, activation memory; "not reported" where it has no such figure.

Conventions (read from each tool's installed code, versions printed with the table):
* skiplab: FLOPs = 2 x multiply-adds of matmul/conv (``torch.utils.flop_counter``); merges
  by ``skiplab.profiling.merge_rule``; activation memory = bytes autograd saves for backward.
* fvcore ``FlopCountAnalysis``: "We count one fused multiply-add as one flop" (its
  docstring), so its FLOPs are multiply-adds: x2 to compare. It also counts batch and
  layer norm and pooling. ``aten::cat`` is in its ``_IGNORED_OPS`` ("ops that are technically
  truly 0 flops"); ``aten::add`` has no handle, so it is skipped as an unsupported op.
* ptflops ``get_model_complexity_info`` returns MACs (x2 to compare), with norm, activation
  and pooling layers counted as well; both backends are run (pytorch: module hooks plus
  patched torch functions; aten: a dispatch mode over aten.mm/convolution/...).
* torchinfo ``summary``: "Mult-Adds" (x2 to compare); "Forward/backward pass size" = 2 x the
  output bytes of each leaf layer that has parameters (``ModelStatistics``: "x2 for
  gradients"), which is what its activation column shows here.

Run: ``python benchmarks/profilers.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import contextlib
import io
import platform
import warnings
from importlib.metadata import version

import torch
from torch import nn

from skiplab import ModelSpec, build_model, profile

BATCH = 8
NOT = "not reported"


# -- the models ---------------------------------------------------------------------------
class Basic(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stages = nn.Sequential(Basic(16, 16, 1), Basic(16, 16, 1), Basic(16, 32, 2), Basic(32, 32, 1),
                                    Basic(32, 64, 2), Basic(64, 64, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


class Logits(nn.Module):
    """GPT-2's logits alone (fvcore traces with torch.jit, which needs tensor outputs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(ids, use_cache=False).logits


def models():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, 32, 32, generator=g)
    dense = build_model(ModelSpec(model="cnn2d", depth=6, width=16, skip="dense", input_shape=(3, 32, 32),
                                  classes=10), seed=0)
    torch.manual_seed(0)
    yield "skiplab dense cnn2d", dense, images
    yield "ResNet-style CNN", SmallResNet(), images
    from transformers import AutoModelForCausalLM, GPT2Config
    config = GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=1000, n_positions=64, bos_token_id=0,
                        eos_token_id=0)
    gpt2 = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    yield "GPT-2 (4 x 128)", Logits(gpt2), torch.randint(0, 1000, (BATCH, 64), generator=g)


# -- the tools ----------------------------------------------------------------------------
def _quiet(fn):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn()


def skiplab_row(model, x):
    p = profile(model.train(), x)
    t = p.total
    return {"params": t["params"], "flops": t["flops"], "merge": t["merge_flops"],
            "concat": t["concat_bytes"], "act": t["saved_bytes"], "note": "FLOPs = 2 x MACs; act = saved for backward"}


def fvcore_row(model, x):
    from fvcore.nn import FlopCountAnalysis, parameter_count
    a = FlopCountAnalysis(model.train(), x)
    total = _quiet(a.total)
    skipped = a.unsupported_ops()
    adds = sum(n for op, n in skipped.items() if op.startswith("aten::add"))
    return {"params": parameter_count(model)[""], "flops": 2 * total, "merge": NOT, "concat": NOT, "act": NOT,
            "note": f"reported {total:,} (1 per MAC, norms and pooling too), x2 here; "
                    f"{adds} aten::add calls skipped as unsupported"}


def ptflops_row(backend):
    def row(model, x):
        from ptflops import get_model_complexity_info
        macs, params = _quiet(lambda: get_model_complexity_info(
            model.train(), tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False,
            input_constructor=lambda _: {"ids" if x.dtype == torch.int64 else "x": x}, backend=backend))
        return {"params": params, "flops": 2 * macs, "merge": NOT, "concat": NOT, "act": NOT,
                "note": f"reported {macs:,} MACs (with norms, activations, pooling), x2 here"}
    return row


def torchinfo_row(model, x):
    from torchinfo import summary
    s = _quiet(lambda: summary(model.train(), input_data=[x], verbose=0))
    return {"params": s.total_params, "flops": 2 * s.total_mult_adds, "merge": NOT, "concat": NOT,
            "act": s.total_output_bytes,
            "note": f"reported {s.total_mult_adds:,} mult-adds, x2 here; act = its forward/backward pass size "
                    f"(2 x outputs of leaf layers with parameters)"}


TOOLS = {"skiplab": (skiplab_row, "skiplab"), "fvcore": (fvcore_row, "fvcore"),
         "ptflops (pytorch)": (ptflops_row("pytorch"), "ptflops"), "ptflops (aten)": (ptflops_row("aten"), "ptflops"),
         "torchinfo": (torchinfo_row, "torchinfo")}


def _cell(v):
    return v if isinstance(v, str) else f"{v:,}"


def main() -> None:
    versions = {}
    for dist in ("torch", "skiplab", "fvcore", "ptflops", "torchinfo", "transformers"):
        try:
            versions[dist] = version(dist)
        except Exception:
            versions[dist] = "not installed"
    print(f"torch {versions['torch']} on {platform.machine()} ({torch.get_num_threads()} threads), batch {BATCH}, "
          f"train mode; " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "torch"))
    for name, model, x in models():
        print(f"\n**{name}**, input {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}\n")
        print("| tool | params | forward FLOPs | merge FLOPs | concat bytes | activation bytes | notes |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for tool, (row, dist) in TOOLS.items():
            if versions[dist] == "not installed":
                print(f"| {tool} | not installed | | | | | |")
                continue
            try:
                r = row(model, x)
            except Exception as e:  # a tool that cannot handle the model says so in its row
                print(f"| {tool} | failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:80]} | | | | | |")
                continue
            print(f"| {tool} | {_cell(r['params'])} | {_cell(r['flops'])} | {_cell(r['merge'])} | "
                  f"{_cell(r['concat'])} | {_cell(r['act'])} | {r['note']} |")


if __name__ == "__main__":
    main()
