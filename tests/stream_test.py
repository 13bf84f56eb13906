"""The budgeted stream against eq. 3 and the loop-based NumPy reference."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dare_jax.budget import stream
from dare_jax.evaluation import metrics
from dare_jax.retrieval import exits as exits_lib
from tests import metrics_reference as mref
from tests import stream_reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXITS = ('stage1', 'stage2', 'stage3', 'fused')
# ResNet-50 at 256x128 (torchvision layout), tests/costs_test.py.
COSTS = (513_671_168, 1_185_415_168, 2_142_896_128, 2_673_607_168)


# ----------------------------------------------------------------------------
# Eq. 3.


def _cost_vectors(n=40, seed=0):
  rng = np.random.default_rng(seed)
  out = [np.array(COSTS, float), np.array([1.0, 2.0, 3.0, 4.0]),
         np.array([1.0, 1.001, 50.0, 1e4])]
  for _ in range(n):
    size = int(rng.integers(2, 7))
    out.append(np.cumsum(rng.uniform(0.01, 10.0, size) *
                         10.0**rng.uniform(-3, 9)))
  return out


def test_expected_cost_equals_the_budget():
  rng = np.random.default_rng(1)
  for costs in _cost_vectors():
    budgets = list(rng.uniform(costs[0], costs[-1], 25))
    budgets += [costs[0] * (1 + 1e-9), costs[-1] * (1 - 1e-9)]
    budgets += list(costs[1:-1])  # exactly one exit's cost
    for b in budgets:
      p = exits_lib.exit_fractions(costs, b)
      assert p.shape == costs.shape
      assert np.all(p >= 0)
      assert p.sum() == pytest.approx(1.0, abs=1e-12)
      assert float(p @ costs) == pytest.approx(b, rel=1e-6)
      # p_s ~ q^(s-1): a constant ratio between neighbouring exits.
      big = p > 1e-200
      if np.count_nonzero(big) > 2:
        ratios = p[1:][big[1:] & big[:-1]] / p[:-1][big[1:] & big[:-1]]
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-7)


def test_fractions_match_np_roots():
  rng = np.random.default_rng(2)
  for costs in _cost_vectors(15, seed=3):
    for b in rng.uniform(costs[0], costs[-1], 10):
      np.testing.assert_allclose(exits_lib.exit_fractions(costs, b),
                                 ref.fractions(costs, b), rtol=1e-6,
                                 atol=1e-12)


def test_boundary_budgets():
  c = np.array(COSTS, float)
  for b in (0.0, 1.0, c[0]):
    np.testing.assert_array_equal(exits_lib.exit_fractions(c, b), [1, 0, 0, 0])
    np.testing.assert_array_equal(exits_lib.random_fractions(c, b), [1, 0, 0, 0])
  for b in (c[-1], 2 * c[-1]):
    np.testing.assert_array_equal(exits_lib.exit_fractions(c, b), [0, 0, 0, 1])
    np.testing.assert_array_equal(exits_lib.random_fractions(c, b), [0, 0, 0, 1])
  np.testing.assert_array_equal(exits_lib.exit_fractions([5.0], 3.0), [1.0])
  np.testing.assert_array_equal(exits_lib.conditional([1, 0, 0, 0]),
                                [1, 1, 1, 1])
  np.testing.assert_array_equal(exits_lib.conditional([0, 0, 0, 1]),
                                [0, 0, 0, 1])


def test_random_fractions_share_the_neighbouring_exits():
  c = np.array([1.0, 2.0, 4.0, 8.0])
  np.testing.assert_allclose(exits_lib.random_fractions(c, 3.0), [0, .5, .5, 0])
  np.testing.assert_allclose(exits_lib.random_fractions(c, 2.0), [0, 1, 0, 0])
  np.testing.assert_allclose(exits_lib.random_fractions(c, 7.0),
                             [0, 0, .25, .75])
  for b in np.linspace(1, 8, 29):
    p = exits_lib.random_fractions(c, b)
    assert float(p @ c) == pytest.approx(b)
    np.testing.assert_allclose(p, ref.random_fractions(c, b))


def test_conditional_matches_the_reference():
  for costs in _cost_vectors(10, seed=4):
    for b in np.linspace(costs[0], costs[-1], 7):
      p = exits_lib.exit_fractions(costs, b)
      np.testing.assert_allclose(exits_lib.conditional(p), ref.conditional(p),
                                 rtol=1e-12)


@pytest.mark.parametrize('costs', [[1, 1, 2], [2, 1], [0, 1], [1, np.nan]])
def test_bad_costs(costs):
  with pytest.raises(ValueError, match='costs'):
    exits_lib.exit_fractions(costs, 1.5)


# ----------------------------------------------------------------------------
# Routing on features with junk, distractors and same-camera matches.


def _features(seed=0, num_q=160, num_g=240, dim=6, num_ids=30):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_ids + 2, dim))
  q_pids = rng.integers(1, num_ids + 2, num_q)  # some absent from the gallery
  g_pids = rng.integers(-1, num_ids + 1, num_g)  # -1 junk, 0 distractors
  q_cams = rng.integers(0, 3, num_q)
  q_cams[:20] = -1  # unknown cameras (-1 in the gallery too)
  feats = {'query_pids': q_pids.astype(np.int64),
           'query_camids': q_cams.astype(np.int64),
           'gallery_pids': g_pids.astype(np.int64),
           'gallery_camids': rng.integers(-1, 3, num_g).astype(np.int64)}
  for name, noise in zip(EXITS, (1.6, 1.1, 0.8, 0.5)):
    feats[f'query_{name}'] = (centres[q_pids] + noise * rng.normal(
        size=(num_q, dim))).astype(np.float32)
    feats[f'gallery_{name}'] = (centres[np.maximum(g_pids, 0)] + noise *
                                rng.normal(size=(num_g, dim))).astype(
                                    np.float32)
  return feats


def _ids(feats):
  return [feats[k] for k in ('query_pids', 'query_camids', 'gallery_pids',
                             'gallery_camids')]


def _dists(feats):
  return [np.asarray(metrics.pairwise_distances(feats[f'query_{n}'],
                                                feats[f'gallery_{n}']))
          for n in EXITS]


@pytest.mark.parametrize('kind', ['distance', 'margin'])
def test_confidences_match_the_reference(kind):
  feats = _features()
  ids = _ids(feats)
  for dist in _dists(feats):
    got = exits_lib.confidences(dist, *ids, kind=kind)
    want = ref.confidence(dist, *ids, kind)
    np.testing.assert_array_equal(got, want)


def test_confidence_edge_cases():
  dist = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]], np.float32)
  g_pids, g_cams = np.array([-1, 5, 5]), np.array([0, 1, 2])
  # Query 0 (pid 5, cam 1): the junk and its own camera removed, one image
  # of one identity left -> margin +inf; query 1 (pid 7): top-1 is g1.
  q_pids, q_cams = np.array([5, 7]), np.array([1, 0])
  np.testing.assert_array_equal(
      exits_lib.confidences(dist, q_pids, q_cams, g_pids, g_cams, 'distance'),
      [-3.0, -1.0])
  np.testing.assert_array_equal(
      exits_lib.confidences(dist, q_pids, q_cams, g_pids, g_cams, 'margin'),
      [np.inf, np.inf])
  g_pids = np.array([-1, 5, 6])
  np.testing.assert_array_equal(
      exits_lib.confidences(dist, q_pids, q_cams, g_pids, g_cams, 'margin'),
      [np.inf, 1.0])  # q0: only g2 (pid 6) is left; q1: 2 - 1
  # Nothing left at all: the least confident.
  np.testing.assert_array_equal(
      exits_lib.confidences(dist[:1, :1], [5], [1], [-1], [0], 'margin'),
      [-np.inf])


def test_route_hand_made():
  # pi = 0.5 at exit 0: thresholds at floor((n - 1) / 2) of the sorted list.
  conf = np.array([[0.5], [0.9], [0.1], [0.7], [0.3]])
  # q0: [.5] -> t .5, leaves. q1: [.9 .5] t=.9 leaves. q2: [.9 .5 .1] t=.5
  # stays. q3: [.9 .7 .5 .1] t=.7 leaves. q4: [.9 .7 .5 .3 .1] t=.5 stays.
  np.testing.assert_array_equal(exits_lib.route(conf, [0.5, 1.0]),
                                [0, 0, 1, 0, 1])
  np.testing.assert_array_equal(exits_lib.route(conf, [0.0, 1.0]), [1] * 5)
  np.testing.assert_array_equal(exits_lib.route(conf, [1.0, 1.0]), [0] * 5)


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['distance', 'margin'])
@pytest.mark.parametrize('seed', [0, 1])
def test_routing_matches_the_reference(kind, seed):
  feats = _features(seed)
  ids = _ids(feats)
  dists = _dists(feats)
  conf = [exits_lib.confidences(d, *ids, kind=kind) for d in dists[:-1]]
  conf_ref = [ref.confidence(d, *ids, kind) for d in dists[:-1]]
  budgets = np.concatenate([[COSTS[0] * 0.5, COSTS[0], COSTS[-1]],
                            np.linspace(COSTS[0], COSTS[-1], 9)[1:-1]])
  spread = set()
  for b in budgets:
    pi = exits_lib.conditional(exits_lib.exit_fractions(COSTS, b))
    got = exits_lib.route(np.stack(conf, axis=1), pi)
    want = ref.route(conf_ref, ref.conditional(ref.fractions(COSTS, b)))
    np.testing.assert_array_equal(got, want)
    spread.add(len(set(got.tolist())))
  assert max(spread) == 4  # some budget uses every exit

  # The whole simulation: fractions, cost and the answer of each query from
  # its exit's distance row, ranked by the reference metrics.
  results = stream.simulate(feats, EXITS, COSTS, budgets, routing=kind)
  for b, r in zip(budgets, results):
    want = ref.route(conf_ref, ref.conditional(ref.fractions(COSTS, b)))
    assert r['budget'] == b
    counts = np.bincount(want, minlength=4)
    np.testing.assert_allclose(r['exit_fractions'], counts / len(want))
    assert r['realized_cost'] == pytest.approx(
        np.mean([COSTS[e] for e in want]))
    rows = np.stack([dists[e][q] for q, e in enumerate(want)])
    m = mref.evaluate(rows, *ids, ranks=(1,))
    assert r['rank1'] == pytest.approx(m['rank1'], abs=1e-12)
    assert r['mAP'] == pytest.approx(m['mAP'], abs=1e-6)


def test_realised_cost_tracks_the_budget():
  feats = _features(2, num_q=400)
  budgets = np.linspace(COSTS[0], COSTS[-1], 6)
  for r in stream.simulate(feats, EXITS, COSTS, budgets, routing='distance'):
    # The thresholds are estimated online, so only roughly.
    assert r['realized_cost'] == pytest.approx(r['budget'], rel=0.12)


def test_random_routing_fractions_and_determinism():
  c = np.array(COSTS, float)
  for b in (0.8e9, 1.6e9, 2.4e9):
    p = exits_lib.random_fractions(c, b)
    exit_q = exits_lib.route_random(20000, exits_lib.conditional(p), rng=3)
    got = np.bincount(exit_q, minlength=4) / exit_q.size
    np.testing.assert_allclose(got, p, atol=0.015)
    assert set(np.flatnonzero(got)) <= set(np.flatnonzero(p))
  pi = exits_lib.conditional(exits_lib.random_fractions(c, 1.6e9))
  np.testing.assert_array_equal(exits_lib.route_random(500, pi, rng=7),
                                exits_lib.route_random(500, pi, rng=7))
  assert not np.array_equal(exits_lib.route_random(500, pi, rng=7),
                            exits_lib.route_random(500, pi, rng=8))
  # An int seed is a fresh default_rng(seed): one budget's block is
  # default_rng(seed).random((Q, S)) (the anytime engine draws the same).
  np.testing.assert_array_equal(
      exits_lib.route_random(500, pi, rng=7),
      exits_lib.route_random(500, pi, rng=np.random.default_rng(7)))
  feats = _features()
  a = stream.simulate(feats, EXITS, COSTS, [1.6e9], routing='random', seed=4)
  b = stream.simulate(feats, EXITS, COSTS, [1.6e9], routing='random', seed=4)
  assert a == b


def test_random_routing_draws_fresh_uniforms_per_budget():
  """One stream seeded once: every budget draws on from it (the authors'
  np.random.seed once, main.py); re-seeding per budget would repeat the
  same uniforms at every budget and fail here."""
  feats = _features(3)
  num_q = feats['query_pids'].size
  # The same budget twice: the same fractions, different draws.
  budgets = [1.6e9, 1.6e9, 0.8e9, 2.4e9, COSTS[-1]]
  pis = [exits_lib.conditional(exits_lib.random_fractions(COSTS, b))
         for b in budgets]
  want = ref.route_random(num_q, [ref.conditional(ref.random_fractions(
      COSTS, b)) for b in budgets], seed=5)
  rng = np.random.default_rng(5)
  got = [exits_lib.route_random(num_q, pi, rng) for pi in pis]
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)
  assert not np.array_equal(got[0], got[1])
  # simulate() draws the same way: the answers of the reference's exits.
  ids = _ids(feats)
  dists = _dists(feats)
  results = stream.simulate(feats, EXITS, COSTS, budgets, routing='random',
                            seed=5)
  for r, w in zip(results, want):
    np.testing.assert_allclose(r['exit_fractions'],
                               np.bincount(w, minlength=4) / num_q)
    rows = np.stack([dists[e][q] for q, e in enumerate(w)])
    assert r['rank1'] == pytest.approx(
        mref.evaluate(rows, *ids, ranks=(1,))['rank1'], abs=1e-12)


def test_q_fractions_and_the_authors_fig8_budget():
  np.testing.assert_allclose(exits_lib.q_fractions(4, 0.5),
                             np.array([8, 4, 2, 1]) / 15, rtol=1e-15)
  np.testing.assert_array_equal(exits_lib.q_fractions(3, 1.0), [1 / 3] * 3)
  # budgeted_stream/README.md: q = 0.5 is budget 1030203460.27 with their
  # Caffe counts (budgeted_stream/main.py, FLOPs).
  flops = np.array([523568640, 1150094336, 2060915200, 2542295040], float)
  assert float(exits_lib.q_fractions(4, 0.5) @ flops) == pytest.approx(
      1030203460.27, abs=0.01)
  # eq. 3 from that budget gives back q = 0.5.
  np.testing.assert_allclose(exits_lib.exit_fractions(flops, 1030203460.2666),
                             exits_lib.q_fractions(4, 0.5), rtol=1e-6)
  for bad in (0.0, -1.0, np.inf, np.nan):
    with pytest.raises(ValueError, match='q must be positive'):
      exits_lib.q_fractions(4, bad)


def test_easy_hard_hand_made():
  # q = 0.5, 4 exits: p = [8, 4, 2, 1] / 15, pi = [8/15, 4/7, 2/3, 1].
  conf = np.array([[0.2, 9, 9], [0.9, 9, 9], [0.1, 0.4, 9], [0.5, 9, 9],
                   [0.0, 0.1, 0.7], [0.3, 9, 9], [-1, 0.8, 9],
                   [-2, 0.0, 0.2], [-3, -1, 0.1]])
  # Exit 0, thresholds at floor((n - 1) 8/15) of the descending list:
  # q0 first (leaves), q1 .9 (t .9), q2 .1 < .2 stays, q3 .5 (t .5),
  # q4 0 < .2 stays, q5 .3 (t .3), q6, q7, q8 below .2 stay. Exit 1
  # (4/7): q2 first, q4 .1 < .4 stays, q6 .8 leaves, q7 0, q8 -1 < .4 / .1
  # stay. Exit 2 (2/3): q4 first, q7 .2 < .7 and q8 .1 < .2 go on.
  exit_q, easy, hard = stream.easy_hard_exits(conf, 4)
  np.testing.assert_array_equal(exit_q, [0, 0, 1, 0, 2, 0, 1, 3, 3])
  np.testing.assert_array_equal(easy, [0, 1, 3, 5])
  np.testing.assert_array_equal(hard, [7, 8])
  want = ref.easy_hard([list(conf[:, s]) for s in range(3)], 4)
  assert (exit_q.tolist(), easy.tolist(), hard.tolist()) == want
  # On features: distance confidences, the reference end to end.
  feats = _features(1)
  ids = _ids(feats)
  dists = _dists(feats)
  conf = np.stack([exits_lib.confidences(d, *ids, kind='distance')
                   for d in dists[:-1]], 1)
  got = stream.easy_hard_exits(conf, 4)
  want = ref.easy_hard([ref.confidence(d, *ids, 'distance')
                        for d in dists[:-1]], 4)
  assert tuple(x.tolist() for x in got) == want
  assert want[1] and want[2]


def test_simulate_rejects_bad_input():
  feats = _features()
  with pytest.raises(ValueError, match='routing'):
    stream.simulate(feats, EXITS, COSTS, [1e9], routing='oracle')
  with pytest.raises(ValueError, match='4 exits but 3 costs'):
    stream.simulate(feats, EXITS, COSTS[:3], [1e9])
  with pytest.raises(ValueError, match='stage9'):
    stream.simulate(feats, ('stage1', 'stage9'), COSTS[:2], [1e9])


# ----------------------------------------------------------------------------
# The CLI, end to end.


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'dare_jax.tools.budgeted',
                         *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
  feats = _features(5, num_q=60, num_g=120)
  path = tmp_path / 'features.npz'
  np.savez(path, **feats)
  budgets = [COSTS[-1], 3e9, COSTS[0], 1e8, 1.4e9]
  costs_flag = ','.join(str(c) for c in COSTS)
  ids = _ids(feats)
  fused = metrics.evaluate_features(feats['query_fused'],
                                    feats['gallery_fused'], *ids)
  first = metrics.evaluate_features(feats['query_stage1'],
                                    feats['gallery_stage1'], *ids)
  for routing in ('distance', 'margin', 'random'):
    proc = _cli(str(path), '--exits=' + ','.join(EXITS),
                f'--costs={costs_flag}',
                '--budgets=' + ','.join(str(b) for b in budgets),
                f'--routing={routing}', '--seed=1')
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [r['budget'] for r in out] == budgets
    assert set(out[0]) == {'budget', 'exit_fractions', 'realized_cost',
                           'rank1', 'mAP'}
    for r in out[:2]:
      assert r['exit_fractions'] == [0, 0, 0, 1]
      assert r['realized_cost'] == COSTS[-1]
      assert r['rank1'] == fused['rank1']
      assert r['mAP'] == pytest.approx(fused['mAP'], abs=1e-12)
    for r in out[2:4]:
      assert r['exit_fractions'] == [1, 0, 0, 0]
      assert r['realized_cost'] == COSTS[0]
      assert r['rank1'] == first['rank1']
      assert r['mAP'] == pytest.approx(first['mAP'], abs=1e-12)
    assert COSTS[0] < out[4]['realized_cost'] < COSTS[-1]
    assert sum(out[4]['exit_fractions']) == pytest.approx(1.0)


@pytest.mark.parametrize('args,message', [
    (['--costs=1,2,3,4'], '--budgets is required'),
    (['--costs=1,2,3', '--budgets=2'], '--costs has 3 values'),
    (['--costs=1,3,2,4', '--budgets=2'], 'increase'),
    (['--costs=1,2,3,x', '--budgets=2'], 'not a comma-separated'),
    (['--costs=1,2,3,4', '--budgets=2', '--routing=oracle'], '--routing'),
    (['--costs=1,2,3,4', '--budgets=2', '--seed=x'], '--seed'),
    (['--costs=1,2', '--budgets=2', '--exits=stage1,nope'], 'nope'),
])
@pytest.mark.slow
def test_cli_bad_flags_are_one_line(tmp_path, args, message):
  path = tmp_path / 'features.npz'
  np.savez(path, **_features(num_q=10, num_g=20))
  proc = _cli(str(path), *args)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  assert message in lines[0]
  assert proc.stdout == ''


def test_cli_missing_file_is_one_line(tmp_path):
  proc = _cli(str(tmp_path / 'nope.npz'), '--costs=1,2,3,4', '--budgets=2')
  assert proc.returncode == 1
  assert proc.stderr.strip().startswith('error: Features file not found')
