"""The resource report of a trained DaRe: costs, anytime and budgeted-stream
curves, and the paper's Figures 3, 5, 6, 7 and 8, written next to
metrics.json (budget_report.json + PNGs).

Works from a workdir's features.npz (so from any framework's embeddings)
plus the config (costs are counted from the model it describes, images for
the retrieval figures come from its dataset). Baselines are other trained
workdirs with their configs: a sequential ensemble of TriNets.

Costs (COSTS_SOURCES; budget_report.json's "costs_source" and the captions
of Figures 5 and 6 say which): 'traced' (the default) counts the Mul-Adds
of the traced model (dare_jax/budget/costs.py); 'authors' takes the DaRe
authors' Caffe counts of a ResNet-50 DaRe at 256x128 (AUTHORS_EXIT_COSTS),
only for that model and without baselines (the authors give no counts for
the ResNet-18 / -34 TriNets).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Sequence

from absl import logging
import numpy as np

from dare_jax import checkpointing
from dare_jax import errors
from dare_jax import fileio
from dare_jax import reporting
from dare_jax.budget import curves as curves_lib
from dare_jax.budget import costs as costs_lib
from dare_jax.budget import stream
from dare_jax.data import datasets
from dare_jax.data import spec as spec_lib
from dare_jax.figures import budget as figures
from dare_jax.figures import common
from dare_jax.models import dare
from dare_jax.retrieval import exits as exits_lib
from dare_jax.retrieval import features as features_lib
from dare_jax.retrieval import protocol as protocol_lib

REPORT = 'budget_report.json'

COSTS_SOURCES = ('traced', 'authors')
# The authors' Mul-Adds (MACCs, counted with netscope on the Caffe
# ResNet-50 at 256x128) of stage 1, 2, 3 and the fusion: DARENet
# budgeted_stream/main.py, FLOPs (line 18). They give no separate stage-4
# count; stage4 gets the fusion's (the weighted sum adds 4 x 128).
AUTHORS_EXIT_COSTS = {'stage1': 523_568_640, 'stage2': 1_150_094_336,
                      'stage3': 2_060_915_200, 'stage4': 2_542_295_040,
                      'fused': 2_542_295_040}
AUTHORS_COSTS_CITE = 'DARENet budgeted_stream/main.py, FLOPs (netscope)'


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


def _example(retrievals, exits: Sequence[str], dataset, resize_hw, q: int,
             k: int) -> dict:
  """A query of a ranked-list figure: its image and each exit's top k."""
  any_exit = retrievals[exits[0]]
  q_pid = any_exit.q_pids[q]
  rows = {}
  for e in exits:
    r = retrievals[e]
    rows[e] = [(common.item_image(dataset.gallery, int(g), resize_hw),
                bool(r.g_pids[g] == q_pid), int(r.g_pids[g]),
                float(r.dist_QxG[q, g])) for g in r.ranked(q)[:k]]
  return {'query_image': common.item_image(dataset.query, q, resize_hw),
          'query_pid': int(q_pid), 'rows': rows}


def _baseline_member(b: Baseline) -> tuple[str, int, dict]:
  path = fileio.join(b.workdir, 'features.npz')
  feats = features_lib.load_features(path)
  names = features_lib.embedding_names(feats)
  name = 'fused' if 'fused' in names else names[-1]
  proto = protocol_lib.Protocol.of_run(feats, path, b.config.eval)
  metrics = proto.evaluate(feats, [name])[name]
  cost = costs_lib.config_exit_costs(b.config)[
      'fused' if name == 'fused' else 'stage4']
  return b.label, cost, metrics


def _authors_costs_apply(config) -> bool:
  m = config.model
  return (m.backbone == 'resnet' and int(m.depth) == 50 and
          int(m.width) == 64 and m.heads == 'dare' and
          int(m.head_hidden) == 1024 and int(m.embedding_dim) == 128 and
          tuple(int(v) for v in config.data.input_size) == (256, 128))


def exit_costs_of(config, costs_source: str, baselines=()) -> dict[str, int]:
  """The cumulative Mul-Adds per exit of config.model from costs_source
  ('traced' or 'authors'); ConfigError where the authors' do not apply."""
  if costs_source not in COSTS_SOURCES:
    raise errors.ConfigError(f'costs_source={costs_source!r}: use one of '
                             f'{", ".join(COSTS_SOURCES)}.')
  if costs_source == 'traced':
    return costs_lib.config_exit_costs(config)
  if not _authors_costs_apply(config):
    raise errors.ConfigError(
        "costs_source='authors': the authors' Mul-Add counts "
        f'({AUTHORS_COSTS_CITE}) are for a ResNet-50 DaRe (width 64, heads '
        '1024 -> 128) at 256x128 only; use the traced costs for this model.')
  if baselines:
    raise errors.ConfigError(
        "costs_source='authors' takes no baselines: the authors give no "
        'Mul-Add counts for the ensemble\'s ResNet-18 / -34 TriNets, and '
        'traced baseline costs beside their counts would mix two ways of '
        'counting; use the traced costs.')
  return dict(AUTHORS_EXIT_COSTS)


@dataclasses.dataclass(frozen=True)
class ReportData:
  """What compute_report finds: the JSON report and the figures' inputs."""
  report: dict  # budget_report.json
  metrics: dict  # {embedding: evaluate_ranking's dict} (Figure 3)
  rank_lists: list  # Figure 7: one example dict per query, top_k each
  easy: list  # Figure 8, 3 per row
  hard: list
  top_k: int


def compute_report(config, workdir: str,
                   baselines: Sequence[Baseline] = (),
                   costs_source: str | None = None) -> ReportData:
  """The resource report of workdir/features.npz (train, eval or export
  write it); writes nothing. Each exit's retrieval is computed once and
  shared by the metrics, the stream and the figures' examples.
  costs_source: 'traced' or 'authors' (module docstring); None reads
  config.budget.costs_source."""
  bcfg = config.budget
  if costs_source is None:
    costs_source = bcfg.costs_source
  path = fileio.join(workdir, 'features.npz')
  feats = features_lib.load_features(path)
  missing = [e for e in dare.EMBEDDINGS
             if e not in features_lib.embedding_names(feats)]
  if missing:
    raise errors.DataError(
        f'{workdir}/features.npz lacks {", ".join(missing)}: the resource '
        'report needs a DaRe (4 exits and the fusion), not a TriNet.')
  # The dataset the figures draw from, checked against the file first.
  dataset = datasets.load_dataset(config.data)
  for side in ('query', 'gallery'):
    split, ids = getattr(dataset, side), feats[f'{side}_pids']
    if split.num_items != len(ids) or not np.array_equal(
        split.item_ids()[0], ids):
      raise errors.DataError(
          f'{path} holds {len(ids)} {side} items, not those of the '
          f'{dataset.name!r} {side} split this config reads '
          f'({split.num_items}): report the run with the config it was '
          'evaluated with.')
  exit_costs = exit_costs_of(config, costs_source, baselines)
  logging.info('Mul-Adds per exit (cumulative, %s): %s', costs_source,
               exit_costs)
  retrievals = stream.exit_retrievals(
      feats, dare.EMBEDDINGS,
      protocol_lib.Protocol.of_run(feats, path, config.eval))
  metrics = {}
  for e in dare.EMBEDDINGS:
    metrics[e] = retrievals[e].summary()
    protocol_lib.log_metrics(e, metrics[e])
  weights, residual = fusion_weights(feats)
  answers = curves_lib.DARE_ANSWERS
  c_s = [exit_costs[a] for a in answers]

  curves = {'DaRe': curves_lib.dare_curve(exit_costs, metrics)}
  if baselines:
    label = 'TriNet ensemble (' + ', '.join(b.label for b in baselines) + ')'
    curves[label] = curves_lib.ensemble_curve(
        [_baseline_member(b) for b in baselines])

  budgets = np.linspace(c_s[0], c_s[-1], bcfg.num_budgets).tolist()
  answer_retrievals = [retrievals[a] for a in answers]
  streams = {}
  for routing in exits_lib.ROUTINGS:
    logging.info('Budgeted stream, %s routing, %d budgets.', routing,
                 len(budgets))
    streams[routing] = stream.simulate_retrievals(
        answer_retrievals, c_s, budgets, routing=routing, seed=bcfg.seed)

  # Queries for the retrieval figures.
  resize_hw = spec_lib.ImageSize.from_data_config(config.data).resize_hw
  correct = {e: retrievals[e].top1_correct() for e in answers}
  n = bcfg.num_examples
  # Figure 7: queries the first exit gets wrong and the last gets right
  # show what depth buys; the first such queries in file order.
  fig7 = list(np.flatnonzero(~correct['stage1'] & correct['fused'])[:n])
  # Figure 8, as the authors pick them (budgeted_stream/README.md: the exit
  # history of distance routing at q = 0.5): easy = left at the first exit,
  # hard = went on to the last; the first n of each in stream order.
  q_fig8 = stream.EASY_HARD_Q
  conf_cols = [retrievals[e].confidences(stream.EASY_HARD_ROUTING)
               for e in answers[:-1]]
  _, easy_all, hard_all = stream.easy_hard_exits(
      np.stack(conf_cols, 1), len(answers), q_fig8)
  p_fig8 = exits_lib.q_fractions(len(answers), q_fig8)
  easy, hard = list(easy_all[:n]), list(hard_all[:n])

  report = {
      'costs_source': costs_source,
      'costs_note': (
          'Mul-Adds traced from the model (dare_jax/budget/costs.py); the '
          "authors' Caffe counts are the 'authors' option (ResNet-50 DaRe "
          'at 256x128 only)' if costs_source == 'traced' else
          f"the authors' Caffe counts ({AUTHORS_COSTS_CITE}); stage4 = "
          'fused (they give no stage-4 count)'),
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
                   'easy_hard_rule': (
                       f'{stream.EASY_HARD_ROUTING} routing at q = '
                       f'{q_fig8:g} (p_s ~ q^(s-1)); easy: left at the '
                       'first exit, hard: went on to the last; the first '
                       'of each in stream order'),
                   'easy_hard_q': q_fig8,
                   'easy_hard_exit_fractions': p_fig8.tolist(),
                   'easy_hard_budget': float(p_fig8 @ np.asarray(
                       c_s, np.float64)),
                   'stage1_exits_at_that_budget': int(easy_all.size),
                   'last_exits_at_that_budget': int(hard_all.size)},
  }
  k = bcfg.top_k
  example = lambda q, k: _example(retrievals, answers, dataset, resize_hw,
                                  q, k)
  return ReportData(report=report, metrics=metrics,
                    rank_lists=[example(q, k) for q in fig7],
                    easy=[example(q, 3) for q in easy],
                    hard=[example(q, 3) for q in hard], top_k=k)


def write_report(data: ReportData, workdir: str) -> dict:
  """Writes the figures and budget_report.json in workdir; returns the
  report."""
  report, metrics = data.report, data.metrics
  exit_costs, curves = report['exit_costs'], report['anytime']
  out = lambda name: fileio.join(workdir, name)
  figures.exit_errors(metrics, report['fusion_weights'],
                      out('fig3_exits.png'))
  source = report.get('costs_source', 'traced')
  for metric, png in (('rank1', 'fig5_anytime.png'),
                      ('mAP', 'fig5_anytime_map.png')):
    figures.anytime_curve(
        {k: {'costs': v['costs'], 'names': v['names'], 'values': v[metric]}
         for k, v in curves.items()}, out(png), metric=metric,
        costs_source=source)
  singles = {e: (exit_costs[e], metrics[e]['rank1'], metrics[e]['mAP'])
             for e in dare.EMBEDDINGS}
  figures.stream_curves(report['stream']['results'], singles,
                        out('fig6_stream.png'), costs_source=source)
  figures.rank_lists(data.rank_lists, out('fig7_rank_lists.png'),
                     k=data.top_k)
  ex = report['examples']
  figures.easy_hard(
      data.easy, data.hard, out('fig8_easy_hard.png'), k=3,
      rule=(f'{ex["easy_hard_rule"]} (B = {ex["easy_hard_budget"]:.4g} '
            f'Mul-Adds; {ex["stage1_exits_at_that_budget"]} easy, '
            f'{ex["last_exits_at_that_budget"]} hard)'))
  reporting.write_json(out(REPORT), report)
  logging.info('Wrote %s and fig3/5/6/7/8 PNGs in %s.', REPORT, workdir)
  return report


def resource_report(config, workdir: str,
                    baselines: Sequence[Baseline] = (),
                    costs_source: str | None = None) -> dict:
  """compute_report, then write_report: the figures and budget_report.json
  in workdir; returns the report."""
  return write_report(
      compute_report(config, workdir, baselines, costs_source), workdir)


def summary_lines(report: dict) -> list[str]:
  """A few lines for the log / terminal."""
  source = report.get('costs_source', 'traced')
  lines = [f'Mul-Adds (cumulative, {source}): ' + ', '.join(
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


def check_run(config, workdir: str) -> None:
  """Before any work: the config is the run's (its model, for the costs;
  its dataset, for the figures' images). A workdir without checkpoints
  (features from elsewhere) is taken as it is."""
  meta = checkpointing.latest_meta(workdir)
  if meta is None:
    return
  checkpointing.check_fingerprint(meta, config.model, workdir)
  trained_on = meta.get('dataset')
  if trained_on and trained_on != config.data.dataset:
    raise errors.ConfigError(
        f'{workdir} was trained on {trained_on!r}; this config reads '
        f'{config.data.dataset!r}: --mode=budget reports the run with its '
        'own config (the features.npz and figures are of its dataset).')


def budget_mode(config, workdir: str) -> dict:
  """--mode=budget: the report without baselines, summarised in the log."""
  path = fileio.join(workdir, 'features.npz')
  if not fileio.isfile(path):
    raise errors.DataNotFoundError(
        f'--mode=budget reads {path}, which does not exist: train first '
        '(--mode=train writes it) or write it from a trained checkpoint '
        'with --mode=export.')
  check_run(config, workdir)
  result = resource_report(config, workdir)
  for line in summary_lines(result):
    logging.info('%s', line)
  return result
