"""Drop-in skip connections for your own PyTorch models: every merge skiplab studies, as an
``nn.Module`` that wraps a branch module you write.

>>> import torch
>>> from torch import nn
>>> import skiplab.nn as snn
>>> block = snn.Residual(nn.Sequential(nn.Linear(32, 32), nn.ReLU()))
>>> block(torch.randn(8, 32)).shape
torch.Size([8, 32])

Each layer computes ``forward(s) = write(s, branch(read(s)))`` (:class:`Connection`): the
branch sees the stream ``s`` (or what the layer reads from it) and its output ``f`` is merged
back. Shapes: channels on dim 1 by default, ``(B, C)`` or ``(B, C, *S)``; layers with a
``channel_dim`` argument take ``channel_dim=-1`` for ``(B, T, C)`` (transformer) tensors.

Single-stream merges (the stream is one tensor):

* :class:`Plain` ``(branch)``: ``s' = f``, no skip, the baseline. ``(B, C, *S) -> (B, C', *S)``.
* :class:`Residual` ``(branch, projection=None)``: ``s' = s + f`` (He et al., ResNet,
  arXiv 1512.03385). Same shape in and out; a branch that changes the width needs a
  ``projection`` for ``s`` (a width mismatch raises, never a silent reshape).
* :class:`ReZero` ``(branch, init=0.0)``: ``s' = s + a f``, one scalar ``a``, 0 at init
  (Bachlechner et al., ReZero, arXiv 2003.04887). Same shape in and out.
* :class:`LayerScale` ``(branch, channels, init=0.1, channel_dim=1)``: ``s' = s + g * f``,
  one learned scale per channel, ``g`` of shape ``(C,)`` (Touvron et al., CaiT, arXiv
  2103.17239). Same shape in and out.
* :class:`Highway` ``(branch, gate, gate_bias=-2)``: ``s' = T f + (1 - T) s``,
  ``T = sigmoid(gate(s))``; ``gate`` maps ``s`` to the branch's width and must have a bias
  (Srivastava et al., Highway Networks, arXiv 1505.00387). Same shape in and out.
* :class:`Concat` ``(branch, keep=None, channel_dim=1, memory="naive")``: ``s' = concat(s[-keep:], f)``
  along the channels (Huang et al., DenseNet, arXiv 1608.06993): ``(B, C, *S) -> (B, C + K, *S)``
  for a branch of ``K`` output channels, or ``(B, keep + K, *S)`` with ``keep``.
* :class:`DenseBlock` ``([layer_0, ..., layer_{m-1}], memory="naive", channel_dim=1)``: a DenseNet
  block; layer ``i`` takes ``C + i K`` channels and makes ``K``: ``(B, C, *S) -> (B, C + m K, *S)``.
  ``memory="efficient"`` keeps each layer's output once instead of each layer's concatenated
  input (linear, not quadratic, in ``m``; Pleiss et al., arXiv 1707.06990); each layer must then
  start with norms/activations, then a Linear or Conv (DenseNet-BC's BN -> ReLU -> conv does).

Multi-stream merges (the stream is more than one tensor; make it before the first layer
and reduce it after the last):

* :class:`DWA` ``(branch, block=i)``: a residual sublayer followed by the depth-weighted
  average ``Y_i = sum_{j<=i} alpha_ij X_j`` of all earlier block outputs, ``alpha_ii = 1``
  and the rest 0 at init (Pagliardini et al., DenseFormer, arXiv 2402.02622). Stream
  ``(outputs, Y)``: ``DWA.expand(x)`` before block 1, ``DWA.reduce(stream)`` gives ``Y``,
  the shape of ``x``.
* :class:`HyperConnection` ``(branch, channels=C, streams=n, layer=k, channel_dim=1,
  dynamic=True)``: ``n`` copies ``H`` of the stream, ``h = A_m^T H``,
  ``H <- A_r^T H + B^T f(h)`` (Zhu et al., Hyper-Connections, arXiv 2409.19606); at init
  the residual net. Stream ``(n, *x.shape)``: :func:`expand_streams` ``(x, n)`` before,
  :func:`reduce_streams` (the mean of the copies, the shape of ``x``) after.
* :class:`MHC` ``(branch, channels=C, streams=n, channel_dim=1, iterations=20)``: as
  ``HyperConnection``, with the copies' mixing matrix projected to doubly stochastic by
  Sinkhorn-Knopp and the read and write weights non-negative (Xie et al., mHC, arXiv
  2512.24880). Same stream as ``HyperConnection``.
* :class:`MHCLite` ``(branch, channels=C, streams=n, channel_dim=1)``: as ``MHC``, with the
  mixing matrix an exact convex combination of the ``n!`` permutation matrices (softmax
  weights from the same inputs), so doubly stochastic with no iterations; ``n <= 6`` (Yang
  and Gao, mHC-lite, arXiv 2601.05732). Same stream as ``HyperConnection``.

:class:`Connection` is the base class: subclass it, override ``read`` and ``write``, and
your merge drops in the same way. These are the modules skiplab's own models are built
from (``skiplab.skips``, one file per strategy, each with its strategy's facts beside it).
"""

from __future__ import annotations

from .skips import DWA, MHC, Concat, MHCLite, Connection, DenseBlock, Highway, HyperConnection, LayerScale, Plain, ReZero, Residual
from .skips.hyper import expand as expand_streams
from .skips.hyper import reduce as reduce_streams

__all__ = ["Connection", "Plain", "Residual", "ReZero", "LayerScale", "Highway", "Concat", "DenseBlock", "DWA",
           "HyperConnection", "MHC", "MHCLite", "expand_streams", "reduce_streams"]
