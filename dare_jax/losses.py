"""Batch-hard soft-margin triplet loss (Hermans et al. 2017), deep-supervised.

For each anchor a of a P x K batch:
    softplus( max_{p: same id, p != a} D(a, p) - min_{n: other id} D(a, n) )
with D(a, b) = sqrt(||a - b||^2 + eps), averaged over anchors. DaRe sums this
over the 4 exits and the fused embedding (deep supervision).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp


def pairwise_distances(emb_BxD: jax.Array, eps: float) -> jax.Array:
  """D [B, B] from explicit differences: exact, never negative under sqrt."""
  diff_BxBxD = emb_BxD[:, None, :] - emb_BxD[None, :, :]
  return jnp.sqrt(jnp.sum(diff_BxBxD * diff_BxBxD, axis=-1) + eps)


def batch_hard_soft_margin(emb_BxD: jax.Array, pids_B: jax.Array,
                           eps: float) -> jax.Array:
  """Mean over anchors of softplus(hardest positive - hardest negative).

  An anchor without a positive contributes softplus(-inf) = 0; the P x K
  sampler guarantees K >= 2, so that only happens for malformed batches.
  """
  dist_BxB = pairwise_distances(emb_BxD.astype(jnp.float32), eps)
  same_BxB = pids_B[:, None] == pids_B[None, :]
  not_self_BxB = ~jnp.eye(pids_B.shape[0], dtype=bool)
  hardest_pos_B = jnp.max(jnp.where(same_BxB & not_self_BxB, dist_BxB,
                                    -jnp.inf), axis=1)
  hardest_neg_B = jnp.min(jnp.where(same_BxB, jnp.inf, dist_BxB), axis=1)
  return jnp.mean(jax.nn.softplus(hardest_pos_B - hardest_neg_B))


def deep_supervision_loss(embeddings: Mapping[str, jax.Array],
                          pids_B: jax.Array, eps: float,
                          deep_supervision: bool = True):
  """(total, {name: loss}): the sum over all embeddings, or fused only.

  Every term is reported; only the supervised ones enter the total.
  """
  per_exit = {name: batch_hard_soft_margin(emb, pids_B, eps)
              for name, emb in embeddings.items()}
  if deep_supervision or 'fused' not in per_exit:
    # A single-embedding model (TriNet) has nothing else to supervise.
    total = sum(per_exit.values())
  else:
    total = per_exit['fused']
  return total, per_exit
