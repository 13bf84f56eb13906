"""Max and average pooling, called the way jax2onnx can convert them.

The values are flax.linen.max_pool / avg_pool's. While it traces, jax2onnx
replaces flax.linen's pooling functions with versions that take keyword
arguments and string padding only ('VALID' / 'SAME') and emit ONNX MaxPool /
AveragePool over the two spatial dims; a bare lax.reduce_window becomes an
ONNX pool over all four dims, which onnxruntime refuses. So PyTorch's
symmetric padding of the stem's max pool is an explicit -inf pad before a
'VALID' pool: the same values and the same gradients (a -inf is never a
window's maximum, since every window holds at least one real pixel).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def max_pool(x_BxHxWxC, window: int, stride: int, pad: int = 0):
  """PyTorch MaxPool2d(window, stride, padding=pad)."""
  if pad:
    x_BxHxWxC = jnp.pad(x_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                        constant_values=-jnp.inf)
  return nn.max_pool(x_BxHxWxC, window_shape=(window, window),
                     strides=(stride, stride), padding='VALID')


def avg_pool(x_BxHxWxC, window: int, stride: int):
  """PyTorch AvgPool2d(window, stride) without padding: the window's mean."""
  return nn.avg_pool(x_BxHxWxC, window_shape=(window, window),
                     strides=(stride, stride), padding='VALID')
