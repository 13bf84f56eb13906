"""DenseNet-BC backbones in torchvision's layout, returning 4 stage maps.

Module names follow torchvision's state_dict under `features.` (conv0, norm0,
denseblock{b}/denselayer{l}/norm1, conv1, norm2, conv2, transition{b}/norm,
conv, norm5), so a torchvision DenseNet file maps name by name
(models/weights.py).

The stage maps are what DaRe's exit heads pool, as in the authors' DaRe-D
(github.com/mileyan/DARENet, models/dare_densenet.py): after dense block
s = 1..3, ReLU(BN(block output)) with a BatchNorm of the exit's own
(`exit_norm{s}`, their `avgpool{s-1}.0`; not part of an ImageNet file), taken
before the transition; after block 4, ReLU(norm5(block output)), the map
torchvision's classifier pools.

Initial scales: the authors' DenseNet (PyTorch 0.2) re-initialises nothing
and loads only the ImageNet `features.*`, so the BatchNorms such a file
lacks, the exit norms here and the exit heads' (models/dare.py), keep PyTorch
0.2's default, weight U(0, 1) and bias 0: exit_bn_scale_init. The rest of
the backbone keeps Flax's BatchNorm init (scale 1) and conv_init.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dare_jax.errors import ConfigError
from dare_jax.models import pooling

# depth -> (growth rate, layers per block, stem features), torchvision's.
DEPTHS = {
    121: (32, (6, 12, 24, 16), 64),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
    161: (48, (6, 12, 36, 24), 96),
}
BN_SIZE = 4  # bottleneck width = BN_SIZE * growth rate

# torchvision: kaiming_normal_ (fan_in) for convs.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def exit_bn_scale_init(key, shape, dtype=jnp.float32):
  """PyTorch 0.2's default BatchNorm weight, U(0, 1) (`weight.uniform_()`;
  1 only since PyTorch 1.2): DaRe(De)'s exit BatchNorm scales, as the
  authors' (their avgpool{0,1,2}.0 and layer_fc{0..3}.1)."""
  return jax.random.uniform(key, shape, dtype, 0.0, 1.0)


def _conv(features, kernel, strides, name, dtype):
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), (strides, strides),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=conv_init, dtype=dtype, name=name)


def resolve_depth(depth: int):
  if depth not in DEPTHS:
    raise ConfigError(f'model.depth={depth} is not a DenseNet depth; use one '
                      f'of {sorted(DEPTHS)} with model.backbone="densenet".')
  return DEPTHS[depth]


def stage_channels(growth_rate: int, block_config: Sequence[int],
                   num_init_features: int) -> tuple[int, ...]:
  """Channels of the 4 stage maps (each dense block's output)."""
  out, c = [], num_init_features
  for b, n in enumerate(block_config):
    c += n * growth_rate
    out.append(c)
    if b < len(block_config) - 1:
      c //= 2
  return tuple(out)


class DenseLayer(nn.Module):
  growth_rate: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(name='norm1')(x))
    y = _conv(BN_SIZE * self.growth_rate, 1, 1, 'conv1', self.dtype)(y)
    y = nn.relu(self.norm(name='norm2')(y))
    y = _conv(self.growth_rate, 3, 1, 'conv2', self.dtype)(y)
    return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nn.Module):
  num_layers: int
  growth_rate: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      x = DenseLayer(self.growth_rate, self.norm, self.dtype,
                     name=f'denselayer{i + 1}')(x)
    return x


class Transition(nn.Module):
  features: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.relu(self.norm(name='norm')(x))
    x = _conv(self.features, 1, 1, 'conv', self.dtype)(x)
    return pooling.avg_pool(x, 2, 2)


class DenseNet(nn.Module):
  """Input NHWC float; output the 4 stage maps [B, H/4..H/32, W/.., C_s]."""
  growth_rate: int
  block_config: Sequence[int]
  num_init_features: int = 64
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, num_stages: int = 4, first_stage: int = 1,
               return_carry: bool = False):
    """The stage maps first_stage..num_stages (anytime: later blocks never
    run), and with return_carry the carry: the last dense block's raw output
    (a map is its exit BatchNorm + ReLU). With first_stage = s > 1, x is
    stage s-1's carry, and transition{s-1} then block s continue from it."""
    if first_stage == 1:
      x = _conv(self.num_init_features, 7, 2, 'conv0', self.dtype)(x)
      x = nn.relu(self.norm(name='norm0')(x))
      x = pooling.max_pool(x, 3, 2, pad=1)
    last = len(self.block_config) - 1
    maps = []
    for b in range(first_stage - 1, num_stages):
      if b > 0:
        x = Transition(x.shape[-1] // 2, self.norm, self.dtype,
                       name=f'transition{b}')(x)
      x = DenseBlock(self.block_config[b], self.growth_rate, self.norm,
                     self.dtype, name=f'denseblock{b + 1}')(x)
      if b == last:
        norm = self.norm(name='norm5')
      else:
        norm = self.norm(scale_init=exit_bn_scale_init,
                         name=f'exit_norm{b + 1}')
      maps.append(nn.relu(norm(x)))
    return (maps, x) if return_carry else maps