"""The features-file evaluator and its CLI, against the NumPy reference."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dare_jax import errors
from dare_jax.retrieval import features
from dare_jax.retrieval import protocol as protocol_lib
from tests import metrics_reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _features(seed=0, num_q=23, num_g=97, dim=8, num_ids=9):
  """Two embeddings, with junk, distractors, same-camera matches and a
  query identity absent from the gallery."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_ids + 2, dim))
  q_pids = rng.integers(1, num_ids + 2, num_q)
  g_pids = rng.integers(-1, num_ids + 1, num_g)
  feats = {'query_pids': q_pids.astype(np.int64),
           'query_camids': rng.integers(0, 3, num_q).astype(np.int64),
           'gallery_pids': g_pids.astype(np.int64),
           'gallery_camids': rng.integers(0, 3, num_g).astype(np.int64)}
  for name, noise in (('early', 1.5), ('late', 0.5)):
    feats[f'query_{name}'] = (centres[q_pids] + noise * rng.normal(
        size=(num_q, dim))).astype(np.float32)
    feats[f'gallery_{name}'] = (centres[np.maximum(g_pids, 0)] + noise *
                                rng.normal(size=(num_g, dim))).astype(
                                    np.float32)
  return feats


def _reference(feats, name, metric='euclidean', normalize=False,
               ap='market'):
  dist = ref.pairwise_distances(feats[f'query_{name}'],
                                feats[f'gallery_{name}'], metric, normalize)
  return ref.evaluate(dist, feats['query_pids'], feats['query_camids'],
                      feats['gallery_pids'], feats['gallery_camids'], ap=ap)


@pytest.mark.parametrize('metric,normalize,ap', [
    ('euclidean', False, 'market'), ('sqeuclidean', True, 'standard'),
    ('cosine', False, 'market')])
@pytest.mark.slow
def test_every_embedding_matches_the_reference(metric, normalize, ap):
  feats = _features()
  got = protocol_lib.Protocol(metric, normalize, ap).evaluate(feats)
  assert list(got) == ['early', 'late']
  for name in got:
    want = _reference(feats, name, metric, normalize, ap)
    for key in ('rank1', 'rank5', 'rank10', 'mAP', 'mINP'):
      assert got[name][key] == pytest.approx(want[key], abs=1e-6), key
    assert got[name]['num_valid_queries'] == want['num_valid_queries']
    assert want['num_valid_queries'] < len(feats['query_pids'])


def test_schema_errors_name_the_file_and_key(tmp_path):
  feats = _features()
  bad = dict(feats)
  del bad['gallery_camids']
  with pytest.raises(errors.DataError, match='x.npz: missing gallery_camids'):
    features.check_features(bad, 'x.npz')
  bad = dict(feats, query_late=feats['query_late'][:5])
  with pytest.raises(errors.DataError, match=r'query_late must be \[23, D\]'):
    features.check_features(bad, 'x.npz')
  bad = dict(feats, gallery_late=feats['gallery_late'][:, :3])
  with pytest.raises(errors.DataError, match='D=8 but gallery_late has D=3'):
    features.check_features(bad, 'x.npz')
  nan = feats['query_early'].copy()
  nan[0, 0] = np.nan
  with pytest.raises(errors.DataError, match='query_early holds NaN'):
    features.check_features(dict(feats, query_early=nan), 'x.npz')
  only_ids = {k: feats[k] for k in features.ID_KEYS}
  with pytest.raises(errors.DataError, match='no embedding to evaluate'):
    features.check_features(only_ids, 'x.npz')
  with pytest.raises(errors.DataNotFoundError, match='nope.npz'):
    features.load_features(str(tmp_path / 'nope.npz'))
  # An exit with a query array but no gallery array is refused by name (it
  # was left out of the evaluation without a word).
  lonely = {k: v for k, v in feats.items() if k != 'gallery_late'}
  with pytest.raises(errors.DataError, match='query_late has no counterpart'):
    features.check_features(lonely, 'x.npz')
  # A truncated file is one line naming it.
  path = tmp_path / 'cut.npz'
  np.savez(path, **feats)
  path.write_bytes(path.read_bytes()[:300])
  with pytest.raises(errors.DataError, match='cut.npz'):
    features.load_features(str(path))


def test_the_file_carries_its_protocol(tmp_path):
  """features.write records the protocol; Protocol.of_run reads it back
  (and a config's other protocol is warned about, the file's kept); a file
  without one scores with the defaults."""
  feats = _features()
  proto = protocol_lib.Protocol('cosine', True, 'standard', ranks=(1, 3))
  path = str(tmp_path / 'f.npz')
  features.write(path, feats, proto)
  back = features.load_features(path)
  assert protocol_lib.Protocol.of_run(back, path) == proto
  got = protocol_lib.Protocol.of_run(back, path).evaluate(back)
  want = _reference(back, 'late', 'cosine', True, 'standard')
  assert got['late']['mAP'] == pytest.approx(want['mAP'], abs=1e-6)
  assert protocol_lib.Protocol.of_run(feats, 'old.npz') == (
      protocol_lib.Protocol())


def _cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'dare_jax.tools.evaluate_features', *args],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


@pytest.mark.slow
def test_cli_prints_one_json_object(tmp_path):
  feats = _features(seed=1)
  path = str(tmp_path / 'f.npz')
  np.savez(path, **feats)
  proc = _cli(path, '--ap=standard', '--metric=cosine')
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert set(out) == {'early', 'late'}
  for name, r in out.items():
    assert set(r) == {'rank1', 'rank5', 'rank10', 'mAP', 'mINP',
                      'num_valid_queries'}
    want = _reference(feats, name, 'cosine', False, 'standard')
    for key in ('rank1', 'rank5', 'rank10', 'mAP', 'mINP'):
      assert r[key] == pytest.approx(want[key], abs=1e-6)
  bad = _cli(str(tmp_path / 'missing.npz'))
  assert bad.returncode == 1 and bad.stdout == ''
  assert 'error: Features file not found' in bad.stderr
  assert 'Traceback' not in bad.stderr


def _reranked_reference(feats, name, k1, k2, lam):
  from dare_jax.references import authors_rerank  # pylint: disable=g-import-not-at-top
  q = feats[f'query_{name}'].astype(np.float64)
  g = feats[f'gallery_{name}'].astype(np.float64)
  dist = lambda a, b: ref.pairwise_distances(a, b, 'euclidean')
  reranked = authors_rerank.re_ranking(dist(q, g), dist(q, q), dist(g, g),
                                         k1=k1, k2=k2, lambda_value=lam)
  return ref.evaluate(reranked, feats['query_pids'], feats['query_camids'],
                      feats['gallery_pids'], feats['gallery_camids'])


@pytest.mark.slow
def test_cli_rerank_matches_the_authors_algorithm(tmp_path):
  feats = _features(seed=2, num_q=30, num_g=120)
  path = str(tmp_path / 'f.npz')
  np.savez(path, **feats)
  proc = _cli(path, '--rerank', '--k1=8', '--k2=3', '--lambda=0.2')
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  for name, r in out.items():
    want = _reranked_reference(feats, name, 8, 3, 0.2)
    for key in ('rank1', 'rank5', 'rank10', 'mAP', 'mINP'):
      assert r[key] == pytest.approx(want[key], abs=1e-6), (name, key)


def test_dataset_configs_normalise_and_report_the_unnormalised_beside():
  """Issue 14 item 1: the paper's dataset configs evaluate L2-normalised
  features as the official scripts do; metrics.json also holds the
  unnormalised ranking."""
  from configs import duke, market, mars, smoke  # pylint: disable=g-import-not-at-top
  from dare_jax import eval_mode  # pylint: disable=g-import-not-at-top
  for cfg in (market, duke, mars):
    assert cfg.get_config().eval.normalize
  feats = _features()
  # Scale the gallery rows unevenly so that normalising changes the ranking.
  rng = np.random.default_rng(5)
  for name in ('early', 'late'):
    feats[f'gallery_{name}'] *= rng.uniform(0.2, 5.0, (97, 1)).astype(
        np.float32)
  eval_cfg = market.get_config().eval
  got = eval_mode.score_features(feats, eval_cfg)
  assert set(got) == {'early', 'late', 'unnormalized'}
  for name in ('early', 'late'):
    normed, raw = (_reference(feats, name, normalize=True),
                   _reference(feats, name, normalize=False))
    assert normed['mAP'] != pytest.approx(raw['mAP'], abs=1e-3)
    for key in ('rank1', 'mAP', 'mINP'):
      assert got[name][key] == pytest.approx(normed[key], abs=1e-6)
      assert got['unnormalized'][name][key] == pytest.approx(raw[key],
                                                             abs=1e-6)
  assert 'unnormalized' not in eval_mode.score_features(
      feats, smoke.get_config().eval)
