"""DaRe: a backbone with an exit head per stage and a learnt fusion.

    stage map_s -> GAP -> Dense(1024) -> BN -> ReLU -> Dense(128) = phi_s
    phi_fused = sum_s w_s * phi_s    (4 free scalars: no softmax, no norm)

Embeddings are raw (not L2-normalised), as in the paper.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dare_jax.errors import ConfigError
from dare_jax.models import densenet
from dare_jax.models import mobilenet
from dare_jax.models import resnet

EXITS = ('stage1', 'stage2', 'stage3', 'stage4')
EMBEDDINGS = EXITS + ('fused',)


def uniform_init(low: float, high: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, low, high)
  return init


def torch_linear_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch's default nn.Linear weight, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  (0.2's reset_parameters; kaiming_uniform_(a=sqrt(5)) since, the same
  bound), for Flax's [in, out] kernel: fan_in = shape[0]."""
  bound = 1.0 / math.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_linear_bias_init(fan_in: int):
  """PyTorch's default nn.Linear bias: U(+-1/sqrt(fan_in)), the weight's
  fan_in (a bias's own shape [out] does not tell it)."""
  bound = 1.0 / math.sqrt(fan_in)
  return uniform_init(-bound, bound)


class ExitHead(nn.Module):
  """GAP -> fc1 -> bn -> ReLU -> fc2. Initialised as the authors' heads
  (github.com/mileyan/DARENet, PyTorch 0.2, docs/parity.md "Initial scales
  of the exit heads"): fc1 and fc2 PyTorch's default Linear (weight and bias
  U(+-1/sqrt(fan_in))), which neither of their models re-initialises; bn
  scale bn_scale_init (1 for DaRe(R), whose init loop fills every
  BatchNorm2d with 1; densenet.exit_bn_scale_init, PyTorch 0.2's U(0, 1),
  for DaRe(De), which has no such loop), bias 0."""
  hidden: int
  embedding_dim: int
  norm: Any
  dtype: Any = jnp.float32
  bn_scale_init: Callable[..., jax.Array] = nn.initializers.ones

  @nn.compact
  def __call__(self, x_BxHxWxC):
    x = jnp.mean(x_BxHxWxC, axis=(1, 2), dtype=jnp.float32)
    x = nn.Dense(self.hidden, dtype=self.dtype,
                 kernel_init=torch_linear_kernel_init,
                 bias_init=torch_linear_bias_init(x.shape[-1]), name='fc1')(x)
    x = nn.relu(self.norm(scale_init=self.bn_scale_init, name='bn')(x))
    return nn.Dense(self.embedding_dim, dtype=self.dtype,
                    kernel_init=torch_linear_kernel_init,
                    bias_init=torch_linear_bias_init(self.hidden),
                    name='fc2')(x)


class DaRe(nn.Module):
  """images [B, H, W, 3] (normalised) -> {stage1..4, fused: [B, D] float32}.

  dtype is the compute dtype (float32 or bfloat16): convolutions and dense
  layers run in it, parameters stay float32, BatchNorm statistics and the
  global average pooling accumulate in float32, and the embeddings (hence
  the loss) are float32.

  backbone 'resnet': block, stage_sizes (blocks per stage), width (stem);
  'densenet': stage_sizes = layers per dense block, width = stem features,
  growth_rate (block unused); 'mobilenet_v2': width_multiplier (block,
  stage_sizes, width unused).
  """
  block: str
  stage_sizes: Sequence[int]
  width: int = 64
  backbone: str = 'resnet'
  growth_rate: int = 32
  head_hidden: int = 1024
  embedding_dim: int = 128
  fusion_init_low: float = -0.5
  fusion_init_high: float = 0.5
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  # Named axis over which training BatchNorm averages its batch statistics
  # (synchronised BN under shard_map); None on a single un-mapped device.
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  # ResNet and MobileNetV2 1x1 convolutions as dots (resnet.Conv1x1;
  # parameters unchanged).
  conv1x1_dot: bool = False
  # MobileNetV2: the channel width multiplier, and the depthwise 3x3s as
  # shifted multiply-adds (mobilenet.DepthwiseShift; parameters unchanged).
  width_multiplier: float = 1.0
  depthwise_shift: bool = False
  # TriNet (Hermans et al. 2017), the anytime baseline's members: the same
  # backbone with the stage-4 head only, {'stage4': [B, D]}, no fusion.
  trinet: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False, num_exits: int = 4,
               first_exit: int = 1, return_carry: bool = False):
    """num_exits < 4 computes only stages and heads 1..num_exits (the
    anytime forward: {stage1..stage<num_exits>}, no 'fused').

    Stage continuation: first_exit = s > 1 takes x = stage s-1's carry
    (instead of images) and computes stages and heads s..num_exits only;
    return_carry returns (embeddings, the carry of stage num_exits). 'fused'
    is in the output of the full forward only; `fuse` makes it from the
    four embeddings of a continued one.
    """
    if not 1 <= first_exit <= num_exits <= len(EXITS):
      raise ValueError(f'first_exit={first_exit}, num_exits={num_exits}: '
                       f'need 1 <= first_exit <= num_exits <= {len(EXITS)}.')
    if self.trinet and num_exits != len(EXITS):
      raise ValueError('A TriNet has one exit, after stage 4: num_exits=4.')
    norm = resnet.make_norm(train, self.bn_momentum, self.bn_epsilon,
                            self.bn_axis_name, self.dtype)
    if self.backbone == 'densenet':
      net = densenet.DenseNet(self.growth_rate, self.stage_sizes, self.width,
                              norm=norm, dtype=self.dtype, name='backbone')
    elif self.backbone == 'mobilenet_v2':
      net = mobilenet.MobileNetV2(self.width_multiplier, norm=norm,
                                  dtype=self.dtype, dot_1x1=self.conv1x1_dot,
                                  shift_depthwise=self.depthwise_shift,
                                  name='backbone')
    else:
      net = resnet.ResNet(self.block, self.stage_sizes, self.width, norm=norm,
                          dtype=self.dtype, dot_1x1=self.conv1x1_dot,
                          name='backbone')
    bn_scale_init = (densenet.exit_bn_scale_init
                     if self.backbone == 'densenet' else nn.initializers.ones)
    maps, carry = net(x.astype(self.dtype), num_stages=num_exits,
                      first_stage=first_exit, return_carry=True)
    out = {}
    for name, m in zip(EXITS[first_exit - 1:], maps):
      if self.trinet and name != EXITS[-1]:
        continue
      head = ExitHead(self.head_hidden, self.embedding_dim, norm,
                      dtype=self.dtype, bn_scale_init=bn_scale_init,
                      name=f'exit{name[-1]}')
      out[name] = head(m).astype(jnp.float32)
    if num_exits == len(EXITS) and first_exit == 1 and not self.trinet:
      w = self.param('fusion', uniform_init(self.fusion_init_low,
                                            self.fusion_init_high),
                     (len(EXITS),))
      out['fused'] = fuse_with(w, out)
    return (out, carry) if return_carry else out


def for_onnx(model: DaRe) -> DaRe:
  """The formulation exported to ONNX: float32, and MobileNetV2's
  depthwise convolutions as grouped Conv nodes (onnxruntime's depthwise
  kernel ran 3x faster than the nine shifted multiply-adds at 128x64, batch
  1); the same parameters and values."""
  return model.clone(dtype=jnp.float32, depthwise_shift=False)


def fuse_with(w_S, embs) -> jax.Array:
  """phi_fused = sum_s w_s phi_s over the four exits' embeddings."""
  return sum(w_S[s] * embs[name] for s, name in enumerate(EXITS))


def fuse(variables, embs) -> jax.Array:
  """'fused' of the four exits' embeddings, with the model's fusion
  weights: what the full forward computes, from a continued one."""
  return fuse_with(variables['params']['fusion'], embs)


def embedding_names(model_cfg) -> tuple[str, ...]:
  """The embeddings the configured model outputs, in order."""
  if model_cfg.heads == 'trinet':
    return (EXITS[-1],)
  return EMBEDDINGS


# config.model fields by role, said once (checkpointing and bundles read
# them): where the weights came from, and what else is not the network's
# architecture (how it computes, initialises and trains). A checkpoint fits
# any config that differs only in the latter.
WEIGHT_SOURCE_FIELDS = ('pretrained', 'pretrained_heads', 'require_pretrained')
NOT_ARCHITECTURE_FIELDS = WEIGHT_SOURCE_FIELDS + (
    'dtype', 'conv1x1', 'depthwise', 'fusion_init_low', 'fusion_init_high',
    'bn_momentum')


def check_config(model_cfg) -> None:
  """Every config.model check (configlib.validate calls it first)."""
  _backbone_layout(model_cfg)
  # The choices only: resolving 'auto' would start JAX's backend, which a
  # multi-process run must initialise first.
  _check_choice('conv1x1', model_cfg.get('conv1x1', 'auto'), CONV1X1)
  _check_choice('depthwise', model_cfg.get('depthwise', 'auto'), DEPTHWISE)
  if model_cfg.dtype not in ('float32', 'bfloat16'):
    raise ConfigError(
        f"model.dtype={model_cfg.dtype!r}: use 'float32' or 'bfloat16' "
        '(the compute dtype; parameters stay float32). float16 would need '
        'loss scaling, which this trainer does not do.')


def _backbone_layout(model_cfg):
  """(block, stage_sizes, width, growth_rate) of the configured backbone."""
  if model_cfg.heads not in ('dare', 'trinet'):
    raise ConfigError(f"model.heads={model_cfg.heads!r}: use 'dare' (4 exits "
                      "and the fusion) or 'trinet' (the stage-4 head only).")
  if model_cfg.backbone == 'densenet':
    growth_rate, stage_sizes, width = densenet.resolve_depth(model_cfg.depth)
    block = ''
  elif model_cfg.backbone == 'mobilenet_v2':
    wm = model_cfg.get('width_multiplier', 1.0)
    if not isinstance(wm, (int, float)) or not 0 < wm <= 4:
      raise ConfigError(f'model.width_multiplier={wm!r}: use a number in '
                        '(0, 4] (1.0 is the ImageNet MobileNetV2).')
    block, stage_sizes, width, growth_rate = '', (), 0, 0
  elif model_cfg.backbone == 'resnet':
    block, stage_sizes = resnet.resolve_depth(
        model_cfg.depth, model_cfg.block, model_cfg.stage_sizes)
    growth_rate, width = 0, model_cfg.width
  else:
    raise ConfigError(f'model.backbone={model_cfg.backbone!r}: use "resnet" '
                      '(model.depth 18/34/50/101), "densenet" (121/169/201/'
                      '161) or "mobilenet_v2" (model.width_multiplier).')
  return block, stage_sizes, width, growth_rate


def from_config(model_cfg, bn_axis_name: Optional[str] = None) -> DaRe:
  """The one place that reads config.model (backbone construction)."""
  block, stage_sizes, width, growth_rate = _backbone_layout(model_cfg)
  return DaRe(block=block, stage_sizes=stage_sizes, width=width,
              backbone=model_cfg.backbone, growth_rate=growth_rate,
              head_hidden=model_cfg.head_hidden,
              embedding_dim=model_cfg.embedding_dim,
              fusion_init_low=model_cfg.fusion_init_low,
              fusion_init_high=model_cfg.fusion_init_high,
              bn_momentum=model_cfg.bn_momentum,
              bn_epsilon=model_cfg.bn_epsilon, bn_axis_name=bn_axis_name,
              dtype=jnp.dtype(model_cfg.dtype),
              conv1x1_dot=conv1x1_dot(model_cfg.get('conv1x1', 'auto')),
              width_multiplier=float(model_cfg.get('width_multiplier', 1.0)),
              depthwise_shift=depthwise_shift(
                  model_cfg.get('depthwise', 'auto')),
              trinet=model_cfg.heads == 'trinet')


CONV1X1 = ('auto', 'conv', 'dot')
DEPTHWISE = ('auto', 'conv', 'shift')


def _check_choice(field: str, choice: str, options) -> None:
  if choice not in options:
    raise ConfigError(f'model.{field}={choice!r}: use '
                      f"{', '.join(repr(o) for o in options)}.")


def _cpu_formulation(field: str, choice: str, options) -> bool:
  """True for the CPU formulation (options[2]): chosen, or 'auto' where
  JAX's default backend is the CPU; options[1] is nn.Conv."""
  _check_choice(field, choice, options)
  if choice == 'auto':
    return jax.default_backend() == 'cpu'
  return choice == options[2]


def conv1x1_dot(choice: str) -> bool:
  """config.model.conv1x1: 'dot' (resnet.Conv1x1), 'conv' (nn.Conv), or
  'auto': dot where JAX's default backend is the CPU (where XLA's 1x1
  convolution gradients are slow), conv on accelerators (unchanged)."""
  return _cpu_formulation('conv1x1', choice, CONV1X1)


def depthwise_shift(choice: str) -> bool:
  """config.model.depthwise (MobileNetV2): 'shift' (nine shifted
  multiply-adds, mobilenet.DepthwiseShift), 'conv' (nn.Conv with
  feature_group_count), or 'auto': shift where JAX's default backend is the
  CPU (XLA:CPU's grouped convolutions are slow), conv on accelerators."""
  return _cpu_formulation('depthwise', choice, DEPTHWISE)
