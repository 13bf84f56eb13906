"""Tests for dare_jax.evaluation.rerank against the authors' NumPy algorithm."""

import numpy as np
import pytest

from dare_jax.evaluation import metrics
from dare_jax.evaluation import rerank
from dare_jax.references import authors_rerank as ref

NUM_Q, NUM_G, DIM = 60, 243, 32  # N = 303: prime, so no chunk divides it.


def _gaussian(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(NUM_Q + NUM_G, DIM)).astype(np.float32)
  return x[:NUM_Q], x[NUM_Q:]


def _clustered(seed, num_ids=30, noise=0.7):
  """Identities = centres + noise; one query per identity in camera 0.

  Returns (q, g, q_pids, q_cams, g_pids, g_cams); continuous features, so
  there are no distance ties.
  """
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_ids, DIM))
  q_pids = np.arange(NUM_Q) % num_ids
  g_pids = rng.integers(0, num_ids, NUM_G)
  # A shared offset, as in post-ReLU embeddings, exercises the centring.
  q = centres[q_pids] + noise * rng.normal(size=(NUM_Q, DIM)) + 3.0
  g = centres[g_pids] + noise * rng.normal(size=(NUM_G, DIM)) + 3.0
  q_cams = np.zeros(NUM_Q, np.int64)
  g_cams = rng.integers(1, 6, NUM_G)
  return (q.astype(np.float32), g.astype(np.float32), q_pids, q_cams, g_pids,
          g_cams)


def _euclidean(a, b):
  a, b = a.astype(np.float64), b.astype(np.float64)
  return np.sqrt(np.maximum(
      ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))


def _reference(q, g, k1, k2, lambda_value, normalize=False, stats=None):
  if normalize:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
  return ref.re_ranking(_euclidean(q, g), _euclidean(q, q), _euclidean(g, g),
                        k1=k1, k2=k2, lambda_value=lambda_value, stats=stats)


# (features, k1, k2, lambda, normalize, chunk). Chunks 37 and 64 do not
# divide N = 303; None is the default (one tile here). k1=3 with k2=6 reads
# past the k1+1 nearest, as the authors' code allows.
CASES = [
    ('gaussian', 20, 6, 0.3, False, 37),
    ('clustered', 20, 6, 0.3, False, 37),
    ('clustered', 20, 6, 0.3, True, None),
    ('clustered', 6, 1, 0.0, False, 64),
    ('clustered', 3, 6, 1.0, True, 37),
]


@pytest.mark.slow
@pytest.mark.parametrize('data,k1,k2,lambda_value,normalize,chunk', CASES)
def test_rerank_features_matches_authors(data, k1, k2, lambda_value,
                                         normalize, chunk):
  q, g = _gaussian(0) if data == 'gaussian' else _clustered(1)[:2]
  stats = {}
  want = _reference(q, g, k1, k2, lambda_value, normalize, stats)
  got = rerank.rerank_features(q, g, k1, k2, lambda_value,
                               normalize=normalize, chunk=chunk)
  assert got.shape == (NUM_Q, NUM_G) and got.dtype == np.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)
  if data == 'clustered' and k1 >= 6:
    # The expansion branch must bring in new members in these cases, or the
    # comparison would not cover it.
    assert stats['expansions'] > 0


def test_small_visit_budget_matches_authors(monkeypatch):
  # A budget of a few queries' visits splits the output chunks into runs of
  # uneven length (some of one oversized query), each written in place.
  monkeypatch.setattr(rerank, '_max_visits', lambda: 6000)
  q, g = _clustered(1)[:2]
  want = _reference(q, g, 20, 6, 0.3)
  stats = {}
  got = rerank.rerank_features(q, g, 20, 6, 0.3, chunk=37, stats=stats)
  groups = rerank._visit_groups(np.full(NUM_Q, stats['visits'] // NUM_Q),
                                37, 6000)
  assert len(groups) > NUM_Q // 37 + 1
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)


def test_rerank_distances_matches_authors():
  q, g = _clustered(2)[:2]
  d_qg, d_qq, d_gg = _euclidean(q, g), _euclidean(q, q), _euclidean(g, g)
  stats = {}
  want = ref.re_ranking(d_qg, d_qq, d_gg, k1=20, k2=6, lambda_value=0.3,
                        stats=stats)
  assert stats['expansions'] > 0
  got = rerank.rerank_distances(d_qg.astype(np.float32),
                                d_qq.astype(np.float32),
                                d_gg.astype(np.float32), k1=20, k2=6,
                                lambda_value=0.3, chunk=37)
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_rerank_improves_map_on_clustered_features():
  q, g, q_pids, q_cams, g_pids, g_cams = _clustered(3, noise=1.0)
  plain = metrics.evaluate_ranking(metrics.pairwise_distances(q, g), q_pids,
                                   q_cams, g_pids, g_cams)
  reranked = metrics.evaluate_ranking(
      rerank.rerank_features(q, g, chunk=37), q_pids, q_cams, g_pids, g_cams)
  assert 0.1 < plain['mAP'] < 0.9  # Neither trivial nor hopeless.
  assert reranked['mAP'] > plain['mAP'] + 0.02


@pytest.mark.parametrize('kwargs,name', [
    (dict(k1=0), 'k1'),
    (dict(k1=2.5), 'k1'),
    (dict(k1=True), 'k1'),
    (dict(k1=303), 'k1'),
    (dict(k2=0), 'k2'),
    (dict(k2=304), 'k2'),
    (dict(lambda_value=-0.1), 'lambda_value'),
    (dict(lambda_value=1.5), 'lambda_value'),
    (dict(lambda_value='0.3'), 'lambda_value'),
    (dict(chunk=0), 'chunk'),
])
def test_bad_options_raise(kwargs, name):
  q, g = _gaussian(0)
  with pytest.raises(ValueError, match=name):
    rerank.rerank_features(q, g, **kwargs)


def test_bad_shapes_raise():
  q, g = _gaussian(0)
  with pytest.raises(ValueError, match='g_GxD has D'):
    rerank.rerank_features(q, g[:, :5])
  with pytest.raises(ValueError, match='2-D'):
    rerank.rerank_features(q[0], g)
  with pytest.raises(ValueError, match='at least one row'):
    rerank.rerank_features(q[:0], g)
  d_qg = np.ones((4, 6), np.float32)
  with pytest.raises(ValueError, match='dist_q_q'):
    rerank.rerank_distances(d_qg, np.ones((4, 5)), np.ones((6, 6)), k1=2)
  with pytest.raises(ValueError, match='dist_g_g'):
    rerank.rerank_distances(d_qg, np.ones((4, 4)), np.ones((6, 5)), k1=2)
  with pytest.raises(ValueError, match='dist_q_g'):
    rerank.rerank_distances(np.ones(4), np.ones((4, 4)), np.ones((6, 6)))
