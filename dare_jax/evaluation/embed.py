"""Embeddings of a split with test-time augmentation (10 views averaged).

The pipeline hands uint8 views [B, V, H, W, 3]; here they are normalised,
embedded in eval mode (BatchNorm running statistics) and averaged over V.
Averaging happens per embedding; since fusion is linear, the mean of the fused
views equals the fusion of the mean views.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from dare_jax.data import device_ops


def make_embed_fn(model, mean, std, mesh: Mesh) -> Callable:
  """(variables, views uint8 [B,V,H,W,3]) -> {name: float32 [B, D]}."""
  data_sharding = NamedSharding(mesh, P('data'))

  @jax.jit
  def embed(variables, views_BxVxHxWx3):
    b, v = views_BxVxHxWx3.shape[:2]
    x = views_BxVxHxWx3.reshape((b * v,) + views_BxVxHxWx3.shape[2:])
    x = device_ops.normalize(x, mean, std)
    out = model.apply(variables, x, train=False)
    return {k: jnp.mean(e.reshape(b, v, -1), axis=1) for k, e in out.items()}

  def run(variables, views):
    views = jax.make_array_from_process_local_data(data_sharding, views)
    return embed(variables, views)
  return run


def embed_batches(embed_fn: Callable, variables, batches: Iterable[Mapping],
                  num_batches: int, what: str) -> dict[str, np.ndarray]:
  """Runs embed_fn over padded batches; drops the padding rows."""
  chunks, t0 = [], time.time()
  for i, batch in enumerate(batches):
    out = embed_fn(variables, batch['views'])
    valid = np.asarray(batch['valid'])
    chunks.append({k: np.asarray(v)[valid] for k, v in out.items()})
    if (i + 1) % max(1, num_batches // 5) == 0 or i + 1 == num_batches:
      logging.info('embedding %s: batch %d/%d (%.1fs)', what, i + 1,
                   num_batches, time.time() - t0)
  if not chunks:
    raise ValueError(f'The {what} split is empty: nothing to embed.')
  return {k: np.concatenate([c[k] for c in chunks]).astype(np.float32)
          for k in chunks[0]}
