"""Tests for dare_jax.evaluation.metrics: hand answers and a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dare_jax.evaluation import metrics
from tests import metrics_reference as ref

# ----------------------------------------------------------------------------
# Hand-made case. One gallery of 8 images, one distance row per query.

G_PIDS = np.array([1, 0, -1, 1, 2, 1, 3, 1])
G_CAMS = np.array([0, 1, 1, 1, 0, 2, 2, 0])
ROW = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.05]
Q_PIDS = np.array([1, 1, 3, 2, 1])
Q_CAMS = np.array([0, 3, 2, 1, 2])
DIST = np.array([
    # q0 (pid 1, cam 0). Ranked: 7 (same cam, removed), 0 (same cam,
    # removed), 1 (distractor, r=1), 2 (junk, removed), 3 (good, r=2),
    # 4 (r=3), 5 (good, r=4), 6 (r=5).
    ROW,
    # q1 (pid 1, cam 3): goods 7, 0, 3, 5 at r = 1, 2, 4, 6 (junk 2 removed).
    ROW,
    # q2 (pid 3, cam 2): its only match, 6, shares its camera -> not valid.
    ROW,
    # q3 (pid 2, cam 1): good 4 ties with negative 3 at 0.3; the lower index
    # (3) ranks first, so the good image sits at r=2.
    [0.9, 0.9, 0.9, 0.3, 0.3, 0.9, 0.9, 0.9],
    # q4 (pid 1, cam 2): 5 (same cam) and 2 (junk) removed; goods 3 and 7 tie
    # at 0.2 (r=1, 2); good 0 ties with distractor 1 and negative 4 at 0.5
    # and wins on index (r=3).
    [0.5, 0.5, 0.1, 0.2, 0.5, 0.0, 0.9, 0.2],
], np.float32)

# AP per query, written out from the definitions.
AP_MARKET = [
    # q0: hits (k, r) = (1, 2), (2, 4).
    0.5 * ((0 / 1 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2),  # = 1/3
    # q1: hits (1, 1) [previous precision read as 1], (2, 2), (3, 4), (4, 6).
    0.25 * ((1 + 1 / 1) / 2 + (1 / 1 + 2 / 2) / 2 + (2 / 3 + 3 / 4) / 2 +
            (3 / 5 + 4 / 6) / 2),  # = 401/480
    0.0,
    # q3: hit (1, 2).
    (0 / 1 + 1 / 2) / 2,  # = 1/4
    # q4: hits (1, 1), (2, 2), (3, 3).
    1.0,
]
AP_STANDARD = [0.5 * (1 / 2 + 2 / 4), 0.25 * (1 + 1 + 3 / 4 + 4 / 6), 0.0,
               1 / 2, 1.0]
# INP = num_good / (rank of the last good image, 1-based among the remaining
# gallery): q0 2 / 4 (in the unfiltered ranking the last hit is 7th), q1
# 4 / 6, q2 not valid, q3 1 / 2, q4 3 / 3.
INP = [2 / 4, 4 / 6, 0.0, 1 / 2, 1.0]


@pytest.fixture(params=[True, False], ids=['radix', 'argsort'])
def sort_path(request, monkeypatch):
  """Runs a test on both the XLA:CPU radix argsort and plain jnp.argsort."""
  monkeypatch.setattr(metrics, '_use_radix', lambda: request.param)
  return request.param


def test_hand_made_per_query(sort_path):
  del sort_path
  for ap, expected in (('market', AP_MARKET), ('standard', AP_STANDARD)):
    out = metrics.evaluate_per_query(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS,
                                     ap=ap)
    np.testing.assert_array_equal(out['first_hit_rank'], [1, 0, -1, 1, 0])
    np.testing.assert_array_equal(out['num_good'], [2, 4, 0, 1, 3])
    np.testing.assert_array_equal(out['valid'], [1, 1, 0, 1, 1])
    np.testing.assert_allclose(out['ap'], expected, rtol=1e-6)
    np.testing.assert_allclose(out['inp'], INP, rtol=1e-6)


def test_hand_made_literals():
  # The hand-written sums above equal these closed forms.
  np.testing.assert_allclose(AP_MARKET, [1 / 3, 401 / 480, 0, 1 / 4, 1])
  np.testing.assert_allclose(AP_STANDARD, [1 / 2, 41 / 48, 0, 1 / 2, 1])


@pytest.mark.parametrize('query_chunk', [None, 1, 2, 5, 64])
def test_hand_made_summary(query_chunk):
  out = metrics.evaluate_ranking(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS,
                                 ranks=(1, 2, 5, 10), query_chunk=query_chunk)
  assert out['num_queries'] == 5
  assert out['num_valid_queries'] == 4
  # First hits (0-based) of the valid queries: 1, 0, 1, 0.
  assert out['rank1'] == 0.5
  assert out['rank2'] == 1.0
  assert out['rank5'] == 1.0
  assert out['rank10'] == 1.0
  # (1/3 + 401/480 + 1/4 + 1) / 4 = 1161/1920.
  assert out['mAP'] == pytest.approx(1161 / 1920, abs=1e-6)
  standard = metrics.evaluate_ranking(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS,
                                      ap='standard', query_chunk=query_chunk)
  # (1/2 + 41/48 + 1/2 + 1) / 4 = 137/192.
  assert standard['mAP'] == pytest.approx(137 / 192, abs=1e-6)
  # (1/2 + 2/3 + 1/2 + 1) / 4 = 2/3, whichever AP.
  assert out['mINP'] == pytest.approx(2 / 3, abs=1e-6)
  assert standard['mINP'] == pytest.approx(2 / 3, abs=1e-6)
  assert set(out) == {'rank1', 'rank2', 'rank5', 'rank10', 'mAP', 'mINP',
                      'num_valid_queries', 'num_queries'}
  for key in ('num_valid_queries', 'num_queries'):
    assert type(out[key]) is int
  for key in ('rank1', 'mAP', 'mINP'):
    assert type(out[key]) is float


def test_hand_made_matches_reference():
  for ap in ('market', 'standard'):
    expected = ref.evaluate(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS,
                            ranks=(1, 2, 5), ap=ap)
    got = metrics.evaluate_ranking(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS,
                                   ranks=(1, 2, 5), ap=ap)
    assert got == pytest.approx(expected, abs=1e-6)
    per_query = ref.evaluate_per_query(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS,
                                       ap=ap)
    np.testing.assert_array_equal(per_query['first_hit_rank'],
                                  [1, 0, -1, 1, 0])
    np.testing.assert_allclose(per_query['ap'],
                               AP_MARKET if ap == 'market' else AP_STANDARD)
    np.testing.assert_allclose(per_query['inp'], INP)


def test_inp_counts_kept_ranks_by_hand(sort_path):
  # q0 (pid 1, cam 0), gallery by distance: 0 good (r=1), 1 junk (removed),
  # 2 negative (r=2), 3 pid 1 on cam 0 (removed), 4 distractor (r=3), 5 good
  # (r=4), 6 pid 1 on cam 0 (removed, after the last good). INP = 2 / 4; from
  # the unfiltered ranking it would be 2 / 6, from 0-based ranks 2 / 3.
  # q1 (pid 1, cam 2) sees the same gallery reversed: 6 good (r=1), 5 on its
  # own camera (removed), 4 (r=2), 3 good (r=3), 2 (r=4), 1 junk (removed),
  # 0 good (r=5): INP = 3 / 5.
  # q2 (pid 9) has no match: not valid, INP 0, left out of mINP.
  del sort_path
  g_pids = np.array([1, -1, 2, 1, 0, 1, 1])
  g_cams = np.array([1, 0, 0, 0, 1, 2, 0])
  row = np.arange(7, dtype=np.float32)
  dist = np.stack([row, 6 - row, row])
  q_pids, q_cams = np.array([1, 1, 9]), np.array([0, 2, 0])
  got = metrics.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams)
  np.testing.assert_allclose(got['inp'], [2 / 4, 3 / 5, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(got['valid'], [1, 1, 0])
  summary = metrics.summarize(got)
  assert summary['mINP'] == pytest.approx((2 / 4 + 3 / 5) / 2, abs=1e-6)
  want = ref.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams)
  np.testing.assert_allclose(want['inp'], [2 / 4, 3 / 5, 0.0])


def test_summarize_without_inp_and_empty_inputs():
  # A per-query dict assembled from the older keys alone (e.g. combined from
  # several exits) still summarises; it has no mINP.
  per_query = metrics.evaluate_per_query(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS)
  del per_query['inp']
  out = metrics.summarize(per_query)
  assert 'mINP' not in out and out['mAP'] == pytest.approx(1161 / 1920)
  empty = metrics.evaluate_per_query(np.zeros((2, 0), np.float32), Q_PIDS[:2],
                                     Q_CAMS[:2], [], [])
  np.testing.assert_array_equal(empty['inp'], [0.0, 0.0])


# ----------------------------------------------------------------------------
# Random problems against the NumPy reference.


def _random_problem(seed, num_q, num_g, dim=16, num_ids=12):
  """Features and ids with junk, distractors and same-camera matches."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_ids + 2, dim))
  # Query id num_ids + 1 has no gallery image: those queries are not valid.
  q_pids = rng.integers(1, num_ids + 2, num_q)
  q_cams = rng.integers(0, 4, num_q)
  g_pids = rng.integers(-1, num_ids + 1, num_g)  # -1 junk, 0 distractor.
  g_cams = rng.integers(0, 4, num_g)
  # Features near their identity's centre, so that matches rank early
  # (otherwise every AP is tiny and compares nothing interesting).
  q_feats = centres[q_pids] + rng.normal(size=(num_q, dim))
  g_feats = centres[np.maximum(g_pids, 0)] + rng.normal(size=(num_g, dim))
  return (q_feats.astype(np.float32), g_feats.astype(np.float32), q_pids,
          q_cams, g_pids, g_cams)


def _assert_per_query_equal(got, expected):
  np.testing.assert_array_equal(got['valid'], expected['valid'])
  np.testing.assert_array_equal(got['num_good'], expected['num_good'])
  np.testing.assert_array_equal(got['first_hit_rank'],
                                expected['first_hit_rank'])
  np.testing.assert_allclose(got['ap'], expected['ap'], atol=1e-6)
  np.testing.assert_allclose(got['inp'], expected['inp'], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_random_matches_reference(seed, sort_path):
  del sort_path
  q, g, q_pids, q_cams, g_pids, g_cams = _random_problem(seed, 37, 211)
  dist = np.asarray(metrics.pairwise_distances(q, g))
  assert not ref.evaluate_per_query(
      dist, q_pids, q_cams, g_pids, g_cams)['valid'].all()
  for ap in ('market', 'standard'):
    expected = ref.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams,
                                      ap=ap)
    expected_summary = ref.evaluate(
        dist, q_pids, q_cams, g_pids, g_cams, ranks=(1, 3, 5, 10), ap=ap)
    for query_chunk in (None, 1, 8):  # None: all 37 at once; 8 leaves 5.
      got = metrics.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams,
                                       ap=ap, query_chunk=query_chunk)
      _assert_per_query_equal(got, expected)
    summary = metrics.evaluate_ranking(
        jnp.asarray(dist), q_pids, q_cams, g_pids, g_cams,
        ranks=(1, 3, 5, 10), ap=ap, query_chunk=8)
    assert summary.keys() == expected_summary.keys()
    for key, value in expected_summary.items():
      assert summary[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize('seed', [3, 4])
def test_ties_match_reference(seed, sort_path):
  del sort_path
  # Coarse distances make ties everywhere; -0.0, +inf and NaN must sort as
  # NumPy sorts them (-0.0 == 0.0, NaN last).
  rng = np.random.default_rng(seed)
  _, _, q_pids, q_cams, g_pids, g_cams = _random_problem(seed, 29, 150)
  dist = (rng.integers(0, 6, (29, 150)) / 5).astype(np.float32)
  dist[rng.random(dist.shape) < 0.1] = -0.0
  dist[rng.random(dist.shape) < 0.05] = np.inf
  dist[rng.random(dist.shape) < 0.05] = np.nan
  for ap in ('market', 'standard'):
    expected = ref.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams,
                                      ap=ap)
    for query_chunk in (None, 4):
      got = metrics.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams,
                                       ap=ap, query_chunk=query_chunk)
      _assert_per_query_equal(got, expected)


def test_large_gallery_matches_reference(sort_path):
  # G >= 2**15 takes the unpacked running counts and three radix passes.
  del sort_path
  rng = np.random.default_rng(6)
  num_g = 40_000
  g_pids = rng.integers(-1, 30, num_g)
  g_cams = rng.integers(0, 3, num_g)
  q_pids, q_cams = np.array([1, 2, 3]), np.array([0, 1, 2])
  dist = rng.random((3, num_g)).astype(np.float32)
  dist[:, ::2] = np.round(dist[:, ::2], 2)  # Ties.
  expected = ref.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams)
  got = metrics.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams,
                                   query_chunk=2)
  _assert_per_query_equal(got, expected)


@pytest.mark.parametrize('shape', [(3, 1), (4, 2), (5, 300), (2, 70_000)])
def test_stable_argsort_rows_matches_numpy(shape):
  # (2, 70000) needs three radix passes; the others two.
  rng = np.random.default_rng(shape[1])
  x = rng.normal(size=shape).astype(np.float32)
  x[:, ::3] = np.round(x[:, ::3])  # Ties.
  x[rng.random(shape) < 0.05] = -0.0
  x[rng.random(shape) < 0.05] = -np.inf
  x[rng.random(shape) < 0.05] = np.nan
  x[rng.random(shape) < 0.05] = np.float32(-np.nan)
  expected = np.argsort(x, axis=1, kind='stable')
  for radix in (True, False):
    got = jax.jit(metrics._stable_argsort_rows, static_argnums=1)(x, radix)
    np.testing.assert_array_equal(got, expected)


def test_x64_ap_in_float64():
  with jax.enable_x64(True):
    out = metrics.evaluate_per_query(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS)
    assert out['ap'].dtype == np.float64
    np.testing.assert_allclose(out['ap'], AP_MARKET, rtol=1e-12)
    assert out['inp'].dtype == np.float64
    np.testing.assert_allclose(out['inp'], INP, rtol=1e-12)


def test_evaluate_features_is_distances_then_ranking():
  q, g, q_pids, q_cams, g_pids, g_cams = _random_problem(5, 20, 90)
  for metric, normalize in (('euclidean', False), ('cosine', False),
                            ('sqeuclidean', True)):
    dist = metrics.pairwise_distances(q, g, metric, normalize)
    expected = ref.evaluate(np.asarray(dist), q_pids, q_cams, g_pids, g_cams,
                            ap='standard')
    got = metrics.evaluate_features(q, g, q_pids, q_cams, g_pids, g_cams,
                                    metric=metric, normalize=normalize,
                                    ap='standard', query_chunk=6)
    assert got == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------
# Distances.


@pytest.mark.parametrize('metric', ['euclidean', 'sqeuclidean', 'cosine'])
@pytest.mark.parametrize('normalize', [False, True])
def test_distances_match_numpy(metric, normalize):
  rng = np.random.default_rng(7)
  q = rng.normal(size=(13, 32)).astype(np.float32)
  g = (rng.normal(size=(41, 32)) * 3 + 1).astype(np.float32)
  got = metrics.pairwise_distances(q, g, metric=metric, normalize=normalize)
  assert isinstance(got, jax.Array)
  assert got.dtype == jnp.float32 and got.shape == (13, 41)
  expected = ref.pairwise_distances(q, g, metric, normalize)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_euclidean_is_accurate_for_features_with_a_large_mean():
  # Post-ReLU-like features: norms ~800, distances ~11. Without care, the
  # expanded form |q|^2 + |g|^2 - 2 q.g loses ~1e-3 relative accuracy here.
  rng = np.random.default_rng(8)
  q = (100 + rng.normal(size=(20, 64))).astype(np.float32)
  g = (100 + rng.normal(size=(30, 64))).astype(np.float32)
  for metric in ('euclidean', 'sqeuclidean'):
    got = metrics.pairwise_distances(q, g, metric=metric)
    np.testing.assert_allclose(got, ref.pairwise_distances(q, g, metric),
                               rtol=1e-5)


def test_euclidean_of_identical_features_is_not_nan():
  rng = np.random.default_rng(8)
  g = (rng.normal(size=(50, 64)) * 10).astype(np.float32)
  for metric in ('euclidean', 'sqeuclidean'):
    dist = np.asarray(metrics.pairwise_distances(g, g, metric=metric))
    assert np.isfinite(dist).all() and (dist >= 0).all()
    # The clamp turns the diagonal's cancellation error (a few ulp of
    # |g|^2 ~ 6400) into a small non-negative number instead of NaN.
    assert np.diag(dist).max() < (0.2 if metric == 'euclidean' else 0.04)


def test_cosine_ignores_scale_and_zero_features_are_finite():
  rng = np.random.default_rng(9)
  q = rng.normal(size=(4, 8)).astype(np.float32)
  g = np.concatenate([q * 5.0, -q, np.zeros((1, 8), np.float32)])
  dist = np.asarray(metrics.pairwise_distances(q, g, metric='cosine'))
  np.testing.assert_allclose(np.diag(dist[:, :4]), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.diag(dist[:, 4:8]), 2.0, atol=1e-6)
  np.testing.assert_allclose(dist[:, 8], 1.0)


# ----------------------------------------------------------------------------
# Bad inputs.


def test_bad_distance_inputs():
  q = np.zeros((3, 4), np.float32)
  with pytest.raises(ValueError, match='Unknown metric'):
    metrics.pairwise_distances(q, q, metric='manhattan')
  with pytest.raises(ValueError, match='D=4.*D=5'):
    metrics.pairwise_distances(q, np.zeros((2, 5)))
  with pytest.raises(ValueError, match='2-D'):
    metrics.pairwise_distances(q[0], q)


def test_bad_ranking_inputs():
  args = (DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS)
  with pytest.raises(ValueError, match='Unknown ap'):
    metrics.evaluate_ranking(*args, ap='cuhk')
  with pytest.raises(ValueError, match='2-D'):
    metrics.evaluate_ranking(DIST[0], *args[1:])
  with pytest.raises(ValueError, match='q_pids has 4 entries; expected 5'):
    metrics.evaluate_ranking(DIST, Q_PIDS[:4], *args[2:])
  with pytest.raises(ValueError, match='q_camids'):
    metrics.evaluate_ranking(DIST, Q_PIDS, Q_CAMS[:, None], G_PIDS, G_CAMS)
  with pytest.raises(ValueError, match='g_camids has 7 entries; expected 8'):
    metrics.evaluate_ranking(*args[:4], G_CAMS[:7])
  with pytest.raises(ValueError, match='g_pids must hold integers'):
    metrics.evaluate_ranking(DIST, Q_PIDS, Q_CAMS, G_PIDS + 0.5, G_CAMS)
  with pytest.raises(ValueError, match='ranks'):
    metrics.evaluate_ranking(*args, ranks=(0, 5))
  with pytest.raises(ValueError, match='query_chunk'):
    metrics.evaluate_ranking(*args, query_chunk=0)
  with pytest.raises(ValueError, match='No query has a good gallery image'):
    metrics.evaluate_ranking(DIST[2:3], Q_PIDS[2:3], Q_CAMS[2:3], G_PIDS,
                             G_CAMS)
  q = np.zeros((5, 3), np.float32)
  g = np.zeros((8, 3), np.float32)
  with pytest.raises(ValueError, match='Unknown ap'):
    metrics.evaluate_features(q, g, *args[1:], ap='x')
  with pytest.raises(ValueError, match='Unknown metric'):
    metrics.evaluate_features(q, g, *args[1:], metric='x')


# ----------------------------------------------------------------------------
# Unknown cameras (camid -1): nothing is removed for sharing the camera.


def test_unknown_cameras_by_hand(sort_path):
  del sort_path
  # Gallery: 0 (pid 1, cam ?), 1 (pid 2, cam ?), 2 (junk), 3 (pid 1, cam 0).
  g_pids, g_cams = np.array([1, 2, -1, 1]), np.array([-1, -1, -1, 0])
  dist = np.array([[0.1, 0.2, 0.05, 0.3],   # q0: pid 1, cam unknown
                   [0.3, 0.2, 0.05, 0.1]],  # q1: pid 1, cam 0
                  np.float32)
  q_pids, q_cams = np.array([1, 1]), np.array([-1, 0])
  got = metrics.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams,
                                   ap='standard')
  # q0: junk removed; goods 0 (r=1) and 3 (r=3): AP = (1 + 2/3) / 2.
  # q1: gallery 3 shares the known camera 0 -> removed; good 0 at r=2.
  np.testing.assert_array_equal(got['num_good'], [2, 1])
  np.testing.assert_array_equal(got['first_hit_rank'], [0, 1])
  np.testing.assert_allclose(got['ap'], [(1 + 2 / 3) / 2, 1 / 2], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('seed', [5, 6])
def test_unknown_cameras_match_reference(seed, sort_path):
  del sort_path
  q, g, q_pids, q_cams, g_pids, g_cams = _random_problem(seed, 29, 150)
  rng = np.random.default_rng(seed)
  q_cams = np.where(rng.random(len(q_cams)) < 0.3, -1, q_cams)
  g_cams = np.where(rng.random(len(g_cams)) < 0.3, -1, g_cams)
  dist = np.asarray(metrics.pairwise_distances(q, g))
  for ap in ('market', 'standard'):
    expected = ref.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams,
                                      ap=ap)
    got = metrics.evaluate_per_query(dist, q_pids, q_cams, g_pids, g_cams,
                                     ap=ap, query_chunk=7)
    _assert_per_query_equal(got, expected)
