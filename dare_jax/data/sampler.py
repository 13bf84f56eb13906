"""P x K identity sampling for batch-hard triplet training (Hermans et al.).

A batch is P identities with K images each. The indices of a step are a pure
function of (pids, P, K, seed, step, kind): a run resumed at step s sees
exactly the batches the uninterrupted run would have seen, whichever pipeline
(numpy or tf.data) draws them and in whatever order the steps are prepared.

Two kinds (train.sampler):

  'epoch' (default; the authors' sampler, DARENet's Datasets.py
      TrainingDataset): every identity once per epoch. Epoch e = step //
      steps_per_epoch, steps_per_epoch = num_ids // P; the identities are
      permuted by a generator keyed by (seed, e) and step j of the epoch
      takes perm[j*P:(j+1)*P]; the num_ids % P identities left over are not
      drawn that epoch (a fresh permutation each epoch, so not always the
      same ones). An identity with fewer than K images is padded to K once,
      here, with images chosen from its own (with replacement, keyed by the
      seed); each step draws K images of each identity without replacement
      from that padded list, keyed by (seed, step).
  'random' (the sampler before issue 14): each step draws P identities
      afresh (uniformly, without replacement within the step) and K images
      of each, with replacement only when the identity has fewer than K.
"""

from __future__ import annotations

import numpy as np

from dare_jax import errors

# Separates this module's random streams from the augmentation plan's, which
# is keyed by the same (seed, step).
_STREAM = 0x504B53  # 'PKS': a step's draws (both kinds)
_EPOCH_STREAM = 0x504B45  # 'PKE': the epoch's permutation of identities
_PAD_STREAM = 0x504B50  # 'PKP': padding short identities to K, once

KINDS = ('epoch', 'random')  # train.sampler


def step_rng(seed: int, step: int, stream: int) -> np.random.Generator:
  """A generator keyed by (seed, step, stream) alone.

  SeedSequence needs non-negative integers; a negative seed is mapped to its
  two's complement so every int seed stays usable and distinct.
  """
  if step < 0:
    raise ValueError(f'step must be >= 0; got {step}.')
  return np.random.default_rng([int(seed) % 2**64, int(step), int(stream)])


def check_kind(kind: str) -> None:
  """ConfigError naming train.sampler unless kind is one of KINDS."""
  if kind not in KINDS:
    raise errors.ConfigError(
        f'train.sampler={kind!r}: use one of '
        f'{", ".join(repr(k) for k in KINDS)}.')


class PKSampler:
  """Draws P x K batches of indices into a split with person ids `pids`.

  The per-identity index lists (padded to K for kind='epoch') are built once
  here; `indices(step)` is then cheap (a permutation of the identities and
  P small random draws).

  Only ids >= 1 are people: 0 (distractor) and -1 (junk) are never sampled.
  """

  def __init__(self, pids_N, P: int, K: int, seed: int, kind: str = 'epoch'):
    check_kind(kind)
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
    self.P, self.K, self.seed, self.kind = P, K, int(seed), kind
    if kind == 'epoch':
      # Once, in id order, from one generator: as the authors' start-up
      # padding (each missing image a random choice of the identity's own).
      rng = step_rng(self.seed, 0, _PAD_STREAM)
      self._members = [
          m if len(m) >= K else
          np.concatenate([m, rng.choice(m, size=K - len(m), replace=True)])
          for m in self._members]

  @property
  def num_ids(self) -> int:
    return len(self.ids)

  @property
  def batch_size(self) -> int:
    return self.P * self.K

  @property
  def steps_per_epoch(self) -> int:
    """kind='epoch': batches per pass over the identities (num_ids // P; the
    remainder is dropped, like a DataLoader with drop_last)."""
    return self.num_ids // self.P

  def members(self, c: int) -> np.ndarray:
    """The index list identity self.ids[c] draws from (padded for 'epoch')."""
    return self._members[c]

  def identities(self, step: int) -> np.ndarray:
    """int64 [P]: positions into self.ids of the step's identities."""
    if self.kind == 'random':
      return step_rng(self.seed, step, _STREAM).choice(
          self.num_ids, size=self.P, replace=False)
    epoch, j = divmod(int(step), self.steps_per_epoch)
    perm = step_rng(self.seed, epoch, _EPOCH_STREAM).permutation(
        self.num_ids)
    return perm[j * self.P:(j + 1) * self.P]

  def indices(self, step: int) -> np.ndarray:
    """int64 [P*K]: P contiguous blocks of K images, block i = identity i.

    'random': identities drawn uniformly without replacement; each
    identity's K images without replacement, or with replacement when it has
    fewer than K (the batch then repeats an image rather than dropping the
    identity). 'epoch': the step's slice of the epoch's permutation; K
    images of each without replacement from its padded list.
    """
    rng = step_rng(self.seed, step, _STREAM)
    if self.kind == 'random':
      # Bit-identical to the sampler before issue 14: the identities and
      # then the images from the one generator, in this order.
      chosen = rng.choice(self.num_ids, size=self.P, replace=False)
    else:
      chosen = self.identities(step)
    out = np.empty((self.P, self.K), np.int64)
    for i, c in enumerate(chosen):
      members = self._members[c]
      out[i] = rng.choice(members, size=self.K,
                          replace=len(members) < self.K)
    return out.reshape(-1)


def pk_indices(pids_N, P: int, K: int, seed: int, step: int,
               kind: str = 'epoch') -> np.ndarray:
  """int64 [P*K]; equals PKSampler(pids_N, P, K, seed, kind).indices(step)."""
  return PKSampler(pids_N, P, K, seed, kind).indices(step)
