"""sampler.py: P x K batches, pure in (seed, step), no junk or distractors.

kind='epoch' (the default, as the authors): every identity once per epoch,
short identities padded to K once. kind='random': the sampler before issue
14, bit-identical.
"""

import numpy as np
import pytest

from dare_jax import defaults
from dare_jax import errors
from dare_jax.data import numpy_pipeline as pipeline
from dare_jax.data import sampler
from dare_jax.data import spec

KINDS = pytest.mark.parametrize('kind', sampler.KINDS)


def make_pids():
  """ids 1..12 with 6 images each, id 13 with 2, plus junk and distractors.

  Interleaved so an identity's images are not contiguous.
  """
  pids = np.concatenate([np.tile(np.arange(1, 13), 6), [13, 13],
                         np.full(10, 0), np.full(10, -1)])
  return np.random.default_rng(0).permutation(pids).astype(np.int64)


def old_random_indices(pids, P, K, seed, step):
  """The 'random' sampler as documented before issue 14, re-implemented:
  generator default_rng([seed mod 2**64, step, 0x504B53]); P positions into
  the sorted ids without replacement; then, per chosen identity, K of its
  indices (in file order) without replacement unless it has fewer than K."""
  people = np.flatnonzero(pids >= 1)
  ids = np.unique(pids[people])
  members = [np.flatnonzero(pids == i) for i in ids]
  rng = np.random.default_rng([seed % 2**64, step, 0x504B53])
  chosen = rng.choice(len(ids), size=P, replace=False)
  return np.concatenate([
      rng.choice(members[c], size=K, replace=len(members[c]) < K)
      for c in chosen])


# ----------------------------------------------------------------------------
# Both kinds.


@KINDS
def test_pure_function_of_seed_and_step(kind):
  pids = make_pids()
  s = sampler.PKSampler(pids, P=4, K=3, seed=7, kind=kind)
  # Out-of-order calls and fresh objects agree: no hidden state.
  later = s.indices(5)
  np.testing.assert_array_equal(s.indices(3), sampler.pk_indices(
      pids, 4, 3, seed=7, step=3, kind=kind))
  np.testing.assert_array_equal(later, sampler.PKSampler(
      pids, 4, 3, seed=7, kind=kind).indices(5))
  assert s.indices(0).dtype == np.int64 and s.indices(0).shape == (12,)
  steps = [tuple(s.indices(t)) for t in range(20)]
  assert len(set(steps)) == 20
  assert tuple(sampler.pk_indices(pids, 4, 3, 8, 0, kind)) != steps[0]


@KINDS
def test_negative_seed_is_usable_and_distinct(kind):
  pids = make_pids()
  a = sampler.pk_indices(pids, 4, 3, seed=-1, step=0, kind=kind)
  np.testing.assert_array_equal(a, sampler.pk_indices(pids, 4, 3, -1, 0, kind))
  assert tuple(a) != tuple(sampler.pk_indices(pids, 4, 3, 1, 0, kind))


@KINDS
def test_p_blocks_of_k(kind):
  pids = make_pids()
  P, K = 5, 4
  s = sampler.PKSampler(pids, P, K, seed=0, kind=kind)
  for step in range(50):
    blocks = pids[s.indices(step)].reshape(P, K)
    assert (blocks == blocks[:, :1]).all()  # each block is one identity
    assert len(set(blocks[:, 0])) == P  # P distinct identities


@KINDS
def test_short_identity_uses_all_its_images_over_time(kind):
  pids = make_pids()
  s = sampler.PKSampler(pids, P=12, K=4, seed=0, kind=kind)
  used = set()
  for step in range(50):
    idx = s.indices(step)
    used |= {int(i) for i in idx if pids[i] == 13}
  assert used == set(np.flatnonzero(pids == 13))


@KINDS
def test_never_samples_junk_or_distractors_and_covers_all_ids(kind):
  pids = make_pids()
  s = sampler.PKSampler(pids, P=4, K=2, seed=1, kind=kind)
  counts = np.zeros(14, np.int64)
  for step in range(600):
    got = pids[s.indices(step)]
    assert (got >= 1).all()
    np.add.at(counts, got[::2], 1)
  # 'random': 600 * 4 / 13 ~ 185 draws per identity; 'epoch': 12 of the 13
  # identities in each of 200 epochs, ~185 too.
  assert counts[0] == 0 and (counts[1:] > 120).all(), counts
  assert s.num_ids == 13 and s.batch_size == 8


@pytest.mark.parametrize('P,K,match', [
    (14, 2, 'only 13 identities'),
    (0, 4, 'P=0'),
    (4, 1, 'K=1'),
    (4, 0, 'K=0'),
])
@KINDS
def test_errors(P, K, match, kind):
  with pytest.raises(ValueError, match=match):
    sampler.PKSampler(make_pids(), P, K, seed=0, kind=kind)


def test_negative_step_raises():
  for kind in sampler.KINDS:
    with pytest.raises(ValueError, match='step'):
      sampler.pk_indices(make_pids(), 2, 2, seed=0, step=-1, kind=kind)


# ----------------------------------------------------------------------------
# kind='epoch'.


def test_epoch_is_the_default():
  pids = make_pids()
  assert sampler.PKSampler(pids, 4, 3, seed=2).kind == 'epoch'
  np.testing.assert_array_equal(
      sampler.pk_indices(pids, 4, 3, 2, 9),
      sampler.PKSampler(pids, 4, 3, 2, 'epoch').indices(9))
  assert defaults.get_config().train.sampler == 'epoch'


def test_epoch_covers_every_identity_once():
  pids = make_pids()  # 13 ids
  P, K = 3, 2
  s = sampler.PKSampler(pids, P, K, seed=4)
  assert s.steps_per_epoch == 4  # 13 // 3: one identity left out per epoch
  orders = []
  for e in range(6):
    firsts = [pids[s.indices(e * 4 + j)[::K]] for j in range(4)]
    order = np.concatenate(firsts)
    assert len(set(order.tolist())) == 12 and (order >= 1).all()  # no repeat
    orders.append(tuple(order))
  assert len(set(orders)) == 6  # a fresh order each epoch
  # The identity left out changes from epoch to epoch.
  left_out = [set(range(1, 14)) - set(o) for o in orders]
  assert len({min(x) for x in left_out}) > 1

  # P divides num_ids: each epoch is exactly the 13 ids (P=13, one step).
  s13 = sampler.PKSampler(pids, 13, K, seed=4)
  assert s13.steps_per_epoch == 1
  for step in range(3):
    assert sorted(pids[s13.indices(step)[::K]]) == list(range(1, 14))


def test_epoch_resume_out_of_order_is_exact():
  pids = make_pids()
  s = sampler.PKSampler(pids, 4, 3, seed=9)
  in_order = [s.indices(t) for t in range(10)]  # 3 steps/epoch: 4 epochs
  resumed = sampler.PKSampler(pids, 4, 3, seed=9)
  for t in [7, 2, 9, 0, 5, 3, 8, 1, 6, 4]:
    np.testing.assert_array_equal(resumed.indices(t), in_order[t])
  np.testing.assert_array_equal(sampler.pk_indices(pids, 4, 3, 9, 6),
                                in_order[6])


def test_epoch_blocks_draw_without_replacement_from_the_padded_list():
  # id 1: 1 image; id 2: 3 images; id 3: 2 images; ids 4..6: 6 images.
  pids = np.concatenate([[1], [2] * 3, [3] * 2, np.repeat([4, 5, 6], 6),
                         [0, -1, 0]])
  pids = np.random.default_rng(1).permutation(pids).astype(np.int64)
  K = 4
  s = sampler.PKSampler(pids, P=6, K=K, seed=3)
  of = {int(i): np.flatnonzero(pids == i) for i in range(1, 7)}
  padded = {int(i): s.members(c) for c, i in enumerate(s.ids)}
  # Padding: once, at construction, from the identity's own images.
  assert sorted(padded[1]) == [of[1][0]] * 4  # 4 copies of its one image
  assert len(padded[2]) == 4 and set(padded[2]) == set(of[2])  # + 1 repeat
  assert len(padded[3]) == 4 and set(padded[3]) == set(of[3])
  for i in (4, 5, 6):
    np.testing.assert_array_equal(padded[i], of[i])  # not padded
  for step in range(20):  # all 6 ids every step
    blocks = s.indices(step).reshape(6, K)
    for block in blocks:
      i = int(pids[block[0]])
      assert (pids[block] == i).all()
      if i <= 3:  # the whole padded list, in some order
        assert sorted(block) == sorted(padded[i])
      else:
        assert len(set(block)) == K
  # The padding depends on the seed only (deterministic across objects).
  again = sampler.PKSampler(pids, P=6, K=K, seed=3)
  for c in range(s.num_ids):
    np.testing.assert_array_equal(again.members(c), s.members(c))


# ----------------------------------------------------------------------------
# kind='random': the old sampler, unchanged.


def test_random_equals_the_old_algorithm():
  pids = make_pids()
  for P, K, seed in [(4, 3, 7), (5, 4, -3), (13, 2, 0)]:
    s = sampler.PKSampler(pids, P, K, seed, kind='random')
    for step in (0, 1, 17, 1234):
      np.testing.assert_array_equal(
          s.indices(step), old_random_indices(pids, P, K, seed, step))
  # A golden from the pre-issue-14 sampler.py (id 5 has one image < K).
  pids = np.array([3, 1, 2, 0, 1, 3, -1, 2, 2, 1, 3, 4, 4, 2, 1, 4, 5])
  assert sampler.pk_indices(pids, 3, 3, 11, 0, 'random').tolist() == [
      12, 11, 15, 7, 13, 8, 0, 5, 10]
  assert sampler.pk_indices(pids, 3, 3, 11, 7, 'random').tolist() == [
      16, 16, 16, 2, 8, 7, 5, 10, 0]


def test_random_replacement_only_when_an_identity_is_short():
  pids = make_pids()
  K = 4
  s = sampler.PKSampler(pids, P=6, K=K, seed=3, kind='random')
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


# ----------------------------------------------------------------------------
# train.sampler in the config.


def train_input(**overrides):
  return spec.TrainInput(**{
      **dict(P=2, K=2, seed=0, num_steps=1, input_hw=(32, 16),
             resize_factor=1.125, hflip=True, random_erasing=False,
             erasing_p=0.5, erasing_area=(0.02, 0.2), erasing_aspect=0.3),
      **overrides})


def test_config_field_reaches_train_input():
  config = defaults.get_config()
  assert spec.TrainInput.from_config(config).sampler == 'epoch'
  config.train.sampler = 'random'
  assert spec.TrainInput.from_config(config).sampler == 'random'
  assert train_input().sampler == 'epoch'


@KINDS
def test_pipelines_draw_the_specs_sampler(kind):
  # tf_pipeline plans its steps with the same pipeline.TrainPlanner.
  pids = make_pids()
  planner = pipeline.TrainPlanner(pids, train_input(P=4, K=3, sampler=kind))
  for step in (0, 4, 11):
    np.testing.assert_array_equal(planner(step)['index'], sampler.pk_indices(
        pids, 4, 3, seed=0, step=step, kind=kind))


@pytest.mark.parametrize('bad', ['Epoch', 'pk', ''])
def test_bad_sampler_is_a_config_error(bad):
  match = r"train\.sampler=.*'epoch', 'random'"
  config = defaults.get_config()
  config.train.sampler = bad
  with pytest.raises(errors.ConfigError, match=match):
    spec.check_train(config.train)
  with pytest.raises(errors.ConfigError, match=match):
    spec.TrainInput.from_config(config)
  with pytest.raises(errors.ConfigError, match=match):
    train_input(sampler=bad)
  with pytest.raises(errors.ConfigError, match=match):
    sampler.PKSampler(make_pids(), 2, 2, 0, kind=bad)
