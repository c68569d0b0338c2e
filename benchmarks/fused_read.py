"""What a fused kernel for hyper-connections' read would save, measured against skiplab's
own code in one run (issue 27: the speed targets at width 64 "need a fused kernel").

Dynamic hyper-connections (Zhu et al., arXiv 2409.19606, Eq. 10-13) read the n copies of
each token through a chain of small operations: a layer norm per copy, the projection to
the dynamic weights, tanh, the weights, then one contraction that gives the branch's input
and the mixed copies. skiplab writes that chain as PyTorch operations (one ``bmm`` for the
contraction, ``skiplab.skips.hyper``). This benchmark writes the same chain as one loop
over the tokens in C, with its backward by hand (each token's n x C rows stay in cache for
every step of the chain), compiles it with the machine's C compiler, checks that it gives
skiplab's values and gradients, and times both, forward and backward of one sublayer's read
and write, side by side, interleaved.

It is a measurement, not a code path: skiplab never calls this kernel (a compiled core
would need a compiler on every user's machine, a path under vmap and one under
``torch.compile``). Float32, one seed, the study's shape (2,048 tokens, 4 copies, width 64).

    python benchmarks/fused_read.py [--threads 1] [--repeats 9] [--width 64] [--depth 6] [--quick]

Exit code 2, with one line, when no C compiler is found (``CC``, else ``cc``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from skiplab import build_model
from skiplab.skips.hyper import HyperConnection, expand, layout_of_rows, token_rows, write_rows

# One token at a time: mean and inverse deviation of each copy (F.layer_norm, eps 1e-5, no
# affine), z = norm(x_k) W^T, t = tanh(z), the weights [A_m | A_r] + s_a t[:, :n+1] and
# B + s_b t[:, n+1], then out_i = sum_k A[k, i] x_k for i = 0 (the branch's input) and
# 1..n (the mixed copies). The backward recomputes norm(x_k) from the kept mean and inverse
# deviation and accumulates the parameters' gradients over the tokens.
SOURCE = r"""
#include <math.h>
#include <string.h>
#define MAXN 8
#define MAXC 4096
void vector_tanh(long count, float* v);  /* TANH_SOURCE, compiled apart */
void read_fwd(long T, long n, long C, const float* X, const float* W, const float* S0, float sa,
              const float* b, float sb, float* h, float* mixed, float* Bt, float* th, float* mu, float* rstd) {
  long m = n + 2; float A[MAXN * (MAXN + 1)];
  for (long t = 0; t < T; t++) {  /* pass 1: each copy's norm and z = norm(x_k) W^T, into th */
    const float* x = X + t*n*C; float* tt = th + t*n*m;
    for (long k = 0; k < n; k++) {
      const float* xk = x + k*C; float s = 0.f, v = 0.f;
      #pragma omp simd reduction(+:s)
      for (long c = 0; c < C; c++) s += xk[c];
      float mean = s / C;
      #pragma omp simd reduction(+:v)
      for (long c = 0; c < C; c++) { float d = xk[c] - mean; v += d*d; }
      float r = 1.f / sqrtf(v / C + 1e-5f);
      mu[t*n+k] = mean; rstd[t*n+k] = r;
      for (long j = 0; j < m; j++) {
        const float* wj = W + j*C; float z = 0.f;
        #pragma omp simd reduction(+:z)
        for (long c = 0; c < C; c++) z += (xk[c] - mean) * wj[c];
        tt[k*m+j] = z * r;
      }
    }
  }
  vector_tanh(T*n*m, th);  /* pass 2: tanh over all of them at once (vectorised) */
  for (long t = 0; t < T; t++) {  /* pass 3: the weights, then the contraction */
    const float* x = X + t*n*C; const float* tt = th + t*n*m;
    for (long k = 0; k < n; k++) {
      for (long i = 0; i <= n; i++) A[k*(n+1)+i] = S0[k*(n+1)+i] + sa * tt[k*m+i];
      Bt[t*n+k] = b[k] + sb * tt[k*m+n+1];
    }
    for (long i = 0; i <= n; i++) {
      float* oi = i == 0 ? h + t*C : mixed + (t*n + i - 1)*C; float a0 = A[i];
      #pragma omp simd
      for (long c = 0; c < C; c++) oi[c] = a0 * x[c];
      for (long k = 1; k < n; k++) {
        float a = A[k*(n+1)+i]; const float* xk = x + k*C;
        #pragma omp simd
        for (long c = 0; c < C; c++) oi[c] += a * xk[c];
      }
    }
  }
}
void read_bwd(long T, long n, long C, const float* X, const float* W, const float* S0, float sa, float sb,
              const float* th, const float* mu, const float* rstd, const float* gh, const float* gmixed, const float* gBt,
              float* gX, float* gW, float* gS0, float* gsa, float* gb, float* gsb) {
  long m = n + 2; float A[MAXN * (MAXN + 1)], gz[MAXN + 2], bar[MAXC], gbar[MAXC];
  double acc_a = 0, acc_b = 0;
  memset(gW, 0, sizeof(float)*m*C); memset(gS0, 0, sizeof(float)*n*(n+1)); memset(gb, 0, sizeof(float)*n);
  for (long t = 0; t < T; t++) {
    const float* x = X + t*n*C; const float* g0 = gh + t*C; const float* gm = gmixed + t*n*C;
    const float* tt = th + t*n*m;
    float* gx = gX + t*n*C;
    for (long k = 0; k < n; k++) for (long i = 0; i <= n; i++) A[k*(n+1)+i] = S0[k*(n+1)+i] + sa * tt[k*m+i];
    for (long k = 0; k < n; k++) {
      const float* xk = x + k*C; float* gxk = gx + k*C;
      #pragma omp simd
      for (long c = 0; c < C; c++) gxk[c] = A[k*(n+1)] * g0[c];
      for (long i = 1; i <= n; i++) {
        float a = A[k*(n+1)+i]; const float* gi = gm + (i-1)*C;
        #pragma omp simd
        for (long c = 0; c < C; c++) gxk[c] += a * gi[c];
      }
      for (long i = 0; i <= n; i++) {
        const float* gi = i == 0 ? g0 : gm + (i-1)*C; float d = 0.f;
        #pragma omp simd reduction(+:d)
        for (long c = 0; c < C; c++) d += gi[c] * xk[c];
        float tv = tt[k*m+i];
        gS0[k*(n+1)+i] += d; acc_a += (double)d * tv; gz[i] = sa * d * (1.f - tv*tv);
      }
      float gbt = gBt[t*n+k], tv = tt[k*m+n+1];
      gb[k] += gbt; acc_b += (double)gbt * tv; gz[n+1] = sb * gbt * (1.f - tv*tv);
      float mean = mu[t*n+k], r = rstd[t*n+k];
      #pragma omp simd
      for (long c = 0; c < C; c++) { bar[c] = (xk[c] - mean) * r; gbar[c] = 0.f; }
      for (long j = 0; j < m; j++) {
        float gj = gz[j]; const float* wj = W + j*C; float* gwj = gW + j*C;
        #pragma omp simd
        for (long c = 0; c < C; c++) { gwj[c] += gj * bar[c]; gbar[c] += gj * wj[c]; }
      }
      float m1 = 0.f, m2 = 0.f;
      #pragma omp simd reduction(+:m1,m2)
      for (long c = 0; c < C; c++) { m1 += gbar[c]; m2 += gbar[c] * bar[c]; }
      m1 /= C; m2 /= C;
      #pragma omp simd
      for (long c = 0; c < C; c++) gxk[c] += r * (gbar[c] - m1 - bar[c] * m2);
    }
  }
  *gsa = (float)acc_a; *gsb = (float)acc_b;
}
"""
# tanh apart, under -ffast-math: glibc's vector tanhf (libmvec, a few ulp), 8 at a time where
# the scalar tanhf took 1.7 of the forward's 2.5 ms (this benchmark's first version)
TANH_SOURCE = r"""
#include <math.h>
void vector_tanh(long count, float* v) {
  #pragma omp simd
  for (long i = 0; i < count; i++) v[i] = tanhf(v[i]);
}
"""
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fPIC"]


class Unavailable(Exception):
    """No C compiler, or it failed: the message says which."""


def compile_kernel(workdir: Path) -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise Unavailable("no C compiler found (set CC, or install gcc)")
    src, tanh_src, lib = workdir / "fused_read.c", workdir / "vector_tanh.c", workdir / "fused_read.so"
    src.write_text(SOURCE)
    tanh_src.write_text(TANH_SOURCE)
    objects = [str(workdir / "fused_read.o"), str(workdir / "vector_tanh.o")]
    link = [cc, "-shared", "-o", str(lib), *objects]
    # libmvec: glibc's vector maths on x86-64; elsewhere the objects need only libm
    for cmd in ([cc, *FLAGS, "-c", "-o", objects[0], str(src)],
                [cc, *FLAGS, "-ffast-math", "-c", "-o", objects[1], str(tanh_src)],
                [*link, "-lmvec", "-lm"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode and cmd[:len(link)] == link:
            done = subprocess.run([*link, "-lm"], capture_output=True, text=True)
        if done.returncode:
            err = done.stderr.strip().splitlines()
            raise Unavailable(f"{cc} failed: {err[-1] if err else done.returncode}")
    dll = ctypes.CDLL(str(lib))
    P, L, F32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_float
    dll.read_fwd.argtypes = [L, L, L, P, P, P, F32, P, F32, P, P, P, P, P, P]
    dll.read_bwd.argtypes = [L, L, L, P, P, P, F32, F32, P, P, P, P, P, P, P, P, P, P, P, P]
    return dll


def _p(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def fused_read_function(dll: ctypes.CDLL):
    class FusedRead(torch.autograd.Function):
        """rows (T, n, C) -> the branch's input h (T, C), the mixed copies (T, n, C) and
        B(H) (T, n), as HyperConnection's dynamic read computes them (three outputs, so
        that autograd assembles no gradient of slices)."""

        @staticmethod
        def forward(ctx, rows, w, static, s_a, b, s_b):
            T, n, C = rows.shape
            rows, w, static = rows.contiguous(), w.contiguous(), static.contiguous()
            h, mixed, bt = rows.new_empty(T, C), rows.new_empty(T, n, C), rows.new_empty(T, n)
            th, mu, rstd = rows.new_empty(T, n, n + 2), rows.new_empty(T, n), rows.new_empty(T, n)
            dll.read_fwd(T, n, C, _p(rows), _p(w), _p(static), float(s_a), _p(b), float(s_b),
                         _p(h), _p(mixed), _p(bt), _p(th), _p(mu), _p(rstd))
            ctx.save_for_backward(rows, w, static, s_a, s_b, th, mu, rstd)
            return h, mixed, bt

        @staticmethod
        def backward(ctx, g_h, g_mixed, g_bt):
            rows, w, static, s_a, s_b, th, mu, rstd = ctx.saved_tensors
            T, n, C = rows.shape
            g_h = torch.zeros(T, C) if g_h is None else g_h.contiguous()
            g_mixed = torch.zeros(T, n, C) if g_mixed is None else g_mixed.contiguous()
            g_bt = torch.zeros(T, n) if g_bt is None else g_bt.contiguous()
            g_rows, g_w, g_static = torch.empty_like(rows), torch.empty_like(w), torch.empty_like(static)
            g_sa, g_b, g_sb = torch.empty(()), rows.new_empty(n), torch.empty(())
            dll.read_bwd(T, n, C, _p(rows), _p(w), _p(static), float(s_a), float(s_b), _p(th), _p(mu), _p(rstd),
                         _p(g_h), _p(g_mixed), _p(g_bt), _p(g_rows), _p(g_w), _p(g_static), _p(g_sa), _p(g_b), _p(g_sb))
            return g_rows, g_w, g_static, g_sa, g_b, g_sb

    return FusedRead


def connection(width: int, streams: int, seed: int = 0) -> HyperConnection:
    """A dynamic hyper-connection away from its init (at init W = 0 and the dynamic part
    is 0, which would leave most of the chain's gradients untested)."""
    hc = HyperConnection(None, channels=width, streams=streams, layer=1, channel_dim=-1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hc.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return hc


def skiplab_step(hc: HyperConnection, H: torch.Tensor, f: torch.Tensor, G: torch.Tensor) -> list[torch.Tensor]:
    """Forward and backward of skiplab's read and write: h (the branch's input) and the
    new stream, with h + f standing in for the branch's output."""
    h = hc.read(H)
    new = hc.write(H, h + f)
    return torch.autograd.grad((new * G).sum(), [H, *hc.parameters()])


def fused_step(FusedRead, hc: HyperConnection, H: torch.Tensor, f: torch.Tensor, G: torch.Tensor) -> list[torch.Tensor]:
    """The same, with the read fused in C and the write as skiplab writes it."""
    rows, lead = token_rows(H, -1)
    h, mixed, bt = FusedRead.apply(rows, hc.w, hc._static(), hc.s_a, hc.b, hc.s_b)
    new = write_rows(mixed, bt, h + f.reshape(h.shape))
    return torch.autograd.grad((new.view(*lead, *new.shape[1:]).movedim(-2, 0) * G).sum(), [H, *hc.parameters()])


def with_fused_reads(model: torch.nn.Module, FusedRead) -> torch.nn.Module:
    """``model`` with every dynamic hyper-connection reading through the C kernel (its
    ``_read`` replaced on the instance; the write stays skiplab's)."""
    def _read(self, H):
        rows, lead = token_rows(H, self.channel_dim)
        h, mixed, b = FusedRead.apply(rows, self.w, self._static(), self.s_a, self.b, self.s_b)
        return layout_of_rows(h, lead, self.channel_dim), (mixed, b, lead)

    for m in model.modules():
        if isinstance(m, HyperConnection) and m.dynamic:
            m._read = types.MethodType(_read, m)
    return model


def model_rows(FusedRead, depth: int, width: int, quick: bool):
    """add, hyper and hyper with fused reads: stream_overhead.py's model and step."""
    sys.path.insert(0, str(Path(__file__).parent))
    import stream_overhead as so
    shape = so.QUICK if quick else so.Shape(width=width)
    build = lambda skip: build_model(so.spec_for(skip, {}, depth, shape), seed=0)  # noqa: E731
    return so, [("add", so.Stepper(build("add"), shape)), ("hyper", so.Stepper(build("hyper"), shape)),
                ("hyper, read fused in C", so.Stepper(with_fused_reads(build("hyper"), FusedRead), shape))]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the C loop uses one; default 1)")
    p.add_argument("--repeats", type=int, default=9, help="interleaved repeats of 20 calls (default 9)")
    p.add_argument("--width", type=int, default=64, help="channels C (default 64, the study's)")
    p.add_argument("--depth", type=int, default=6, help="blocks of the whole-model rows (default 6)")
    p.add_argument("--quick", action="store_true", help="a tiny shape, one repeat: checks that it runs and agrees")
    args = p.parse_args(argv)
    if min(args.threads, args.repeats, args.depth) < 1 or not 1 <= args.width <= 4096:
        p.error("--threads, --repeats and --depth must be >= 1 and --width in 1..4096 (the kernel's buffers)")
    if args.width % 4:
        p.error(f"--width: must be a multiple of the model's 4 heads, got {args.width}")
    torch.set_num_threads(args.threads)
    streams, (batch, context, width) = 4, ((2, 8, 16) if args.quick else (32, 64, args.width))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            FusedRead = fused_read_function(compile_kernel(Path(tmp)))
        except Unavailable as e:
            print(f"fused_read: {e}", file=sys.stderr)
            raise SystemExit(2)
        hc = connection(width, streams)
        g = torch.Generator().manual_seed(1)
        # the stream as skiplab stores it for the dynamic form: token-major (n, B, T, C)
        H = expand(torch.randn(batch, context, width, generator=g), streams).contiguous()
        H = (H + 0.1 * torch.randn(H.shape, generator=g)).movedim(0, -2).contiguous().movedim(-2, 0).requires_grad_()
        # G: the gradient from above, token-major as the next sublayer's read passes it down
        f, G = torch.randn(batch, context, width, generator=g), torch.randn(H.shape, generator=g)
        G = G.movedim(0, -2).contiguous().movedim(-2, 0)
        ours = skiplab_step(hc, H, f, G)
        fused = fused_step(FusedRead, hc, H, f, G)
        errors = [float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(fused, ours)]
        repeats, calls = (1, 2) if args.quick else (args.repeats, 20)
        so, steppers = model_rows(FusedRead, 1 if args.quick else args.depth, width, args.quick)
        rows = [("sublayer, skiplab", lambda: skiplab_step(hc, H, f, G)),
                ("sublayer, read fused in C", lambda: fused_step(FusedRead, hc, H, f, G))]
        rows += [(f"model, {label}", s.step) for label, s in steppers]
        times: dict[str, list[float]] = {label: [] for label, _ in rows}
        for label, fn in rows:  # warm-up
            fn()
        for _ in range(repeats):  # interleaved
            for label, fn in rows:
                n_calls = calls if label.startswith("sublayer") else 2
                start = time.perf_counter()
                for _ in range(n_calls):
                    fn()
                times[label].append((time.perf_counter() - start) / n_calls)
        # the same steps taken on the same batch: the fused model trained as hyper did
        with torch.no_grad():
            losses = [float(s.loss(s.x, s.y)) for _, s in steppers[1:]]
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    result = {"cpu": so.cpu_name(), "tokens": batch * context, "streams": streams, "width": width,
              "depth": 1 if args.quick else args.depth, "threads": args.threads,
              "largest_relative_error": max(errors), "loss_difference": abs(losses[0] - losses[1]), "ms": ms,
              "sublayer_ratio": ms["sublayer, read fused in C"] / ms["sublayer, skiplab"],
              "x_add": {k[len("model, "):]: v / ms["model, add"] for k, v in ms.items() if k.startswith("model")}}
    print(f"{result['cpu']}, torch {torch.__version__}, {args.threads} torch thread(s); {result['tokens']} tokens, "
          f"{streams} copies, width {width}; medians of {repeats} interleaved repeats")
    print(f"one sublayer's read and write, forward and backward ({calls} calls a repeat): skiplab "
          f"{ms['sublayer, skiplab']:.3f} ms, read fused in C {ms['sublayer, read fused in C']:.3f} ms, ratio "
          f"{result['sublayer_ratio']:.2f}; values and gradients agree to {max(errors):.1e} (relative)")
    print(f"one training step of the depth-{result['depth']} model (2 steps a repeat), ms and x add:")
    for label, ratio in result["x_add"].items():
        print(f"  {label:24s} {ms['model, ' + label]:8.1f} {ratio:6.2f}")
    print(f"  after these steps the fused model's loss differs from hyper's by {result['loss_difference']:.1e}")
    return result


if __name__ == "__main__":
    main()
