"""P x K identity sampling for batch-hard triplet training (Hermans et al.).

A batch is P identities with K images each. The indices of a step are a pure
function of (pids, P, K, seed, step): a run resumed at step s sees exactly the
batches the uninterrupted run would have seen, whichever pipeline (numpy or
tf.data) draws them and in whatever order the steps are prepared.
"""

from __future__ import annotations

import numpy as np

from dare_jax import errors

# Separates this module's random stream from the augmentation plan's, which
# is keyed by the same (seed, step).
_STREAM = 0x504B53  # 'PKS'


def step_rng(seed: int, step: int, stream: int) -> np.random.Generator:
  """A generator keyed by (seed, step, stream) alone.

  SeedSequence needs non-negative integers; a negative seed is mapped to its
  two's complement so every int seed stays usable and distinct.
  """
  if step < 0:
    raise ValueError(f'step must be >= 0; got {step}.')
  return np.random.default_rng([int(seed) % 2**64, int(step), int(stream)])


class PKSampler:
  """Draws P x K batches of indices into a split with person ids `pids`.

  The per-identity index lists are built once here; `indices(step)` is then
  cheap (P small random draws).

  Only ids >= 1 are people: 0 (distractor) and -1 (junk) are never sampled.
  """

  def __init__(self, pids_N, P: int, K: int, seed: int):
    pids_N = np.asarray(pids_N)
    if pids_N.ndim != 1:
      raise ValueError(f'pids must be 1-D; got shape {pids_N.shape}.')
    P, K = int(P), int(K)
    if P < 1:
      raise ValueError(f'P={P}: a batch needs at least 1 identity.')
    if K < 2:
      raise ValueError(f'K={K}: batch-hard mining needs at least 2 images '
                       'per identity (an anchor and a positive).')
    people = np.flatnonzero(pids_N >= 1)
    ids, inverse = np.unique(pids_N[people], return_inverse=True)
    if len(ids) < P:
      raise errors.DataError(
          f'P={P} identities per batch, but the split has only {len(ids)} '
          'identities with pid >= 1; lower train.P or use more data.')
    # Stable sort keeps each identity's images in file order, so the lists
    # (and hence the batches) depend only on `pids`, not on sort internals.
    order = np.argsort(inverse, kind='stable')
    bounds = np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1]
    self._members = [people[m].astype(np.int64)
                     for m in np.split(order, bounds)]
    self.ids = ids.astype(np.int64)  # [num_ids], sorted
    self.P, self.K, self.seed = P, K, int(seed)

  @property
  def num_ids(self) -> int:
    return len(self.ids)

  @property
  def batch_size(self) -> int:
    return self.P * self.K

  def indices(self, step: int) -> np.ndarray:
    """int64 [P*K]: P contiguous blocks of K images, block i = identity i.

    Identities are drawn uniformly without replacement; each identity's K
    images without replacement, or with replacement when it has fewer than K
    (the batch then repeats an image rather than dropping the identity).
    """
    rng = step_rng(self.seed, step, _STREAM)
    chosen = rng.choice(self.num_ids, size=self.P, replace=False)
    out = np.empty((self.P, self.K), np.int64)
    for i, c in enumerate(chosen):
      members = self._members[c]
      out[i] = rng.choice(members, size=self.K,
                          replace=len(members) < self.K)
    return out.reshape(-1)


def pk_indices(pids_N, P: int, K: int, seed: int, step: int) -> np.ndarray:
  """int64 [P*K]; equals PKSampler(pids_N, P, K, seed).indices(step)."""
  return PKSampler(pids_N, P, K, seed).indices(step)
