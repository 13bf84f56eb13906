"""ResNet backbones in the torchvision ("v1.5") layout, returning 4 stage maps.

The stride-2 of a downsampling bottleneck sits in its 3x3 conv (torchvision),
not in the first 1x1 conv (Caffe / v1). Padding is explicit and symmetric, as
PyTorch pads: Flax's 'SAME' pads (0, 1) for a stride-2 conv on an even input,
which would shift every feature map by half a pixel relative to PyTorch.
Module names follow torchvision's state_dict (conv1, bn1, layer1_0, ...), so
a torchvision checkpoint maps onto these parameters name by name.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dare_jax.errors import ConfigError
from dare_jax.models import pooling

ModuleDef = Any

# depth -> (block type, blocks per stage), as torchvision defines them.
DEPTHS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
}
EXPANSION = {'basic': 1, 'bottleneck': 4}

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class Conv1x1(nn.Module):
  """A 1x1 convolution (no padding, no bias) as the matmul it is: the same
  parameter as nn.Conv's ('kernel', [1, 1, C_in, C_out], the same init), so
  checkpoints and weight imports are unchanged. XLA:CPU computes the kernel
  gradient of a 1x1 nn.Conv far slower than the same product as a dot
  (bench/conv_gradients); a stride s is the subsampling x[:, ::s, ::s]."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', conv_init,
                        (1, 1, x.shape[-1], self.features))
    if self.strides > 1:
      x = x[:, ::self.strides, ::self.strides]
    return jnp.dot(x.astype(self.dtype), kernel[0, 0].astype(self.dtype))


def _conv(features, kernel, strides, name, dtype, dot_1x1: bool = False):
  if kernel == 1 and dot_1x1:
    return Conv1x1(features, strides, dtype, name=name)
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), (strides, strides),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=conv_init, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  filters: int
  strides: int
  downsample: bool
  norm: ModuleDef
  dtype: Any = jnp.float32
  dot_1x1: bool = False

  @nn.compact
  def __call__(self, x):
    y = _conv(self.filters, 3, self.strides, 'conv1', self.dtype)(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = _conv(self.filters, 3, 1, 'conv2', self.dtype)(y)
    y = self.norm(name='bn2')(y)
    if self.downsample:
      x = _conv(self.filters, 1, self.strides, 'downsample_conv', self.dtype,
                self.dot_1x1)(x)
      x = self.norm(name='downsample_bn')(x)
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  filters: int
  strides: int
  downsample: bool
  norm: ModuleDef
  dtype: Any = jnp.float32
  dot_1x1: bool = False

  @nn.compact
  def __call__(self, x):
    y = _conv(self.filters, 1, 1, 'conv1', self.dtype, self.dot_1x1)(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = _conv(self.filters, 3, self.strides, 'conv2', self.dtype)(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = _conv(self.filters * 4, 1, 1, 'conv3', self.dtype, self.dot_1x1)(y)
    y = self.norm(name='bn3')(y)
    if self.downsample:
      x = _conv(self.filters * 4, 1, self.strides, 'downsample_conv',
                self.dtype, self.dot_1x1)(x)
      x = self.norm(name='downsample_bn')(x)
    return nn.relu(y + x)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


def resolve_depth(depth: int, block: str, stage_sizes: Sequence[int]):
  """(block type, stage sizes) for a torchvision depth, or a custom net."""
  if depth:
    if depth not in DEPTHS:
      raise ConfigError(f'model.depth={depth} is not one of {sorted(DEPTHS)} '
                       '(or 0 for a custom model.block/model.stage_sizes).')
    return DEPTHS[depth]
  if block not in BLOCKS:
    raise ConfigError(f'model.block={block!r} must be one of {sorted(BLOCKS)}.')
  if len(stage_sizes) != 4 or min(stage_sizes) < 1:
    raise ConfigError('model.stage_sizes must be 4 positive block counts, got '
                     f'{tuple(stage_sizes)}.')
  return block, tuple(stage_sizes)


class ResNet(nn.Module):
  """Input NHWC float; output the 4 stage maps [B, H/4..H/32, W/.., C_s]."""
  block: str
  stage_sizes: Sequence[int]
  width: int = 64
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32
  # 1x1 convolutions as dots (Conv1x1): the same parameters, faster on CPU.
  dot_1x1: bool = False

  @nn.compact
  def __call__(self, x, num_stages: int = 4, first_stage: int = 1,
               return_carry: bool = False):
    """The stage maps first_stage..num_stages (anytime: later stages never
    run), and with return_carry the carry: what stage num_stages hands on
    (here its map). With first_stage = s > 1, x is stage s-1's carry, and
    the stem and the stages before s are skipped."""
    block_cls = BLOCKS[self.block]
    if first_stage == 1:
      x = _conv(self.width, 7, 2, 'conv1', self.dtype)(x)
      x = nn.relu(self.norm(name='bn1')(x))
      x = pooling.max_pool(x, 3, 2, pad=1)
      in_ch = self.width
    else:
      in_ch = self.width * 2**(first_stage - 2) * EXPANSION[self.block]
    maps = []
    for s in range(first_stage - 1, num_stages):
      filters = self.width * 2**s
      for b in range(self.stage_sizes[s]):
        strides = 2 if (s > 0 and b == 0) else 1
        out_ch = filters * EXPANSION[self.block]
        x = block_cls(filters, strides, downsample=(strides != 1 or
                                                    in_ch != out_ch),
                      norm=self.norm, dtype=self.dtype,
                      dot_1x1=self.dot_1x1, name=f'layer{s + 1}_{b}')(x)
        in_ch = out_ch
      maps.append(x)
    return (maps, x) if return_carry else maps


def stage_channels(block: str, width: int) -> tuple[int, ...]:
  return tuple(width * 2**s * EXPANSION[block] for s in range(4))


def make_norm(train: bool, momentum: float, epsilon: float, axis_name,
              dtype: Any = jnp.float32):
  """BatchNorm in mixed precision: batch statistics, running averages, scale
  and bias in float32 (Flax's float32 reductions), the normalised output cast
  to the compute dtype that the next convolution consumes."""
  return functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=momentum, epsilon=epsilon, dtype=dtype,
                           axis_name=axis_name if train else None)
