"""Embeddings of a split with test-time augmentation (10 views averaged).

The pipeline hands uint8 views [B, V, H, W, 3]; here they are normalised,
embedded in eval mode (BatchNorm running statistics) and averaged over V.
Averaging happens per embedding; since fusion is linear, the mean of the fused
views equals the fusion of the mean views.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Iterable, Mapping

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import Mesh
import numpy as np

from dare_jax import distributed
from dare_jax.data import device_ops


def make_embed_fn(model, mean, std, mesh: Mesh) -> Callable:
  """(variables, views uint8 [B,V,H,W,3]) -> {name: float32 [B, D]} on host.

  The batch is split over the mesh's devices; with several processes each
  hands its devices its own rows and every process gets the whole result.
  """
  data_sharding = distributed.batch_sharded(mesh)
  multi_process = jax.process_count() > 1
  # Every batch has one padded size: the rows are found once.
  rows_of = functools.cache(
      lambda n: distributed.process_rows(mesh, distributed.AXIS, n))

  @jax.jit
  def embed(variables, views_BxVxHxWx3):
    b, v = views_BxVxHxWx3.shape[:2]
    x = views_BxVxHxWx3.reshape((b * v,) + views_BxVxHxWx3.shape[2:])
    x = device_ops.normalize(x, mean, std)
    out = model.apply(variables, x, train=False)
    return {k: jnp.mean(e.reshape(b, v, -1), axis=1) for k, e in out.items()}

  def run(variables, views):
    lo, hi = rows_of(len(views))
    views = jax.make_array_from_process_local_data(
        data_sharding, views[lo:hi], views.shape)
    out = embed(variables, views)
    if multi_process:
      return multihost_utils.process_allgather(out, tiled=True)
    return jax.device_get(out)
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


def select_tracklet_frames(tracklets_N, max_frames: int) -> np.ndarray:
  """int64 [M]: at most max_frames evenly spaced frames of each tracklet.

  tracklets_N: int [N] frame -> tracklet, each tracklet's frames contiguous.
  max_frames <= 0 keeps every frame. The first and last frame of a tracklet
  are always kept when it has more than one; the indices are increasing.
  """
  tracklets_N = np.asarray(tracklets_N)
  n = len(tracklets_N)
  if max_frames <= 0 or not n:
    return np.arange(n, dtype=np.int64)
  starts = np.flatnonzero(np.r_[True, np.diff(tracklets_N) != 0])
  lengths = np.diff(np.r_[starts, n])
  keep = []
  for start, length in zip(starts, lengths):
    if length <= max_frames:
      keep.append(np.arange(start, start + length))
    else:
      keep.append(start + np.unique(np.round(
          np.linspace(0, length - 1, max_frames)).astype(np.int64)))
  return np.concatenate(keep).astype(np.int64)


def pool_tracklets(emb_NxD: np.ndarray, tracklets_N) -> np.ndarray:
  """float32 [T, D]: the mean frame embedding of each tracklet (the paper's
  mean pooling), tracklets numbered 0..T-1."""
  tracklets_N = np.asarray(tracklets_N, np.int64)
  num_t = int(tracklets_N.max()) + 1 if len(tracklets_N) else 0
  sums_TxD = np.zeros((num_t, emb_NxD.shape[1]), np.float64)
  np.add.at(sums_TxD, tracklets_N, emb_NxD.astype(np.float64))
  counts_T = np.bincount(tracklets_N, minlength=num_t)
  return (sums_TxD / counts_T[:, None]).astype(np.float32)
