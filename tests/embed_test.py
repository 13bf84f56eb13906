"""Video evaluation helpers: frame selection, tracklet pooling, Split.take."""

import numpy as np
import pytest

from dare_jax.data.types import Split
from dare_jax.evaluation import embed


def test_select_tracklet_frames_by_hand():
  # Tracklets of 5, 2 and 1 frames.
  t = np.array([0, 0, 0, 0, 0, 1, 1, 2])
  np.testing.assert_array_equal(embed.select_tracklet_frames(t, 0),
                                np.arange(8))
  np.testing.assert_array_equal(embed.select_tracklet_frames(t, 3),
                                [0, 2, 4, 5, 6, 7])
  np.testing.assert_array_equal(embed.select_tracklet_frames(t, 1),
                                [0, 5, 7])
  np.testing.assert_array_equal(embed.select_tracklet_frames(t, 2),
                                [0, 4, 5, 6, 7])


def test_pool_tracklets_is_the_mean_of_frames():
  rng = np.random.default_rng(0)
  t = np.array([0, 0, 0, 1, 2, 2])
  emb = rng.normal(size=(6, 4)).astype(np.float32)
  got = embed.pool_tracklets(emb, t)
  want = np.stack([emb[0:3].mean(0), emb[3], emb[4:6].mean(0)])
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_split_take_renumbers_tracklets_and_ids():
  split = Split(pids=np.array([4, 4, 7, 7, 9]),
                camids=np.array([0, 0, 1, 1, 2]),
                paths=['a', 'b', 'c', 'd', 'e'],
                tracklets=np.array([0, 0, 1, 1, 2]))
  sub = split.take([1, 4])  # tracklet 1 loses every frame
  assert sub.paths == ['b', 'e']
  np.testing.assert_array_equal(sub.tracklets, [0, 1])
  assert sub.num_items == 2
  pids, camids = sub.item_ids()
  np.testing.assert_array_equal(pids, [4, 9])
  np.testing.assert_array_equal(camids, [0, 2])
  assert split.num_items == 3
  with pytest.raises(ValueError, match='increasing'):
    split.take([2, 1])


def test_split_rejects_inconsistent_tracklets():
  with pytest.raises(ValueError, match='share one pid'):
    Split(pids=np.array([1, 2]), camids=np.array([0, 0]), paths=['a', 'b'],
          tracklets=np.array([0, 0]))
  with pytest.raises(ValueError, match='contiguous'):
    Split(pids=np.array([1, 1, 1]), camids=np.array([0, 0, 0]),
          paths=['a', 'b', 'c'], tracklets=np.array([0, 1, 0]))
