"""The resource report of a trained DaRe: costs, anytime and budgeted-stream
curves, and the paper's Figures 3, 5, 6, 7 and 8, written next to
metrics.json (budget_report.json + PNGs).

Works from a workdir's features.npz (so from any framework's embeddings)
plus the config (costs are counted from the model it describes, images for
the retrieval figures come from its dataset). Baselines are other trained
workdirs with their configs: a sequential ensemble of TriNets.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Sequence

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax import reporting
from dare_jax.budget import anytime
from dare_jax.budget import costs as costs_lib
from dare_jax.budget import figures
from dare_jax.budget import stream
from dare_jax.data import augment
from dare_jax.data import datasets
from dare_jax.evaluation import features as features_lib
from dare_jax.evaluation import metrics as metrics_lib
from dare_jax.models import dare

REPORT = 'budget_report.json'


@dataclasses.dataclass(frozen=True)
class Baseline:
  """A trained single-embedding model: its label, config and workdir."""
  label: str
  config: Any
  workdir: str


def load_config(spec: str):
  """'path/to/config.py[:variant]' -> its get_config([variant])."""
  path, _, variant = spec.partition(':')
  if not os.path.isfile(path):
    raise errors.ConfigError(f'Config file not found: {path}')
  module_spec = importlib.util.spec_from_file_location(
      'dare_jax_baseline_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def parse_baseline(spec: str) -> Baseline:
  """'CONFIG[:VARIANT]@WORKDIR' (label: the variant or the file's name)."""
  config_spec, sep, workdir = spec.partition('@')
  if not sep or not workdir:
    raise errors.ConfigError(
        f'Baseline {spec!r}: expected CONFIG.py[:VARIANT]@WORKDIR, e.g. '
        'configs/trinet_synthetic.py:s@runs/trinet_s')
  path, _, variant = config_spec.partition(':')
  label = variant or os.path.splitext(os.path.basename(path))[0]
  return Baseline(label, load_config(config_spec), workdir)


def fusion_weights(feats) -> tuple[np.ndarray, float]:
  """(w [4], relative residual): the learnt fusion recovered from the
  embeddings themselves. fused = sum_s w_s phi_s holds per image and so for
  the TTA means, hence a least-squares fit over all items is exact up to
  float rounding (the residual says how exact); no checkpoint is needed."""
  rows = []
  for side in ('query', 'gallery'):
    rows.append((np.stack([feats[f'{side}_{e}'] for e in dare.EXITS], -1),
                 feats[f'{side}_fused']))
  a = np.concatenate([r[0].reshape(-1, len(dare.EXITS)) for r in rows])
  b = np.concatenate([r[1].reshape(-1) for r in rows])
  w, *_ = np.linalg.lstsq(a.astype(np.float64), b.astype(np.float64),
                          rcond=None)
  residual = np.linalg.norm(a @ w - b) / max(np.linalg.norm(b), 1e-30)
  return w, float(residual)


def _item_image(split, i: int, resize_hw) -> np.ndarray:
  """uint8 [H, W, 3] of evaluation item i (a tracklet's first frame)."""
  j = i
  if split.tracklets is not None:
    j = int(np.searchsorted(split.tracklets, i))
  if split.images is not None:
    return split.images[j]
  return augment.load_image(split.paths[j], resize_hw)


class _Retrieval:
  """Top-k gallery lists per exit under the evaluation protocol."""

  def __init__(self, feats, exits: Sequence[str], dataset, resize_hw):
    self.feats, self.exits = feats, list(exits)
    self.dataset, self.resize_hw = dataset, resize_hw
    self.q_pids = np.asarray(feats['query_pids'])
    self.q_cams = np.asarray(feats['query_camids'])
    self.g_pids = np.asarray(feats['gallery_pids'])
    self.g_cams = np.asarray(feats['gallery_camids'])
    self.dist = {e: np.asarray(metrics_lib.pairwise_distances(
        feats[f'query_{e}'], feats[f'gallery_{e}'])) for e in self.exits}

  def ranked(self, exit_name: str, q: int) -> np.ndarray:
    """Gallery indices by distance, junk and the query's own camera out."""
    d = self.dist[exit_name][q].astype(np.float64)
    removed = stream.removed(self.q_pids[q:q + 1], self.q_cams[q:q + 1],
                             self.g_pids, self.g_cams)[0]
    order = np.argsort(np.where(removed, np.inf, d), kind='stable')
    return order[:int(np.count_nonzero(~removed))]

  def top1_correct(self, exit_name: str) -> np.ndarray:
    """bool [Q]: the first gallery image left is a match (rank-1 hit)."""
    per_query = metrics_lib.evaluate_per_query(
        self.dist[exit_name], self.q_pids, self.q_cams, self.g_pids,
        self.g_cams)
    return per_query['first_hit_rank'] == 0

  def example(self, q: int, k: int) -> dict:
    rows = {}
    for e in self.exits:
      top = self.ranked(e, q)[:k]
      rows[e] = [(_item_image(self.dataset.gallery, int(g), self.resize_hw),
                  bool(self.g_pids[g] == self.q_pids[q]), int(self.g_pids[g]),
                  float(self.dist[e][q, g])) for g in top]
    return {'query_image': _item_image(self.dataset.query, q, self.resize_hw),
            'query_pid': int(self.q_pids[q]), 'rows': rows}


def _baseline_member(b: Baseline) -> tuple[str, int, dict]:
  path = os.path.join(b.workdir, 'features.npz')
  feats = features_lib.load_features(path)
  names = features_lib.embedding_names(feats)
  name = 'fused' if 'fused' in names else names[-1]
  metrics = features_lib.evaluate_features_file(feats, names=[name],
                                                ap=b.config.eval.ap)[name]
  cost = costs_lib.config_exit_costs(b.config)[
      'fused' if name == 'fused' else 'stage4']
  return b.label, cost, metrics


def resource_report(config, workdir: str,
                    baselines: Sequence[Baseline] = ()) -> dict:
  """Writes budget_report.json and the figures in workdir; returns the
  report. Needs workdir/features.npz (train, eval or export write it)."""
  bcfg = config.budget
  feats = features_lib.load_features(os.path.join(workdir, 'features.npz'))
  missing = [e for e in dare.EMBEDDINGS
             if e not in features_lib.embedding_names(feats)]
  if missing:
    raise errors.DataError(
        f'{workdir}/features.npz lacks {", ".join(missing)}: the resource '
        'report needs a DaRe (4 exits and the fusion), not a TriNet.')
  exit_costs = costs_lib.config_exit_costs(config)
  logging.info('Mul-Adds per exit (cumulative): %s', exit_costs)
  metrics = features_lib.evaluate_features_file(feats, ap=config.eval.ap)
  weights, residual = fusion_weights(feats)
  answers = anytime.DARE_ANSWERS
  c_s = [exit_costs[a] for a in answers]

  curves = {'DaRe': anytime.dare_curve(exit_costs, metrics)}
  if baselines:
    label = 'TriNet ensemble (' + ', '.join(b.label for b in baselines) + ')'
    curves[label] = anytime.ensemble_curve(
        [_baseline_member(b) for b in baselines])

  budgets = np.linspace(c_s[0], c_s[-1], bcfg.num_budgets).tolist()
  streams = {}
  for routing in stream.ROUTINGS:
    logging.info('Budgeted stream, %s routing, %d budgets.', routing,
                 len(budgets))
    streams[routing] = stream.simulate(feats, answers, c_s, budgets,
                                       routing=routing, seed=bcfg.seed,
                                       ap=config.eval.ap)

  # Queries for the retrieval figures.
  dataset = datasets.load_dataset(config.data)
  resize_hw = augment.resize_size(config.data.input_size,
                                  config.data.resize_factor)
  retrieval = _Retrieval(feats, answers, dataset, resize_hw)
  correct = {e: retrieval.top1_correct(e) for e in answers}
  n = bcfg.num_examples
  # Figure 7: queries the first exit gets wrong and the last gets right
  # show what depth buys; the first such queries in file order.
  fig7 = list(np.flatnonzero(~correct['stage1'] & correct['fused'])[:n])
  # Figure 8: margin routing at the middle budget; easy = left at stage 1
  # and right there, hard = only the last answer is right.
  mid = 0.5 * (c_s[0] + c_s[-1])
  conf_cols = [stream.confidences(retrieval.dist[e], retrieval.q_pids,
                                  retrieval.q_cams, retrieval.g_pids,
                                  retrieval.g_cams, kind='margin')
               for e in answers[:-1]]
  exit_q = stream.route(np.stack(conf_cols, 1), stream.conditional(
      stream.exit_fractions(c_s, mid)))
  easy = list(np.flatnonzero((exit_q == 0) & correct['stage1'])[:n])
  only_last = correct['fused'] & ~np.any(
      [correct[e] for e in answers[:-1]], axis=0)
  hard = list(np.flatnonzero(only_last)[:n])

  report = {
      'exit_costs': exit_costs,
      'metrics': {e: metrics[e] for e in dare.EMBEDDINGS},
      'fusion_weights': weights.tolist(),
      'fusion_fit_relative_residual': residual,
      'anytime': curves,
      'stream': {'exits': list(answers), 'costs': c_s, 'budgets': budgets,
                 'results': streams},
      'examples': {'rank_lists': [int(q) for q in fig7],
                   'easy': [int(q) for q in easy],
                   'hard': [int(q) for q in hard],
                   'easy_hard_budget': mid,
                   'stage1_exits_at_that_budget': int(np.sum(exit_q == 0))},
  }
  out = lambda name: os.path.join(workdir, name)
  figures.exit_errors(metrics, weights.tolist(), out('fig3_exits.png'))
  for metric, png in (('rank1', 'fig5_anytime.png'),
                      ('mAP', 'fig5_anytime_map.png')):
    figures.anytime_curve(
        {k: {'costs': v['costs'], 'names': v['names'], 'values': v[metric]}
         for k, v in curves.items()}, out(png), metric=metric)
  singles = {e: (exit_costs[e], metrics[e]['rank1'], metrics[e]['mAP'])
             for e in dare.EMBEDDINGS}
  figures.stream_curves(streams, singles, out('fig6_stream.png'))
  k = bcfg.top_k
  figures.rank_lists([retrieval.example(q, k) for q in fig7],
                     out('fig7_rank_lists.png'), k=k)
  figures.easy_hard([retrieval.example(q, 3) for q in easy],
                    [retrieval.example(q, 3) for q in hard],
                    out('fig8_easy_hard.png'), k=3)
  reporting.write_json(out(REPORT), report)
  logging.info('Wrote %s and fig3/5/6/7/8 PNGs in %s.', REPORT, workdir)
  return report


def summary_lines(report: dict) -> list[str]:
  """A few lines for the log / terminal."""
  lines = ['Mul-Adds (cumulative): ' + ', '.join(
      f'{k} {v / 1e6:.1f}M' for k, v in report['exit_costs'].items())]
  for label, c in report['anytime'].items():
    lines.append(f'anytime {label}: ' + ', '.join(
        f'{n} @{cost / 1e6:.1f}M rank1 {100 * r:.1f}'
        for n, cost, r in zip(c['names'], c['costs'], c['rank1'])))
  budgets = report['stream']['budgets']
  for routing, results in report['stream']['results'].items():
    cells = []
    for b, r in zip(budgets, results):
      rank1 = '-' if r['rank1'] is None else f'{100 * r["rank1"]:.1f}'
      cells.append(f'B {b / 1e6:.2f}M rank1 {rank1}')
    lines.append(f'stream {routing}: ' + ', '.join(cells))
  return lines


def budget_mode(config, workdir: str) -> dict:
  """--mode=budget: the report without baselines, summarised in the log."""
  result = resource_report(config, workdir)
  for line in summary_lines(result):
    logging.info('%s', line)
  return result
