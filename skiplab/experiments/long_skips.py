"""Long skips (U-Net, Ronneberger et al., arXiv 1505.04597) merged by addition vs by
concatenation (seed answer 2: long concatenating skips in U-Nets, short additive ones in
ResNets), on a 1-D denoising task: MNIST-1D signals plus Gaussian noise, restore the
signal. Error and cost of each merge, and of no long skips at all."""

from __future__ import annotations

import statistics
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .context import Context

CLAIM = "U-Net's long skips help a dense prediction task; concatenating them costs more than adding them"
MERGES = ("none", "add", "concat")


def _conv(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv1d(cin, cout, 5, padding=2), nn.BatchNorm1d(cout), nn.ReLU())


class UNet1d(nn.Module):
    """Two levels down (length L -> L/2 -> L/4) and up; at each level the decoder merges the
    encoder's features of the same resolution: ``add`` (c + c -> c), ``concat``
    (c + c -> 2c channels into the next conv) or ``none``."""

    def __init__(self, merge: str, c: int = 16):
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"merge: {merge!r} is not one of {', '.join(MERGES)}")
        self.merge = merge
        wide = 2 if merge == "concat" else 1  # the channel arithmetic of concatenation, in one line
        self.enc1, self.enc2, self.mid = _conv(1, c), _conv(c, 2 * c), _conv(2 * c, 4 * c)
        self.up2, self.dec2 = nn.Conv1d(4 * c, 2 * c, 1), _conv(2 * c * wide, 2 * c)
        self.up1, self.dec1 = nn.Conv1d(2 * c, c, 1), _conv(c * wide, c)
        self.out = nn.Conv1d(c, 1, 1)

    def _join(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.merge == "add":
            return up + skip
        if self.merge == "concat":
            return torch.cat([up, skip], dim=1)
        return up

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, L), L divisible by 4
        e1 = self.enc1(x)  # (B, c, L)
        e2 = self.enc2(F.avg_pool1d(e1, 2))  # (B, 2c, L/2)
        m = self.mid(F.avg_pool1d(e2, 2))  # (B, 4c, L/4)
        d2 = self.dec2(self._join(self.up2(F.interpolate(m, scale_factor=2)), e2))  # (B, 2c, L/2)
        d1 = self.dec1(self._join(self.up1(F.interpolate(d2, scale_factor=2)), e1))  # (B, c, L)
        return self.out(d1)


def run(ctx: Context) -> dict[str, Any]:
    seeds = 2 if ctx.quick else 3
    epochs = 5 if ctx.quick else 30
    x_tr, x_te = ctx.data.x_train, ctx.data.x_test
    if x_tr.dim() != 3 or x_tr.shape[1] != 1 or x_tr.shape[2] % 4:
        raise ValueError("dataset: long-skips needs 1-channel sequences whose length is divisible by 4 (MNIST-1D)")
    scale = x_tr.std()
    sigma = 0.5  # noise, in units of the signal's standard deviation
    g = torch.Generator().manual_seed(123)
    noisy_te = x_te + sigma * scale * torch.randn(x_te.shape, generator=g)
    rows = []
    for merge in MERGES:
        for seed in range(seeds):
            ctx.say(f"long-skips: {merge}, seed {seed}")
            torch.manual_seed(seed)
            net = UNet1d(merge)
            opt = torch.optim.Adam(net.parameters(), lr=3e-3)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                order = torch.randperm(len(x_tr), generator=gen)
                for i in range(0, len(order), 128):
                    clean = x_tr[order[i:i + 128]]
                    noisy = clean + sigma * scale * torch.randn(clean.shape, generator=gen)
                    loss = F.mse_loss(net(noisy), clean)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            net.eval()
            with torch.no_grad():
                mse = float(F.mse_loss(net(noisy_te), x_te) / scale ** 2)
            with FlopCounterMode(display=False) as fc:
                net(noisy_te[:1])
            rows.append({"merge": merge, "seed": seed, "test_mse": mse,
                         "params": sum(p.numel() for p in net.parameters()), "flops": fc.get_total_flops()})
    summary = {}
    for merge in MERGES:
        mine = [r for r in rows if r["merge"] == merge]
        errs = [r["test_mse"] for r in mine]
        summary[merge] = {"test_mse": statistics.fmean(errs), "test_mse_std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
                          "params": mine[0]["params"], "flops": mine[0]["flops"]}
    noisy_mse = float(F.mse_loss(noisy_te, x_te) / scale ** 2)
    outcome = (f"Denoising MNIST-1D (noise {noisy_mse:.3f}, relative MSE): " + ", ".join(
        f"{m} {v['test_mse']:.4f} +- {v['test_mse_std']:.4f} ({v['params']:,} params, {v['flops']:,} FLOPs)"
        for m, v in summary.items()) + f"; {seeds} seeds, {epochs} epochs.")
    return {"claim": CLAIM, "outcome": outcome, "noisy_mse": noisy_mse, "summary": summary, "rows": rows}
