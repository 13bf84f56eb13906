"""End to end: train, checkpoint, resume, evaluate, export, and bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import default
from configs import smoke
from dare_jax import builder
from dare_jax import checkpointing
from dare_jax import configlib
from dare_jax import errors
from dare_jax import eval_mode
from dare_jax.data import datasets
from dare_jax import train
from tests import metrics_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDINGS = ('stage1', 'stage2', 'stage3', 'stage4', 'fused')


def _smoke(tmp_path, **train_overrides):
  c = smoke.get_config()
  c.data.cache_dir = str(tmp_path / 'cache')
  for k, v in train_overrides.items():
    c.train[k] = v
  return c


def _final_params(config, workdir):
  state, meta = builder.restore_for_eval(builder.build(config), workdir)
  return jax.device_get(state.params), meta


@pytest.mark.slow
def test_train_writes_metrics_that_match_an_independent_evaluation(
    smoke_run, tmp_path):
  config, workdir, results = (smoke_run.config(), smoke_run.workdir,
                              smoke_run.results)
  with open(os.path.join(workdir, 'metrics.json')) as f:
    metrics = json.load(f)
  assert set(metrics) == set(EMBEDDINGS) | {'train_loss'}
  assert set(metrics['train_loss']) == set(EMBEDDINGS)
  feats = np.load(os.path.join(workdir, 'features.npz'))
  for what in ('query', 'gallery'):
    assert feats[f'{what}_pids'].dtype == np.int64
    assert feats[f'{what}_camids'].dtype == np.int64
    n = len(feats[f'{what}_pids'])
    for name in EMBEDDINGS:
      arr = feats[f'{what}_{name}']
      assert arr.dtype == np.float32 and arr.shape == (
          n, config.model.embedding_dim)
  for name in EMBEDDINGS:
    ref = metrics_reference.evaluate(
        metrics_reference.pairwise_distances(
            feats[f'query_{name}'], feats[f'gallery_{name}'], 'euclidean'),
        feats['query_pids'], feats['query_camids'], feats['gallery_pids'],
        feats['gallery_camids'], ranks=(1, 5, 10), ap='market')
    for k in ('rank1', 'rank5', 'rank10', 'mAP'):
      assert 0.0 <= metrics[name][k] <= 1.0
      np.testing.assert_allclose(metrics[name][k], ref[k], atol=1e-6)
    assert metrics[name]['num_valid_queries'] == ref['num_valid_queries']
  assert results['fused'] == metrics['fused']
  for png in ('training.png', 'exits.png', 'ranked_lists.png'):
    assert os.path.getsize(os.path.join(workdir, png)) > 1000

  # --mode=eval restores the checkpoint and reproduces the numbers (in a
  # copy: the shared run is read only).
  again = eval_mode.evaluate_checkpoint(
      config, shutil.copytree(workdir, str(tmp_path / 'again')))
  for name in EMBEDDINGS:
    np.testing.assert_allclose(again[name]['mAP'], metrics[name]['mAP'],
                               atol=1e-6)
  assert again['train_loss'] == metrics['train_loss']


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path):
  full = _smoke(tmp_path, num_steps=4)
  train.train_and_evaluate(full, str(tmp_path / 'full'))
  half = _smoke(tmp_path, num_steps=2)
  train.train_and_evaluate(half, str(tmp_path / 'split'))
  train.train_and_evaluate(full, str(tmp_path / 'split'))  # 2 -> 4
  p_full, meta_full = _final_params(full, str(tmp_path / 'full'))
  p_split, meta_split = _final_params(full, str(tmp_path / 'split'))
  for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_split)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert meta_full['train_loss'] == pytest.approx(meta_split['train_loss'],
                                                  rel=1e-6)
  with open(tmp_path / 'split' / 'metrics.json') as f:
    assert json.load(f)['train_loss'] == pytest.approx(
        meta_full['train_loss'], rel=1e-6)


def _main(workdir, *args, config='configs/smoke.py'):
  return [sys.executable, '-m', 'dare_jax.main', f'--config={config}',
          f'--workdir={workdir}', *args]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_from_the_last_checkpoint(tmp_path):
  workdir = tmp_path / 'run'
  cmd = _main(workdir, '--config.train.num_steps=200',
              '--config.train.checkpoint_every=20',
              '--config.train.log_every=20',
              f'--config.data.cache_dir={tmp_path / "cache"}')
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt = workdir / 'checkpoints'
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    done = [d for d in (os.listdir(ckpt) if ckpt.exists() else [])
            if d.isdigit()]
    if done:
      break
    time.sleep(0.2)
  assert proc.poll() is None, 'training ended before it could be killed'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / 'metrics.json').exists()
  rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         timeout=400)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  resumed = [l for l in rerun.stderr.splitlines() if 'Resuming from' in l]
  assert resumed, rerun.stderr[-3000:]
  step = int(resumed[0].rsplit('step ', 1)[1].rstrip('.'))
  assert 20 <= step < 200 and step % 20 == 0
  assert (workdir / 'metrics.json').exists()
  assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())[-1] == 200


def test_unknown_config_field_is_named():
  c = smoke.get_config()
  c.train.num_step = 3  # typo of num_steps
  with pytest.raises(errors.ConfigError, match='train.num_step.*num_steps'):
    configlib.validate(c)


@pytest.mark.slow
def test_unknown_override_on_the_command_line_fails_cleanly(tmp_path):
  r = subprocess.run(_main(tmp_path, '--config.train.num_step=3'), cwd=REPO,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert 'num_step' in r.stderr


@pytest.mark.slow
def test_missing_data_root_and_unimplemented_reader(tmp_path):
  c = default.get_config()
  c.data.root = str(tmp_path / 'nope')
  with pytest.raises(errors.DataNotFoundError, match='nope'):
    datasets.load_dataset(c.data)
  r = subprocess.run(
      _main(tmp_path / 'w', f'--config.data.root={tmp_path}',
            config='configs/market.py'),
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 1
  assert 'error:' in r.stderr and 'Traceback' not in r.stderr


def test_empty_split_is_refused(tmp_path, monkeypatch):
  from dare_jax.data.types import ReidDataset, Split  # pylint: disable=g-import-not-at-top
  empty = Split(pids=np.zeros(0, np.int64), camids=np.zeros(0, np.int64),
                images=np.zeros((0, 36, 18, 3), np.uint8))
  monkeypatch.setattr(datasets, '_load',
                      lambda cfg: ReidDataset('empty', empty, empty, empty))
  with pytest.raises(errors.DataError, match='train split.*empty'):
    datasets.load_dataset(smoke.get_config().data, nonempty=('train',))


@pytest.mark.slow
def test_workdir_of_a_different_model_is_refused(tmp_path, smoke_run):
  workdir = shutil.copytree(smoke_run.workdir, str(tmp_path / 'run'))
  other = smoke_run.config()
  other.model.width = 8
  with pytest.raises(checkpointing.WrongModelError, match='model.width'):
    eval_mode.evaluate_checkpoint(other, workdir)
  with pytest.raises(checkpointing.WrongModelError, match='model.width'):
    train.train_and_evaluate(other, workdir)


@pytest.mark.slow
def test_trinet_trains_and_reports_its_one_embedding(tmp_path):
  config = _smoke(tmp_path, num_steps=2)
  config.model.heads = 'trinet'
  config.train.profile_steps = 1  # train.profile_steps: a trace of step 2
  results = train.train_and_evaluate(config, str(tmp_path / 'trinet'))
  traces = [f for _, _, fs in os.walk(tmp_path / 'trinet' / 'profile')
            for f in fs if f.endswith('.xplane.pb')]
  assert len(traces) == 1
  assert set(results) == {'stage4', 'train_loss'}
  assert set(results['train_loss']) == {'stage4'}
  feats = np.load(tmp_path / 'trinet' / 'features.npz')
  assert sorted(k for k in feats.files if k.startswith('query_')) == [
      'query_camids', 'query_pids', 'query_stage4']


@pytest.mark.slow
def test_eval_with_rerank_reports_both_rankings(tmp_path, smoke_run):
  config = smoke_run.config()
  workdir = shutil.copytree(smoke_run.workdir, str(tmp_path / 'rr'))
  config.eval.rerank = True
  config.eval.k1, config.eval.k2 = 6, 2
  results = eval_mode.evaluate_checkpoint(config, workdir)
  with open(os.path.join(workdir, 'metrics.json')) as f:
    saved = json.load(f)
  assert set(saved) == set(EMBEDDINGS) | {'train_loss', 'rerank'}
  assert set(saved['rerank']) == set(EMBEDDINGS)
  # The re-ranked figures are those of the shared features-file evaluator
  # (tests/evaluate_features_test.py checks it against the authors' code).
  # pylint: disable=g-import-not-at-top
  from dare_jax.retrieval import features as features_lib
  from dare_jax.retrieval import protocol as protocol_lib
  # pylint: enable=g-import-not-at-top
  feats = features_lib.load_features(os.path.join(workdir, 'features.npz'))
  want = protocol_lib.Protocol(k1=6, k2=2, lambda_value=0.3).evaluate(
      feats, reranked=True)
  for name in EMBEDDINGS:
    assert saved['rerank'][name]['mAP'] == pytest.approx(
        want[name]['mAP'], abs=1e-9)
    assert results['rerank'][name]['rank1'] == want[name]['rank1']
