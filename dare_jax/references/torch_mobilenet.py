"""PyTorch reference: MobileNetV2 (Sandler et al., CVPR 2018) in the flat
layout of the reference implementation the ImageNet file in
../shared/weights comes from, and a DaRe on it.

Written from the paper's Table 2 and torchvision's `features` (padding
(k - 1) // 2, ReLU6, BatchNorm(eps 1e-5)); module names as that reference
implementation numbers them, so its state_dict loads here as it is:
  features.0.0 / .1          stem conv 3x3/2, BN (.2 the ReLU6)
  features.1.conv.0 .. .4    depthwise conv, BN, ReLU6, project conv, BN
  features.N.conv.0 .. .7    expand conv, BN, ReLU6, depthwise, BN, ReLU6,
                             project conv, BN                (N = 2..17)
  features.18.0 / .1         1x1 conv to 1280, BN
`nested_state_dict` renames a state_dict into torchvision's own nesting
(features.N.conv.0.0, ...), as torchvision's mobilenet_v2-b0353104.pth.

MobileNetV2DaRe puts dare_jax's DaRe heads on it (the exits after
features[:4], [4:7], [7:14], [14:19]): per stage GAP -> Linear(C_s, hidden)
-> BatchNorm1d -> ReLU -> Linear(hidden, D), the fusion sum_s w_s phi_s.
It is the parity reference of tests/mobilenet_test.py and the PyTorch peer
of bench/torch_peer.py. Imports torch only, never dare_jax nor JAX.
"""

from __future__ import annotations

import re

import torch
from torch import nn

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STAGE_ENDS = (4, 7, 14, 19)


def _divisible(v, d=8):
  new_v = max(d, int(v + d / 2) // d * d)
  return new_v + d if new_v < 0.9 * v else new_v


def _conv_bn(c_in, c_out, k, stride, groups=1, act=True):
  layers = [nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups,
                      bias=False), nn.BatchNorm2d(c_out)]
  return layers + ([nn.ReLU6(inplace=True)] if act else [])


class InvertedResidual(nn.Module):

  def __init__(self, c_in, c_out, stride, t):
    super().__init__()
    hidden = int(round(c_in * t))
    layers = [] if t == 1 else _conv_bn(c_in, hidden, 1, 1)
    layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
    layers += _conv_bn(hidden, c_out, 1, 1, act=False)
    self.conv = nn.Sequential(*layers)
    self.residual = stride == 1 and c_in == c_out

  def forward(self, x):
    return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
  """`features` only; stage_maps(x) -> the 4 exits' maps [B, C, H, W]."""

  def __init__(self, width_multiplier: float = 1.0):
    super().__init__()
    c = _divisible(32 * width_multiplier)
    feats = [nn.Sequential(*_conv_bn(3, c, 3, 2))]
    for t, ch, n, s in SETTINGS:
      out = _divisible(ch * width_multiplier)
      for i in range(n):
        feats.append(InvertedResidual(c, out, s if i == 0 else 1, t))
        c = out
    self.last = _divisible(1280 * max(1.0, width_multiplier))
    feats.append(nn.Sequential(*_conv_bn(c, self.last, 1, 1)))
    self.features = nn.Sequential(*feats)

  def stage_maps(self, x):
    maps = []
    for i, f in enumerate(self.features):
      x = f(x)
      if i + 1 in STAGE_ENDS:
        maps.append(x)
    return maps

  def channels(self):
    return [self.features[e - 1].conv[-1].num_features
            if e < 19 else self.last for e in STAGE_ENDS]


class MobileNetV2DaRe(nn.Module):
  """x [B, 3, H, W] -> (stage1, ..., stage4, fused), [B, D] each (heads
  named heads.{s-1}, the fusion `fusion` [4])."""

  def __init__(self, width_multiplier: float = 1.0, head_hidden: int = 1024,
               embedding_dim: int = 128):
    super().__init__()
    self.backbone = MobileNetV2(width_multiplier)
    self.heads = nn.ModuleList([
        nn.Sequential(nn.Linear(c, head_hidden), nn.BatchNorm1d(head_hidden),
                      nn.ReLU(inplace=True),
                      nn.Linear(head_hidden, embedding_dim))
        for c in self.backbone.channels()])
    self.fusion = nn.Parameter(torch.empty(4).uniform_(-0.5, 0.5))

  def forward(self, x):
    outs = [head(m.mean(dim=(2, 3))) for head, m in
            zip(self.heads, self.backbone.stage_maps(x))]
    return tuple(outs) + (sum(self.fusion[s] * e
                              for s, e in enumerate(outs)),)


_FIRST = {0: '0.0', 1: '0.1', 3: '1', 4: '2'}
_OTHER = {0: '0.0', 1: '0.1', 3: '1.0', 4: '1.1', 6: '2', 7: '3'}


def nested_state_dict(flat: dict) -> dict:
  """A flat-layout state_dict in torchvision's nested names."""
  out = {}
  for k, v in flat.items():
    m = re.match(r'^features\.(\d+)\.conv\.(\d+)\.(.+)$', k)
    if m:
      n, j, leaf = int(m.group(1)), int(m.group(2)), m.group(3)
      k = f'features.{n}.conv.{(_FIRST if n == 1 else _OTHER)[j]}.{leaf}'
    out[k] = v
  return out
