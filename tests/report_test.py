"""The resource report end to end on the smoke config (tiny, seconds)."""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import market
from configs import smoke
from dare_jax import builder
from dare_jax import errors
from dare_jax import eval_mode
from dare_jax import optim
from dare_jax import train
from dare_jax.budget import costs
from dare_jax.figures import budget as figures
from dare_jax.budget import report
from dare_jax.retrieval import features as features_lib
from dare_jax.evaluation import metrics as metrics_lib
from tests import stream_reference as ref

# Its module-scoped fixtures are built once: all its tests on one xdist
# worker (.ci/run: --dist loadgroup).
pytestmark = pytest.mark.xdist_group('report')

FIGURES = ('fig3_exits.png', 'fig5_anytime.png', 'fig5_anytime_map.png',
           'fig6_stream.png', 'fig7_rank_lists.png', 'fig8_easy_hard.png')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, smoke_run):
  """The DaRe: a copy of the session's smoke run (its report is written into
  it); the TriNet baseline trained here."""
  tmp = tmp_path_factory.mktemp('runs')
  c = smoke_run.config()
  c.budget.num_budgets = 5
  out = {'dare': (c, shutil.copytree(smoke_run.workdir, str(tmp / 'dare')))}
  c = smoke_run.config()
  c.data.cache_dir = str(tmp / 'cache')
  c.model.heads, c.model.width = 'trinet', 2
  c.budget.num_budgets = 5
  train.train_and_evaluate(c, str(tmp / 'tri'))
  out['tri'] = (c, str(tmp / 'tri'))
  return out


@pytest.mark.slow
def test_report_files_and_numbers(runs):
  config, workdir = runs['dare']
  # The same TriNet twice: the ensemble's second answer costs both.
  baselines = [report.Baseline(n, *runs['tri']) for n in ('a', 'b')]
  rep = report.resource_report(config, workdir, baselines)
  for fig in FIGURES:
    with Image.open(os.path.join(workdir, fig)) as img:
      assert img.size[0] > 400
  with open(os.path.join(workdir, report.REPORT)) as f:
    saved = json.load(f)
  assert saved['exit_costs'] == costs.config_exit_costs(config)
  assert saved['costs_source'] == 'traced'
  assert 'traced' in saved['costs_note']
  # The fusion weights recovered from the features are the checkpoint's.
  state, _ = builder.restore_for_eval(builder.build(config), workdir)
  w = np.asarray(jax.device_get(state.params['fusion']))
  np.testing.assert_allclose(saved['fusion_weights'], w, rtol=1e-4,
                             atol=1e-5)
  assert saved['fusion_fit_relative_residual'] < 1e-5
  # The ensemble's answers cost the members together.
  ens = [v for k, v in saved['anytime'].items() if k != 'DaRe'][0]
  c_t = costs.config_exit_costs(runs['tri'][0])
  assert set(c_t) == {'stage4'}
  assert ens['costs'] == [c_t['stage4'], 2 * c_t['stage4']]
  dare_curve = saved['anytime']['DaRe']
  assert dare_curve['rank1'][-1] == saved['metrics']['fused']['rank1']
  # Every routing has one result per budget, from C_1 to C_4.
  budgets = saved['stream']['budgets']
  assert budgets[0] == saved['exit_costs']['stage1']
  assert budgets[-1] == saved['exit_costs']['fused']
  for results in saved['stream']['results'].values():
    assert len(results) == len(budgets)
    assert results[-1]['exit_fractions'][-1] == 1.0
  assert report.summary_lines(rep)
  assert '(cumulative, traced)' in report.summary_lines(rep)[0]
  # Figure 8: distance routing at q = 0.5; easy = left at the first exit,
  # hard = reached the last (the reference, from the features).
  feats = features_lib.load_features(os.path.join(workdir, 'features.npz'))
  ids = [feats[k] for k in features_lib.ID_KEYS]
  conf = [ref.confidence(np.asarray(metrics_lib.pairwise_distances(
      feats[f'query_{e}'], feats[f'gallery_{e}'])), *ids, 'distance')
          for e in ('stage1', 'stage2', 'stage3')]
  _, easy, hard = ref.easy_hard(conf, 4, q=0.5)
  ex = saved['examples']
  n = config.budget.num_examples
  assert (ex['easy'], ex['hard']) == (easy[:n], hard[:n])
  assert (ex['stage1_exits_at_that_budget'],
          ex['last_exits_at_that_budget']) == (len(easy), len(hard))
  assert ex['easy_hard_q'] == 0.5
  c_s = saved['stream']['costs']
  assert ex['easy_hard_budget'] == pytest.approx(
      np.dot([8, 4, 2, 1], c_s) / 15, rel=1e-12)


@pytest.mark.slow
def test_main_budget_mode_and_trinet_refusal(runs):
  config, workdir = runs['tri']
  with pytest.raises(errors.DataError, match='needs a DaRe'):
    report.resource_report(config, workdir)
  with pytest.raises(errors.ConfigError, match='CONFIG.py'):
    report.parse_baseline('configs/trinet_synthetic.py:s')
  b = report.parse_baseline('configs/trinet_synthetic.py:m@runs/x')
  assert (b.label, b.config.model.width, b.workdir) == ('m', 12, 'runs/x')
  # --mode=budget is the report without baselines.
  config, workdir = runs['dare']
  config = config.copy_and_resolve_references()
  config.budget.num_budgets = 3
  report.budget_mode(config, workdir)
  with open(os.path.join(workdir, report.REPORT)) as f:
    assert list(json.load(f)['anytime']) == ['DaRe']


def test_costs_sources():
  """Traced by default; the authors' Caffe counts (DARENet
  budgeted_stream/main.py) only for their model, without baselines."""
  c = market.get_config()
  assert report.exit_costs_of(c, 'authors') == {
      'stage1': 523568640, 'stage2': 1150094336, 'stage3': 2060915200,
      'stage4': 2542295040, 'fused': 2542295040}
  with pytest.raises(errors.ConfigError, match='no baselines'):
    report.exit_costs_of(c, 'authors', [object()])
  with pytest.raises(errors.ConfigError, match='ResNet-50 DaRe'):
    report.exit_costs_of(smoke.get_config(), 'authors')
  with pytest.raises(errors.ConfigError, match='costs_source'):
    report.exit_costs_of(c, 'caffe')
  assert 'traced' in figures.costs_caption('traced')
  assert "authors' Caffe" in figures.costs_caption('authors')
  assert figures.costs_caption(None) == ''
  with pytest.raises(ValueError, match='costs_source'):
    figures.costs_caption('guessed')


@pytest.mark.parametrize('depth', ['18', '34', '50'])
def test_trinet_config_uses_trinets_schedule(depth):
  """configs/trinet.py: triplet-reid train.py's 25k steps, Adam 3e-4,
  exponential decay to 0.001x from 15k (tf.train.exponential_decay of
  max(0, step - 15000) over 10000 steps), beta1 0.9 -> 0.5 at 15k."""
  c = report.load_config(f'configs/trinet.py:{depth}')
  assert (c.model.heads, c.model.depth) == ('trinet', int(depth))
  assert c.train.num_steps == 25000
  o = c.optim
  assert (o.eps0, o.t0, o.t1, o.decay_factor) == (3e-4, 15000, 25000, 0.001)
  assert (o.beta1, o.beta1_after_t0) == (0.9, 0.5)
  assert (c.train.P, c.train.K) == (18, 4)  # market1501_train.sh
  lr, b1 = optim.learning_rate_fn(o), optim.beta1_fn(o)
  for step in (0, 14999, 15000, 20000, 24999):
    tf_lr = 3e-4 * 0.001 ** (max(0, step - 15000) / 10000)
    assert float(lr(step)) == pytest.approx(tf_lr, rel=1e-5)
    assert float(b1(step)) == pytest.approx(0.9 if step < 15000 else 0.5)


@pytest.mark.slow
def test_report_scores_as_the_run_did(runs, tmp_path):
  """The protocol travels in features.npz: a run evaluated with
  eval.normalize=True (the dataset configs' protocol) gets a budget report
  whose fused Rank-1 and mAP at the full budget (C_4) equal its
  metrics.json's, even under a config that does not normalise; the raw
  ranking's numbers differ (so the test sees the protocol)."""
  c, workdir = runs['dare']
  run = str(tmp_path / 'run')
  shutil.copytree(workdir, run)
  normalized = ml_collections.ConfigDict(c.to_dict())
  normalized.eval.normalize = True
  # As if the run had been evaluated so: its own files, under the names the
  # report reads (--eval_name keeps the run's files; here they are replaced).
  eval_mode.evaluate_checkpoint(normalized, run, name='n')
  for stem, ext in (('metrics', 'json'), ('features', 'npz')):
    os.replace(os.path.join(run, f'{stem}_n.{ext}'),
               os.path.join(run, f'{stem}.{ext}'))
  with open(os.path.join(run, 'metrics.json')) as f:
    metrics = json.load(f)
  data = report.compute_report(c, run)  # c: eval.normalize=False
  for routing, results in data.report['stream']['results'].items():
    full = results[-1]
    assert full['exit_fractions'][-1] == 1.0, routing
    assert full['rank1'] == pytest.approx(metrics['fused']['rank1'], abs=1e-9)
    assert full['mAP'] == pytest.approx(metrics['fused']['mAP'], abs=1e-9)
  raw = metrics['unnormalized']['fused']
  assert (raw['rank1'], raw['mAP']) != (metrics['fused']['rank1'],
                                        metrics['fused']['mAP'])
