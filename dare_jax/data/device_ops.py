"""Per-batch image ops that run on the accelerator inside the jitted steps.

The host ships uint8 images (4x less traffic than float32); normalisation and
the random-erasing noise happen here. Everything is static-shaped: erasing
boxes become iota masks, so one compilation serves every batch.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def normalize(images_uint8: jax.Array, mean: Sequence[float],
              std: Sequence[float], dtype=jnp.float32) -> jax.Array:
  """(x / 255 - mean) / std per channel, for images [..., 3] in [0, 255].

  The arithmetic is float32 whatever `dtype` is, so a bfloat16 model gets the
  rounded float32 result rather than accumulated bfloat16 error.
  """
  x = images_uint8.astype(jnp.float32) / 255.0
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.astype(dtype)


def _erase_one(x_HxWx3: jax.Array, box_4: jax.Array,
               key: jax.Array) -> jax.Array:
  h, w = x_HxWx3.shape[:2]
  y0, x0, bh, bw = (box_4[i].astype(jnp.int32) for i in range(4))
  rows = jax.lax.broadcasted_iota(jnp.int32, (h, w), 0)
  cols = jax.lax.broadcasted_iota(jnp.int32, (h, w), 1)
  inside = (rows >= y0) & (rows < y0 + bh) & (cols >= x0) & (cols < x0 + bw)
  # Drawn in float32 and cast, so a key gives the same noise in any dtype.
  noise = jax.random.normal(key, (h, w, 3), jnp.float32).astype(x_HxWx3.dtype)
  return jnp.where(inside[:, :, None], noise, x_HxWx3)


def random_erase(x_BxHxWx3: jax.Array, erase_Bx4: jax.Array,
                 keys_B: jax.Array) -> jax.Array:
  """Random erasing (Zhong et al.) with boxes planned on the host.

  Args:
    x_BxHxWx3: normalised images.
    erase_Bx4: (y0, x0, h, w) per image (augment.train_plan); h == 0 or
      w == 0 leaves the image untouched.
    keys_B: one PRNG key per image (typed keys [B] or raw uint32 [B, 2]);
      the box is filled with that key's jax.random.normal(key, (H, W, 3)).

  Returns:
    Same shape and dtype as x_BxHxWx3.
  """
  return jax.vmap(_erase_one)(x_BxHxWx3, erase_Bx4, keys_B)
