"""The resource report end to end on the smoke config (tiny, seconds)."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import smoke
from dare_jax import builder
from dare_jax import errors
from dare_jax import train
from dare_jax.budget import costs
from dare_jax.budget import report

FIGURES = ('fig3_exits.png', 'fig5_anytime.png', 'fig5_anytime_map.png',
           'fig6_stream.png', 'fig7_rank_lists.png', 'fig8_easy_hard.png')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('runs')
  out = {}
  for name, heads, width in (('dare', 'dare', 4), ('tri', 'trinet', 2)):
    c = smoke.get_config()
    c.data.cache_dir = str(tmp / 'cache')
    c.model.heads, c.model.width = heads, width
    c.train.num_steps = 4
    c.budget.num_budgets = 5
    train.train_and_evaluate(c, str(tmp / name))
    out[name] = (c, str(tmp / name))
  return out


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
