"""MobileNetV2 (Sandler et al., CVPR 2018) in the ImageNet layout, returning
4 stage maps.

The layout is torchvision's `features` (and that of the reference
implementation the shared ImageNet file comes from): a 3x3/2 stem conv, the
seven inverted-residual groups (t, c, n, s) of INVERTED_RESIDUALS, and a last
1x1 conv to 1280 channels, each conv followed by BatchNorm and (but for the
projections) ReLU6. The four DaRe exits sit after features[:4], [4:7],
[7:14] and [14:19] (STAGE_ENDS): 1/4, 1/8, 1/16 and 1/32 of the input with
24, 32, 96 and 1280 channels at width 1.0.

Module names follow the flat PyTorch names, so a state_dict maps name by
name (models/weights.py):
  features.0.0 / .1              backbone/features_0_conv / features_0_bn
  features.N.conv.K (N = 1..17)  backbone/features_N/conv_K   (K: 0, 1, 3, 4
                                 [, 6, 7]: the expand, depthwise and project
                                 convs and their BatchNorms)
  features.18.0 / .1             backbone/features_18_conv / features_18_bn
Padding is PyTorch's: (k - 1) // 2 on each side (Flax's 'SAME' would pad
(0, 1) for a stride-2 conv on an even input).

Two formulations of the same parameters (checkpoints and imports never
change): nn.Conv with feature_group_count=C for the depthwise 3x3 and
nn.Conv for the 1x1s (fast on accelerators), or, on the CPU, each depthwise
3x3 as nine shifted multiply-adds (DepthwiseShift) and each 1x1 as a dot
(resnet.Conv1x1): XLA:CPU's grouped convolution and its gradients are many
times slower than the same arithmetic written out (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from dare_jax.models import resnet

# (expansion t, output channels c, repeats n, first stride s), as the paper's
# Table 2 and torchvision.
INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                      (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# features[i] for i < STAGE_ENDS[s] and >= STAGE_ENDS[s - 1] form stage s+1.
STAGE_ENDS = (4, 7, 14, 19)
NUM_FEATURES = STAGE_ENDS[-1]

conv_init = resnet.conv_init  # torchvision: kaiming_normal_(fan_out)


def make_divisible(v: float, divisor: int = 8) -> int:
  """torchvision's _make_divisible: round to a multiple of divisor, never
  more than 10% below v."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


def layout(width_multiplier: float = 1.0) -> list[tuple[int, int, int]]:
  """[(expansion, output channels, stride)] of features[1..17]."""
  out = []
  for t, c, n, s in INVERTED_RESIDUALS:
    ch = make_divisible(c * width_multiplier)
    out += [(t, ch, s if i == 0 else 1) for i in range(n)]
  return out


def last_channels(width_multiplier: float) -> int:
  return make_divisible(LAST_CHANNELS * max(1.0, width_multiplier))


def stage_channels(width_multiplier: float = 1.0) -> tuple[int, ...]:
  """Channels of the four stage maps (24, 32, 96, 1280 at width 1.0)."""
  blocks = layout(width_multiplier)
  return tuple(blocks[e - 2][1] for e in STAGE_ENDS[:3]) + (
      last_channels(width_multiplier),)


class DepthwiseShift(nn.Module):
  """A depthwise 3x3 convolution (no bias) as nine shifted multiply-adds:
  nn.Conv(C, (3, 3), feature_group_count=C)'s parameter ('kernel' [3, 3, 1,
  C], the same init) and values, PyTorch's padding 1 on each side."""
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC):
    c = x_BxHxWxC.shape[-1]
    kernel = self.param('kernel', conv_init, (3, 3, 1, c))
    x = jnp.pad(x_BxHxWxC.astype(self.dtype),
                ((0, 0), (1, 1), (1, 1), (0, 0)))
    k = kernel[:, :, 0].astype(self.dtype)
    s = self.strides
    h_out = (x_BxHxWxC.shape[1] - 1) // s + 1
    w_out = (x_BxHxWxC.shape[2] - 1) // s + 1
    y = None
    for i in range(3):
      for j in range(3):
        tap = x[:, i:i + s * (h_out - 1) + 1:s, j:j + s * (w_out - 1) + 1:s]
        y = tap * k[i, j] if y is None else y + tap * k[i, j]
    return y


def _conv(features: int, kernel: int, strides: int, name: str, dtype,
          cpu: tuple[bool, bool], groups: int = 1):
  """cpu = (1x1 as a dot, depthwise as shifted multiply-adds)."""
  dot_1x1, shift_depthwise = cpu
  if dot_1x1 and kernel == 1:
    return resnet.Conv1x1(features, strides, dtype, name=name)
  if shift_depthwise and groups > 1:
    return DepthwiseShift(strides, dtype, name=name)
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), (strides, strides),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 feature_group_count=groups, kernel_init=conv_init,
                 dtype=dtype, name=name)


class InvertedResidual(nn.Module):
  """[expand 1x1 -> BN -> ReLU6 ->] depthwise 3x3 -> BN -> ReLU6 -> project
  1x1 -> BN [+ x when the stride is 1 and the channels match]."""
  expansion: int
  features: int
  strides: int
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32
  cpu: tuple[bool, bool] = (False, False)

  @nn.compact
  def __call__(self, x):
    c_in = x.shape[-1]
    hidden = int(round(c_in * self.expansion))
    k = 0
    y = x
    if self.expansion != 1:
      y = _conv(hidden, 1, 1, 'conv_0', self.dtype, self.cpu)(y)
      y = nn.relu6(self.norm(name='conv_1')(y))
      k = 3
    y = _conv(hidden, 3, self.strides, f'conv_{k}', self.dtype,
              self.cpu, groups=hidden)(y)
    y = nn.relu6(self.norm(name=f'conv_{k + 1}')(y))
    y = _conv(self.features, 1, 1, f'conv_{k + 3}', self.dtype,
              self.cpu)(y)
    y = self.norm(name=f'conv_{k + 4}')(y)
    if self.strides == 1 and c_in == self.features:
      y = y + x.astype(y.dtype)
    return y


class MobileNetV2(nn.Module):
  """Input NHWC float; output the 4 stage maps [B, H/4..H/32, W/.., C_s]."""
  width_multiplier: float = 1.0
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32
  # 1x1 convs as dots, depthwise convs as shifted multiply-adds (the same
  # parameters, faster on XLA:CPU).
  dot_1x1: bool = False
  shift_depthwise: bool = False

  @nn.compact
  def __call__(self, x, num_stages: int = 4, first_stage: int = 1,
               return_carry: bool = False):
    """The stage maps first_stage..num_stages (later stages never run), and
    with return_carry the carry (stage num_stages's map). With first_stage
    = s > 1, x is stage s-1's carry and features[:STAGE_ENDS[s-2]] are
    skipped."""
    blocks = layout(self.width_multiplier)
    cpu = (self.dot_1x1, self.shift_depthwise)
    start = 0 if first_stage == 1 else STAGE_ENDS[first_stage - 2]
    maps = []
    for i in range(start, STAGE_ENDS[num_stages - 1]):
      if i == 0:
        x = _conv(make_divisible(STEM_CHANNELS * self.width_multiplier), 3,
                  2, 'features_0_conv', self.dtype, cpu)(x)
        x = nn.relu6(self.norm(name='features_0_bn')(x))
      elif i == NUM_FEATURES - 1:
        x = _conv(last_channels(self.width_multiplier), 1, 1,
                  f'features_{i}_conv', self.dtype, cpu)(x)
        x = nn.relu6(self.norm(name=f'features_{i}_bn')(x))
      else:
        t, c, s = blocks[i - 1]
        x = InvertedResidual(t, c, s, self.norm, self.dtype, cpu,
                             name=f'features_{i}')(x)
      if i + 1 in STAGE_ENDS[first_stage - 1:num_stages]:
        maps.append(x)
    return (maps, x) if return_carry else maps
