r"""Benchmark: the wall-clock time real early exit saves (inference/engine).

  python -m dare_jax.bench.early_exit --config=configs/market.py \
      [--batch=1,8] [--budgets=0.25,0.5,0.75] [--routing=margin] \
      [--queries=64] [--gallery=1000] [--runtime=jax,onnx] [--json=PATH]

The model is built from the config with random weights (time does not depend
on them; accuracy needs a trained bundle: tools/stream reports it). A gallery
of --gallery random embeddings per exit (random person and camera ids) stays
on the device; --queries random images stream through the AnytimeEngine in
micro-batches of --batch, after warm-up (every bucket compiled). Budgets
are fractions of the way from C_1 to C_4 (0.5 = halfway), or Mul-Adds when
above 1.

Per budget and batch size: the realised ms per query (everything from the
batch's first stage to its last answer: stage compute, confidences, host
round trips, routing, compaction), the full forward's ms per query at the
same batch (the jitted forward and the fused exit's answer: distances and
top-K), the Mul-Add-predicted saving 1 - realised cost / C_4, the saving
the measured stage times predict (each stage jitted alone at this batch:
what the exits cost in time rather than Mul-Adds, before any routing or
compaction) and the realised saving 1 - ms / full ms, and where the
engine's time went. Modes: 'batch' (AnytimeEngine.process: a micro-batch's
survivors continue together, in smaller buckets) and 'queued' (submit /
flush: survivors wait until max_batch of them fill the next stage).
"""

from __future__ import annotations

import dataclasses
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from dare_jax import bench
from dare_jax import console
from dare_jax import errors
from dare_jax import reporting
from dare_jax.bench import latency
from dare_jax.budget import costs as costs_lib
from dare_jax.inference import engine as engine_lib
from dare_jax.inference import bundle as bundle_lib
from dare_jax.models import dare

FLAGS = flags.FLAGS


def define_flags() -> None:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                  lock_config=True)
  flags.DEFINE_string('batch', '1,8', 'Micro-batch sizes, comma-separated.')
  flags.DEFINE_string('budgets', '0.25,0.5,0.75', 'Fractions from C_1 to '
                      'C_4 (or Mul-Adds when > 1), comma-separated.')
  flags.DEFINE_string('routing', 'margin', 'Who leaves early: margin, '
                      'distance or random (with --bundle a comma list).')
  flags.DEFINE_integer('queries', 64, 'Queries streamed per measurement.')
  flags.DEFINE_integer('gallery', 1000, 'Gallery size.')
  flags.DEFINE_integer('repeats', 3, 'Passes over the queries (median).')
  flags.DEFINE_string('modes', ','.join(MODES), 'batch: each micro-batch\'s '
                      'survivors continue together (process); queued: '
                      'survivors wait until they fill a batch (submit).')
  flags.DEFINE_string('runtime', 'jax', 'jax and/or onnx (the stages in '
                      'onnxruntime, one ONNX model each), comma-separated.')
  flags.DEFINE_string('json', '', 'Also write the results here.')
  flags.DEFINE_string('bundle', '', 'A trained bundle (tools/export_bundle): '
                      'time AND accuracy on the config\'s real test queries '
                      'against --features\' gallery (run_real).')
  flags.DEFINE_string('features', '', 'With --bundle: the run\'s features.npz '
                      '(its gallery embeddings and ids).')
  flags.DEFINE_string('figure', '', 'With --bundle: write the time/accuracy '
                      'figure (batch 1 of the first runtime) here.')
  flags.mark_flags_as_required(['config'])


def _ints(flag, text) -> list[int]:
  try:
    out = [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise errors.ConfigError(f'--{flag}={text!r}: not integers.') from None
  if not out or min(out) < 1:
    raise errors.ConfigError(f'--{flag}={text!r}: positive integers.')
  return out


def _choices(flag: str, text: str, allowed) -> tuple[str, ...]:
  out = tuple(m.strip() for m in text.split(',') if m.strip())
  bad = [m for m in out if m not in allowed]
  if bad or not out:
    raise errors.ConfigError(f'--{flag}={text!r}: use a comma list of '
                             f'{", ".join(allowed)}.')
  return out


def _floats(flag, text) -> list[float]:
  try:
    out = [float(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise errors.ConfigError(f'--{flag}={text!r}: not numbers.') from None
  if not out:
    raise errors.ConfigError(f'--{flag} is empty.')
  return out


MODES = ('batch', 'queued')


RUNTIMES = ('jax', 'onnx')


def run(config, batches, budgets, routing='margin', num_queries=64,
        num_gallery=1000, repeats=3, modes=MODES,
        runtimes=('jax',)) -> list[dict]:
  model = dare.from_config(config.model)
  if model.trinet:
    raise errors.ConfigError('A TriNet has one exit: use a DaRe config.')
  h, w = config.data.input_size
  rng = np.random.default_rng(0)
  x = rng.normal(size=(num_queries, h, w, 3)).astype(np.float32)
  variables = jax.jit(lambda: model.init(jax.random.key(0),
                                         jnp.asarray(x[:1])))()
  exit_costs = costs_lib.exit_costs(model, (h, w))
  costs = [exit_costs[e] for e in engine_lib.EXITS]
  d = model.embedding_dim
  gallery = {e: rng.normal(size=(num_gallery, d)).astype(np.float32)
             for e in engine_lib.EXITS}
  g_pids = rng.integers(1, max(2, num_gallery // 4), num_gallery)
  g_camids = rng.integers(0, 6, num_gallery)
  q_pids = rng.integers(1, max(2, num_gallery // 4), num_queries)
  q_camids = rng.integers(0, 6, num_queries)
  g_dev = {e: jnp.asarray(a) for e, a in gallery.items()}
  gp, gc = jnp.asarray(g_pids, jnp.int32), jnp.asarray(g_camids, jnp.int32)
  rows = []
  for runtime, batch in [(r, b) for r in runtimes for b in batches]:
    starts = range(0, num_queries, batch)
    if runtime == 'onnx':
      logging.info('exporting the full forward and the 4 stages to ONNX')
      fwd = bundle_lib.onnx_forward(bundle_lib.onnx_session(
          bundle_lib.export_onnx(model, variables, (h, w))))
      full = lambda v, x: fwd(x)['fused']
      runner = engine_lib.OnnxStageRunner(model, variables, (h, w), batch)
    else:
      full = jax.jit(lambda v, x: model.apply(v, x, train=False)['fused'])
      runner = engine_lib.StageRunner(model, variables, batch)  # compiled once

    def full_pass():
      for lo in starts:
        xb = x[lo:lo + batch]
        emb = full(variables, xb)
        jax.block_until_ready(engine_lib._exit_stats(  # pylint: disable=protected-access
            emb, g_dev['fused'], jnp.asarray(q_pids[lo:lo + batch], jnp.int32),
            jnp.asarray(q_camids[lo:lo + batch], jnp.int32), gp, gc, 10))
    full_pass()  # compile
    full_s = _median_seconds(full_pass, repeats)
    stage_ms = _stage_times(runner, x[:batch], repeats)
    for b, mode in [(b, m) for b in budgets for m in modes]:
      budget = costs[0] + b * (costs[-1] - costs[0]) if b <= 1 else b
      times, engine = [], None
      for _ in range(repeats):
        engine = engine_lib.AnytimeEngine(
            model, variables, gallery, g_pids, g_camids, costs,
            routing=routing, budget=budget, topk=10, max_batch=batch,
            runner=runner)
        engine.warmup((h, w))
        engine.timing.clear()
        t0 = time.perf_counter()
        answers = []
        step = engine.process if mode == 'batch' else engine.submit
        for lo in starts:
          answers += step(x[lo:lo + batch], q_pids[lo:lo + batch],
                          q_camids[lo:lo + batch])
        if mode == 'queued':
          answers += engine.flush()
        times.append(time.perf_counter() - t0)
      exit_q = np.array([a.exit for a in answers])
      realized_cost = float(np.mean(np.asarray(costs)[exit_q]))
      ms = 1e3 * float(np.median(times)) / num_queries
      full_ms = 1e3 * full_s / num_queries
      predicted = 1 - realized_cost / costs[-1]
      realized = 1 - ms / full_ms
      # What the measured stage times predict (no routing, no compaction):
      # query q costs the stages up to its exit, at this batch size.
      cum_ms = np.cumsum(stage_ms)
      time_predicted = 1 - float(np.mean(cum_ms[exit_q])) / cum_ms[-1]
      total = sum(engine.timing.values()) or 1.0
      rows.append({
          'budget': float(budget), 'budget_fraction': float(
              (budget - costs[0]) / (costs[-1] - costs[0])),
          'batch': batch, 'mode': mode, 'routing': routing,
          'runtime': runtime,
          'mean_latency_ms': float(np.mean([a.latency_ms for a in answers])),
          'exit_fractions': (np.bincount(exit_q, minlength=len(costs)) /
                             len(exit_q)).tolist(),
          'predicted_saving': predicted, 'realized_saving': realized,
          'time_predicted_saving': time_predicted,
          'stage_ms_per_image': [float(t) for t in stage_ms],
          'realized_over_predicted': realized / predicted if predicted
                                     else None,
          'ms_per_query': ms, 'full_ms_per_query': full_ms,
          'images_per_s': 1e3 / ms, 'full_images_per_s': 1e3 / full_ms,
          'rank1': None,  # random weights: time only
          'time_split': {k: v / total for k, v in engine.timing.items()},
      })
  return rows


def run_real(config, bundle_path: str, features_path: str, batches, budgets,
             routings=('margin', 'distance', 'random'), repeats: int = 1,
             runtimes=('jax',), num_queries: int = 0) -> dict:
  """The engine on a trained model and its real test queries: the bundle's
  model, the run's gallery embeddings (features.npz: 10-view TTA, as the
  run's evaluation) and the dataset's query images, each one view (the
  whole image resized, as tools/stream), ranked under the bundle's protocol
  (metric, normalisation, AP).

  Returns {'rows': per (runtime, batch, routing, budget): Rank-1, mAP,
  ms/query, exit fractions; 'exits': per (runtime, batch) each exit alone
  (stages 1..s and its answer for every query) and the full forward: Rank-1,
  mAP, ms/query}. num_queries > 0 takes that many queries, evenly spaced.
  """
  # pylint: disable=g-import-not-at-top
  from dare_jax.data import augment
  from dare_jax.data import datasets
  from dare_jax.evaluation import metrics
  from dare_jax.inference import streaming
  from dare_jax.retrieval import features as features_lib
  # pylint: enable=g-import-not-at-top
  b = bundle_lib.Bundle.load(bundle_path)
  if b.model.trinet:
    raise errors.ConfigError(f'{bundle_path}: a TriNet has one exit.')
  proto = b.protocol
  feats = features_lib.load_features(features_path)
  gallery = {e: np.asarray(feats[f'gallery_{e}'], np.float32)
             for e in engine_lib.EXITS}
  g_pids = np.asarray(feats['gallery_pids'])
  g_camids = np.asarray(feats['gallery_camids'])
  query = datasets.load_dataset(config.data).query
  if query.paths is None:
    raise errors.ConfigError('--bundle needs a dataset of image files.')
  idx = np.arange(len(query.paths))
  if num_queries and num_queries < idx.size:
    idx = np.linspace(0, idx.size - 1, num_queries).round().astype(int)
  q_pids, q_camids = query.pids[idx], query.camids[idx]
  h, w = b.input_hw
  x = b.normalize(np.stack([augment.load_image(query.paths[i], (h, w))
                            for i in idx])).astype(np.float32)
  n = len(x)
  costs = [b.exit_costs[e] for e in engine_lib.EXITS]
  gp, gc = jnp.asarray(g_pids, jnp.int32), jnp.asarray(g_camids, jnp.int32)
  g_dev = {e: jnp.asarray(a) for e, a in gallery.items()}

  def accuracy(dist_QxG):
    per = metrics.evaluate_per_query(np.asarray(dist_QxG), q_pids, q_camids,
                                     g_pids, g_camids, ap=proto.ap)
    sm = metrics.summarize(per, ranks=(1,))
    return sm['rank1'], sm['mAP']

  rows, exit_rows = [], []
  for runtime, batch in [(r, bb) for r in runtimes for bb in batches]:
    starts = range(0, n, batch)
    if runtime == 'onnx':
      fwd = bundle_lib.onnx_forward(bundle_lib.onnx_session(b.onnx_model()))
      full = lambda xb: fwd(xb)['fused']
      runner = engine_lib.OnnxStageRunner(b.model, b.variables, (h, w), batch)
    else:
      jf = jax.jit(lambda v, xb: b.model.apply(v, xb, train=False)['fused'])
      full = lambda xb: jf(b.variables, xb)
      runner = engine_lib.StageRunner(b.model, b.variables, batch)

    def stats(emb, exit_name, lo):
      return engine_lib._exit_stats(  # pylint: disable=protected-access
          jnp.asarray(emb), g_dev[exit_name],
          jnp.asarray(q_pids[lo:lo + batch], jnp.int32),
          jnp.asarray(q_camids[lo:lo + batch], jnp.int32), gp, gc, 10, proto)

    def pass_upto(s):
      """Every query through stages 1..s and exit s's answer (s = 4: the
      fused answer); returns the exit's distances [n, G]."""
      dists = []
      for lo in starts:
        xb = x[lo:lo + batch]
        m = len(xb)
        carry, embs = runner.pad(xb), []
        for k in range(1, s + 1):
          carry, e = runner.stage(k, carry)
          embs.append(e)
        emb = runner.fuse(*embs) if s == 4 else embs[-1]
        out = stats(emb[:m], engine_lib.EXITS[s - 1], lo)
        dists.append(np.asarray(jax.block_until_ready(out)[-1]))
      return np.concatenate(dists)

    def full_pass():
      dists = []
      for lo in starts:
        emb = full(x[lo:lo + batch])
        dists.append(np.asarray(jax.block_until_ready(
            stats(emb, 'fused', lo))[-1]))
      return np.concatenate(dists)

    r1, m_ap = accuracy(full_pass())  # the first pass also compiles
    full_ms = 1e3 * _median_seconds(full_pass, repeats) / n
    exit_rows.append({'runtime': runtime, 'batch': batch, 'exit': 'full',
                      'cost': costs[-1], 'ms_per_query': full_ms,
                      'rank1': r1, 'mAP': m_ap})
    for s in range(1, 5):
      r1, m_ap = accuracy(pass_upto(s))  # the first pass also compiles
      ms = 1e3 * _median_seconds(lambda s=s: pass_upto(s), repeats) / n
      exit_rows.append({'runtime': runtime, 'batch': batch,
                        'exit': engine_lib.EXITS[s - 1], 'cost': costs[s - 1],
                        'ms_per_query': ms, 'rank1': r1, 'mAP': m_ap})
    for routing, frac in [(r, f) for r in routings for f in budgets]:
      budget = costs[0] + frac * (costs[-1] - costs[0]) if frac <= 1 else frac
      times = []
      for _ in range(repeats):
        engine = streaming.open_engine(
            b, gallery, g_pids, g_camids, routing=routing, budget=budget,
            batch=batch, runner=runner, keep_distances=True)
        t0 = time.perf_counter()
        answers = []
        for lo in starts:
          answers += engine.process(x[lo:lo + batch], q_pids[lo:lo + batch],
                                    q_camids[lo:lo + batch])
        times.append(time.perf_counter() - t0)
      answers.sort(key=lambda a: a.index)
      exit_q = np.array([a.exit for a in answers])
      r1, m_ap = accuracy(np.stack([a.dist_G for a in answers]))
      ms = 1e3 * float(np.median(times)) / n
      rows.append({
          'runtime': runtime, 'batch': batch, 'routing': routing,
          'budget': float(budget), 'budget_fraction': float(
              (budget - costs[0]) / (costs[-1] - costs[0])),
          'realized_cost': float(np.mean(np.asarray(costs)[exit_q])),
          'exit_fractions': (np.bincount(exit_q, minlength=4) /
                             n).tolist(),
          'ms_per_query': ms, 'full_ms_per_query': full_ms,
          'time_share': ms / full_ms, 'rank1': r1, 'mAP': m_ap})
      logging.info('%s batch %d %s budget %.2f: %.2f ms/query (full %.2f), '
                   'Rank-1 %.4f', runtime, batch, routing,
                   rows[-1]['budget_fraction'], ms, full_ms, r1)
  return {'rows': rows, 'exits': exit_rows, 'num_queries': n,
          'num_gallery': int(g_pids.size),
          'protocol': dataclasses.asdict(proto), 'exit_costs': costs}


def _median_seconds(fn, repeats: int) -> float:
  """The median of repeats timed runs of an already warm fn
  (bench/latency's timer, without its warm-up runs)."""
  return latency._time(fn, repeats, warmup=0)[0]  # pylint: disable=protected-access


def _stage_times(runner, x, repeats) -> list[float]:
  """ms per image of each stage (with its head) at batch len(x), each run
  alone on the runner; the last includes the fusion."""
  carry, out, embs = runner.pad(x), [], []
  for s in range(1, 5):
    fn = lambda c=carry, s=s: jax.block_until_ready(runner.stage(s, c))
    nxt, e = fn()
    embs.append(e)
    if s == 4:
      fn = lambda c=carry: jax.block_until_ready(
          runner.fuse(*embs[:3], runner.stage(4, c)[1]))
    fn()
    out.append(1e3 * _median_seconds(fn, max(3, repeats)) / len(carry))
    carry = nxt
  return out


COLUMNS = (('runtime', 'runtime', '{}'), ('batch', 'batch', '{}'),
           ('mode', 'mode', '{}'),
           ('budget', 'budget_fraction', '{:.2f}'),
           ('predicted', 'predicted_saving', '{:.3f}'),
           ('time-predicted', 'time_predicted_saving', '{:.3f}'),
           ('realized', 'realized_saving', '{:.3f}'),
           ('ratio', 'realized_over_predicted', '{:.2f}'),
           ('ms/query', 'ms_per_query', '{:.2f}'),
           ('full ms/query', 'full_ms_per_query', '{:.2f}'),
           ('img/s', 'images_per_s', '{:.1f}'),
           ('full img/s', 'full_images_per_s', '{:.1f}'),
           ('latency ms', 'mean_latency_ms', '{:.1f}'))


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.bundle:
    return main_real()
  try:
    routing, *more = _choices('routing', FLAGS.routing,
                              ('margin', 'distance', 'random'))
    if more:
      raise errors.ConfigError(f'--routing={FLAGS.routing!r}: one routing '
                               'here; a comma list needs --bundle.')
    rows = run(FLAGS.config, _ints('batch', FLAGS.batch),
               _floats('budgets', FLAGS.budgets), routing,
               FLAGS.queries, FLAGS.gallery, FLAGS.repeats,
               _choices('modes', FLAGS.modes, MODES),
               _choices('runtime', FLAGS.runtime, RUNTIMES))
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  print(f'device: {jax.devices()[0].device_kind}, input '
        f'{tuple(FLAGS.config.data.input_size)}, {FLAGS.queries} queries, '
        f'gallery {FLAGS.gallery}, routing {FLAGS.routing}')
  print(bench.format_columns(COLUMNS, rows))
  print('where the engine\'s time went (fractions):')
  for r in rows:
    split = ', '.join(f'{k} {v:.2f}' for k, v in sorted(
        r['time_split'].items(), key=lambda kv: -kv[1]))
    print(f'  {r["runtime"]} batch {r["batch"]} {r["mode"]}, budget '
          f'{r["budget_fraction"]:.2f}: {split}')
  if FLAGS.json:
    reporting.write_json(FLAGS.json, {'rows': rows, 'date': time.strftime(
        '%Y-%m-%d'), 'device': jax.devices()[0].device_kind})
  sys.stdout.flush()


REAL_COLUMNS = (('runtime', 'runtime', '{}'), ('batch', 'batch', '{}'),
                ('routing', 'routing', '{}'),
                ('budget', 'budget_fraction', '{:.2f}'),
                ('Rank-1', 'rank1', '{:.4f}'), ('mAP', 'mAP', '{:.4f}'),
                ('ms/query', 'ms_per_query', '{:.2f}'),
                ('full ms/query', 'full_ms_per_query', '{:.2f}'),
                ('time share', 'time_share', '{:.3f}'))
EXIT_COLUMNS = (('runtime', 'runtime', '{}'), ('batch', 'batch', '{}'),
                ('exit', 'exit', '{}'), ('Mul-Adds', 'cost', '{:,d}'),
                ('Rank-1', 'rank1', '{:.4f}'), ('mAP', 'mAP', '{:.4f}'),
                ('ms/query', 'ms_per_query', '{:.2f}'))


def main_real():
  if not FLAGS.features:
    raise SystemExit('error: --bundle needs --features=WORKDIR/features.npz '
                     '(the run\'s gallery embeddings).')
  try:
    result = run_real(
        FLAGS.config, FLAGS.bundle, FLAGS.features,
        _ints('batch', FLAGS.batch), _floats('budgets', FLAGS.budgets),
        _choices('routing', FLAGS.routing, ('margin', 'distance', 'random')),
        FLAGS.repeats, _choices('runtime', FLAGS.runtime, RUNTIMES),
        FLAGS.queries if FLAGS['queries'].present else 0)
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  result.update(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                device=jax.devices()[0].device_kind, bundle=FLAGS.bundle)
  print(f'device: {result["device"]}, {result["num_queries"]} queries (one '
        f'view each), gallery {result["num_gallery"]}, protocol '
        f'{result["protocol"]}, {result["date"]}')
  print(bench.format_columns(EXIT_COLUMNS, result['exits']))
  print(bench.format_columns(REAL_COLUMNS, result['rows']))
  if FLAGS.json:
    reporting.write_json(FLAGS.json, result)
  if FLAGS.figure:
    from dare_jax.figures import run as run_fig  # pylint: disable=g-import-not-at-top
    runtime = result['rows'][0]['runtime'] if result['rows'] else 'jax'
    run_fig.time_accuracy(result, FLAGS.figure, runtime=runtime,
                        batch=min(r['batch'] for r in result['exits']))
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
