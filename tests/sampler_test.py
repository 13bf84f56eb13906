"""sampler.py: P x K batches, pure in (seed, step), no junk or distractors."""

import numpy as np
import pytest

from dare_jax.data import sampler


def make_pids():
  """ids 1..12 with 6 images each, id 13 with 2, plus junk and distractors.

  Interleaved so an identity's images are not contiguous.
  """
  pids = np.concatenate([np.tile(np.arange(1, 13), 6), [13, 13],
                         np.full(10, 0), np.full(10, -1)])
  return np.random.default_rng(0).permutation(pids).astype(np.int64)


def test_pure_function_of_seed_and_step():
  pids = make_pids()
  s = sampler.PKSampler(pids, P=4, K=3, seed=7)
  # Out-of-order calls and fresh objects agree: no hidden state.
  later = s.indices(5)
  np.testing.assert_array_equal(s.indices(3), sampler.pk_indices(
      pids, 4, 3, seed=7, step=3))
  np.testing.assert_array_equal(later, sampler.PKSampler(
      pids, 4, 3, seed=7).indices(5))
  assert s.indices(0).dtype == np.int64 and s.indices(0).shape == (12,)
  steps = [tuple(s.indices(t)) for t in range(20)]
  assert len(set(steps)) == 20
  assert tuple(sampler.pk_indices(pids, 4, 3, 8, 0)) != steps[0]


def test_negative_seed_is_usable_and_distinct():
  pids = make_pids()
  a = sampler.pk_indices(pids, 4, 3, seed=-1, step=0)
  np.testing.assert_array_equal(a, sampler.pk_indices(pids, 4, 3, -1, 0))
  assert tuple(a) != tuple(sampler.pk_indices(pids, 4, 3, 1, 0))


def test_p_blocks_of_k():
  pids = make_pids()
  P, K = 5, 4
  s = sampler.PKSampler(pids, P, K, seed=0)
  for step in range(50):
    blocks = pids[s.indices(step)].reshape(P, K)
    assert (blocks == blocks[:, :1]).all()  # each block is one identity
    assert len(set(blocks[:, 0])) == P  # P distinct identities


def test_replacement_only_when_an_identity_is_short():
  pids = make_pids()
  K = 4
  s = sampler.PKSampler(pids, P=6, K=K, seed=3)
  seen_short = 0
  for step in range(300):
    idx = s.indices(step).reshape(6, K)
    for block in idx:
      if pids[block[0]] == 13:  # 2 images < K: both used, with repeats
        seen_short += 1
        assert set(block) == set(np.flatnonzero(pids == 13)) or len(
            set(block)) == 1
        assert len(set(block)) < K
      else:
        assert len(set(block)) == K
  assert seen_short > 0


def test_short_identity_uses_all_its_images_over_time():
  pids = make_pids()
  s = sampler.PKSampler(pids, P=12, K=4, seed=0)
  used = set()
  for step in range(50):
    idx = s.indices(step)
    used |= {int(i) for i in idx if pids[i] == 13}
  assert used == set(np.flatnonzero(pids == 13))


def test_never_samples_junk_or_distractors_and_covers_all_ids():
  pids = make_pids()
  s = sampler.PKSampler(pids, P=4, K=2, seed=1)
  counts = np.zeros(14, np.int64)
  for step in range(600):
    got = pids[s.indices(step)]
    assert (got >= 1).all()
    np.add.at(counts, got[::2], 1)
  # 600 * 4 / 13 ~ 185 draws per identity: roughly uniform.
  assert counts[0] == 0 and (counts[1:] > 120).all(), counts
  assert s.num_ids == 13 and s.batch_size == 8


@pytest.mark.parametrize('P,K,match', [
    (14, 2, 'only 13 identities'),
    (0, 4, 'P=0'),
    (4, 1, 'K=1'),
    (4, 0, 'K=0'),
])
def test_errors(P, K, match):
  with pytest.raises(ValueError, match=match):
    sampler.PKSampler(make_pids(), P, K, seed=0)


def test_negative_step_raises():
  with pytest.raises(ValueError, match='step'):
    sampler.pk_indices(make_pids(), 2, 2, seed=0, step=-1)
