"""Long skips (U-Net, Ronneberger et al., arXiv 1505.04597, Sec. 2 / Fig. 1) merged by
addition vs by concatenation (seed answer 2: long concatenating skips in U-Nets, short
additive ones in ResNets), on a 1-D denoising task: the dataset's signals plus Gaussian
noise, restore the signal. Error and cost of each merge, and of no long skips at all.

Each U-Net training run is stored in the ``runs`` table like any other (its spec names
``model: unet1d`` and ``skip: long-none | long-add | long-concat``; its result holds the
test MSE, no accuracy), and a finished run is reused, never trained twice.

Regime criterion of the default form (checked and reported): **every U-Net has trained
to a plateau: the mean training error of its last 3 epochs is within 5% of the 3 epochs
before**. Over 3 seeds. Verdict
(:mod:`.outcome`): long skips help, i.e. add's and concat's test MSE are each below
none's; concatenation's extra cost (parameters, FLOPs) is exact arithmetic, reported.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import traceback
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..run.runner import dataset_for  # the experiments' one dataset cache
from ..store import now
from .context import Context, run_output
from .outcome import closing, decide, predict, regime, signed
from ..errors import UserError

CLAIM = "U-Net's long skips help a dense prediction task; concatenating them costs more than adding them"
# How a decoder level joins the encoder's features of its resolution: the U-Net's own merge
# modes (not skip strategies); "none" is the U-Net without long skips.
NO_JOIN, ADD_JOIN, CONCAT_JOIN = "none", "add", "concat"
MERGES = (NO_JOIN, ADD_JOIN, CONCAT_JOIN)
LONG_SKIPS = (ADD_JOIN, CONCAT_JOIN)
SIGMA = 0.5  # noise, in units of the signal's standard deviation
DEFAULT = dict(epochs=20, seeds=3, channels=16)
PLATEAU = 0.05  # the regime: relative change of the training error over the last epochs
QUICK = dict(epochs=3, seeds=2, channels=16)


def _conv(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv1d(cin, cout, 5, padding=2), nn.BatchNorm1d(cout), nn.ReLU())


# How each join merges, and the factor by which it multiplies the channels its next conv sees.
JOINS = {NO_JOIN: lambda up, skip: up, ADD_JOIN: lambda up, skip: up + skip,
         CONCAT_JOIN: lambda up, skip: torch.cat([up, skip], dim=1)}
WIDTH_FACTOR = {NO_JOIN: 1, ADD_JOIN: 1, CONCAT_JOIN: 2}


class UNet1d(nn.Module):
    """Two levels down (length L -> L/2 -> L/4) and up; at each level the decoder merges the
    encoder's features of the same resolution: ``add`` (c + c -> c), ``concat``
    (c + c -> 2c channels into the next conv) or ``none``."""

    def __init__(self, merge: str, c: int = 16):
        super().__init__()
        if merge not in MERGES:
            raise UserError(f"merge: {merge!r} is not one of {', '.join(MERGES)}")
        self.merge = merge
        self._join = JOINS[merge]
        wide = WIDTH_FACTOR[merge]  # the channel arithmetic of concatenation, in one line
        self.enc1, self.enc2, self.mid = _conv(1, c), _conv(c, 2 * c), _conv(2 * c, 4 * c)
        self.up2, self.dec2 = nn.Conv1d(4 * c, 2 * c, 1), _conv(2 * c * wide, 2 * c)
        self.up1, self.dec1 = nn.Conv1d(2 * c, c, 1), _conv(c * wide, c)
        self.out = nn.Conv1d(c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, L), L divisible by 4
        e1 = self.enc1(x)  # (B, c, L)
        e2 = self.enc2(F.avg_pool1d(e1, 2))  # (B, 2c, L/2)
        m = self.mid(F.avg_pool1d(e2, 2))  # (B, 4c, L/4)
        d2 = self.dec2(self._join(self.up2(F.interpolate(m, scale_factor=2)), e2))  # (B, 2c, L/2)
        d1 = self.dec1(self._join(self.up1(F.interpolate(d2, scale_factor=2)), e1))  # (B, c, L)
        return self.out(d1)


def check_data(x: torch.Tensor) -> None:
    if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] % 4:
        raise UserError(f"dataset: long-skips needs 1-channel sequences whose length is divisible by 4 (e.g. "
                         f"MNIST-1D's (1, 40)); this one's samples have shape {tuple(x.shape[1:])}")


def unet_spec(merge: str, c: int, epochs: int, dataset: str, seed: int) -> dict[str, Any]:
    """A U-Net run's spec as stored (the fields ``runs list`` and the report read)."""
    return {"model": {"model": "unet1d", "skip": f"long-{merge}", "depth": 2, "width": c, "options": {},
                      "norm": "batch", "kernel_size": 5},
            "train": {"task": "denoise", "noise_sigma": SIGMA, "noise_test_seed": 123, "optimizer": "adam",
                      "lr": 3e-3, "batch_size": 128, "epochs": epochs},
            "dataset": dataset, "seed": seed, "group": "exp:long-skips", "label": "label"}


def spec_hash(spec: dict[str, Any]) -> str:
    d = {k: v for k, v in spec.items() if k != "seed"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _noisy_test(x_te: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return x_te + SIGMA * scale * torch.randn(x_te.shape, generator=g)


def train_unet(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one U-Net as ``spec`` says; a run output for the store (never raises)."""
    started, start = now(), time.perf_counter()
    h, seed = spec_hash(spec), spec["seed"]
    try:
        data = dataset_for(spec["dataset"], spec["label"])
        x_tr, x_te = data.x_train, data.x_test
        check_data(x_tr)
        t, merge = spec["train"], spec["model"]["skip"].removeprefix("long-")
        scale = x_tr.std()
        noisy_te = _noisy_test(x_te, scale)
        torch.manual_seed(seed)
        net = UNet1d(merge, spec["model"]["width"])
        opt = torch.optim.Adam(net.parameters(), lr=t["lr"])
        gen = torch.Generator().manual_seed(seed)
        curves, step = [], 0
        for epoch in range(t["epochs"]):
            order = torch.randperm(len(x_tr), generator=gen)
            total = count = 0.0
            for i in range(0, len(order), t["batch_size"]):
                clean = x_tr[order[i:i + t["batch_size"]]]
                noisy = clean + SIGMA * scale * torch.randn(clean.shape, generator=gen)
                loss = F.mse_loss(net(noisy), clean)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                total, count = total + loss.item() * len(clean), count + len(clean)
            curves.append((step, "train", "relative_mse", total / count / float(scale) ** 2))
        net.eval()
        with torch.no_grad():
            mse = float(F.mse_loss(net(noisy_te), x_te) / scale ** 2)
        with FlopCounterMode(display=False) as fc:
            net(noisy_te[:1])
        curves.append((step, "test", "relative_mse", mse))
        result = {"status": "complete", "seed": seed, "test_mse": mse, "noisy_mse": float(F.mse_loss(noisy_te, x_te)
                                                                                         / scale ** 2),
                  "train_mse": curves[-2][3], "params": sum(p.numel() for p in net.parameters()),
                  "flops": fc.get_total_flops(), "steps": step, "seconds": time.perf_counter() - start,
                  "test_accuracy": None, "train_accuracy": None}
        return run_output(spec, h, "complete", result, curves, started)
    except Exception as e:  # noqa: BLE001 - a failed run is stored with its reason; the rest go on
        return run_output(spec, h, "failed", {"status": "failed", "seed": seed, "message": f"{type(e).__name__}: {e}",
                                              "traceback": traceback.format_exc(limit=5),
                                              "seconds": time.perf_counter() - start}, [], started)


def train_unets(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scheduler's task function: each U-Net spec trained in turn."""
    return [train_unet(s) for s in specs]


def _plateau(run_id: int, ctx: Context) -> float | None:
    """Relative change of the mean training error, last 3 epochs vs the 3 before."""
    train = [v for _, split, _, v in ctx.store.metrics(run_id) if split == "train"]
    if len(train) < 6:
        return None
    before, last = statistics.fmean(train[-6:-3]), statistics.fmean(train[-3:])
    return abs(before - last) / before


def run(ctx: Context, **form) -> dict[str, Any]:
    f = {**(QUICK if ctx.quick else DEFAULT), **form}
    seeds, epochs = f["seeds"], f["epochs"]
    check_data(ctx.data.x_train)  # before anything trains: one line
    specs = [unet_spec(m, f["channels"], epochs, ctx.dataset, seed) for m in MERGES for seed in range(seeds)]
    ctx.say(f"long-skips: training {len(specs)} U-Nets")
    outs = ctx.run_jobs(train_unets, [((spec_hash(s), s["seed"]), s) for s in specs])
    rows = [{"merge": s["model"]["skip"].removeprefix("long-"), "seed": s["seed"], "test_mse": o["result"]["test_mse"],
             "params": o["result"]["params"], "flops": o["result"]["flops"]}
            for s, o in zip(specs, outs) if o["status"] == "complete"]
    errs = {m: [r["test_mse"] for r in rows if r["merge"] == m] for m in MERGES}
    summary = {}
    for merge in MERGES:
        mine = [r for r in rows if r["merge"] == merge]
        if mine:
            summary[merge] = {"test_mse": statistics.fmean(errs[merge]),
                              "test_mse_std": statistics.stdev(errs[merge]) if len(mine) > 1 else None,
                              "params": mine[0]["params"], "flops": mine[0]["flops"], "seeds": len(mine)}
    noisy_mse = float(F.mse_loss(_noisy_test(ctx.data.x_test, ctx.data.x_train.std()), ctx.data.x_test)
                      / ctx.data.x_train.std() ** 2)
    helps = [predict(errs[NO_JOIN], errs[m], higher=False) for m in LONG_SKIPS]
    changes = [_plateau(o["id"], ctx) for o in outs if o["status"] == "complete"]
    changes = [c for c in changes if c is not None]
    reg = regime(f"every U-Net's training error over its last 3 epochs is within {100 * PLATEAU:.0f}% of the 3 before",
                 len(changes) == len(specs) and max(changes) <= PLATEAU,
                 f"largest change {100 * max(changes):.1f}%" if changes else "too few epochs to tell")
    verdict = decide(helps, reg["met"])

    def mse(m: str) -> str:
        v = summary.get(m)
        if v is None:
            return f"{m} -"
        spread = f" +- {v['test_mse_std']:.4f}" if v["test_mse_std"] is not None else " (1 seed)"
        return f"{m} {v['test_mse']:.4f}{spread} ({v['params']:,} params, {v['flops']:,} FLOPs)"

    cost = ""
    if ADD_JOIN in summary and CONCAT_JOIN in summary:
        a, c = summary[ADD_JOIN], summary[CONCAT_JOIN]
        cost = (f"; concatenation costs {c['params'] / a['params']:.2f}x the parameters and "
                f"{c['flops'] / a['flops']:.2f}x the FLOPs of addition")
    outcome = (f"Denoising (noisy input {noisy_mse:.3f}, relative MSE, lower is better): "
               + ", ".join(mse(m) for m in MERGES) + "; "
               + ", ".join(signed(p.comparison, f"{m} minus none", unit="", digits=4)
                           for m, p in zip(LONG_SKIPS, helps))
               + cost + f" ({seeds} seeds, {epochs} epochs)." + closing(verdict, reg))
    return {"claim": CLAIM, "outcome": outcome, "verdict": verdict, "regime": reg, "noisy_mse": noisy_mse,
            "summary": summary, "rows": rows, "form": f}
