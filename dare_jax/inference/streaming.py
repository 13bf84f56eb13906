"""Streaming queries through the anytime engine: the library behind
tools/stream and bench/early_exit (a Python user calls these directly).

  engine = streaming.open_engine(bundle, gallery_embeddings, g_pids,
                                 g_camids, budget=B, routing='margin')
  answers = engine.process(x_BxHxWx3)
  out = streaming.stream_files(BUNDLE, GALLERY, QUERIES, budget=B)

open_engine assembles an engine from a bundle: its exit costs
(bundle.json), its retrieval protocol, and the stages in JAX or
onnxruntime. stream_files answers a stream of image files (tools/stream's
--json object).
"""

from __future__ import annotations

import time
from typing import Mapping, Optional

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax import fileio
from dare_jax import reporting
from dare_jax.data import augment
from dare_jax.evaluation import metrics
from dare_jax.inference import bundle as bundle_lib
from dare_jax.inference import engine as engine_lib
from dare_jax.inference import gallery as gallery_lib
from dare_jax.inference import images as images_lib
from dare_jax.retrieval import exits as exits_lib

RUNTIMES = ('jax', 'onnx')
ROUTINGS = ('auto',) + exits_lib.ROUTINGS
_UNITS = {'': 1.0, 'k': 1e3, 'm': 1e6, 'g': 1e9, 'b': 1e9}


def _mul_adds(n: float) -> str:
  return f'{n / 1e9:.3g}G' if n >= 1e9 else f'{n / 1e6:.3g}M'


def cost_range(b) -> str:
  """The bundle's exit costs, as the errors and the summary say them."""
  return ', '.join(f'{e} {_mul_adds(b.exit_costs[e])}'
                   for e in engine_lib.EXITS)


def parse_budget(text, b) -> float:
  """--budget as Mul-Adds per query: a number ('2900000', '2.9e6'), with a
  unit ('2.9M', '1.2G', '800k'), a share of the way from stage 1's cost to
  the full model's ('0%' = C_1, '50%' halfway, '100%' = C_4: always
  valid), or a multiple of the full cost ('0.5x'); ConfigError (with the
  bundle's C_1..C_4) below stage 1's cost or not a number. Above the full
  cost every query is answered by the fusion."""
  costs = [float(b.exit_costs[e]) for e in engine_lib.EXITS]
  t = str(text).strip().lower().replace('_', '').replace(',', '')
  try:
    if t.endswith('%'):  # of the way from stage 1's cost to the full one
      value = costs[0] + float(t[:-1]) / 100 * (costs[-1] - costs[0])
    elif t.endswith('x'):
      value = float(t[:-1]) * costs[-1]
    else:
      unit = t[-1] if t and t[-1] in 'kmgb' else ''
      value = float(t[:len(t) - len(unit)]) * _UNITS[unit]
  except ValueError:
    value = float('nan')
  valid = (f'the exits cost {cost_range(b)} Mul-Adds per query (bundle.json); '
           f'a budget is at least stage 1\'s {_mul_adds(costs[0])}, e.g. '
           f'--budget={_mul_adds((costs[0] + costs[-1]) / 2)} or '
           '--budget=50% (halfway from stage 1 to the full model)')
  if not np.isfinite(value):
    raise errors.ConfigError(f'--budget={text}: not a number; {valid}.')
  if value < costs[0]:
    raise errors.ConfigError(f'--budget={text} ({_mul_adds(value)}) is below '
                             f'what any answer costs: {valid}.')
  return value


def check_deadline(deadline_ms) -> float:
  d = float(deadline_ms)
  if not (np.isfinite(d) and d > 0):
    raise errors.ConfigError(
        f'--deadline-ms={deadline_ms}: milliseconds per micro-batch, > 0 '
        '(queries that stage 1 cannot answer in time still get its answer, '
        'late).')
  return d


def check_exits(b, where: str) -> None:
  missing = [e for e in engine_lib.EXITS if e not in b.embedding_names]
  if missing:
    raise errors.ConfigError(
        f'{where}: the stream answers with {", ".join(engine_lib.EXITS)}; '
        f'this bundle has {", ".join(b.embedding_names)} only (a TriNet has '
        'one exit: nothing to leave early from).')


def make_runner(b, runtime: str, batch: int):
  """The bundle's stages in JAX (StageRunner) or onnxruntime."""
  if runtime not in RUNTIMES:
    raise errors.ConfigError(f'--runtime={runtime!r}: use jax or onnx.')
  if runtime == 'onnx':
    return engine_lib.OnnxStageRunner(b.model, b.variables, b.input_hw, batch)
  return engine_lib.StageRunner(b.model, b.variables, batch)


def open_engine(b, embeddings: Mapping[str, np.ndarray], g_pids, g_camids, *,
                routing: str = 'margin', budget: Optional[float] = None,
                deadline_ms: Optional[float] = None, batch: int = 16,
                runtime: str = 'jax', runner=None, topk: int = 10,
                seed: int = 0, keep_distances: bool = False,
                warmup: bool = True) -> engine_lib.AnytimeEngine:
  """An AnytimeEngine for bundle `b` (inference/bundle.Bundle) over a
  gallery's per-exit embeddings: the bundle's exit costs and protocol, its
  stages on `runtime` (or the given runner, shared between engines),
  compiled for every batch bucket when warmup."""
  check_exits(b, b.path)
  engine = engine_lib.AnytimeEngine(
      b.model, b.variables, {e: embeddings[e] for e in engine_lib.EXITS},
      g_pids, g_camids, [b.exit_costs[e] for e in engine_lib.EXITS],
      routing=routing, budget=budget, deadline_ms=deadline_ms, topk=topk,
      max_batch=batch, seed=seed, keep_distances=keep_distances,
      runner=runner or make_runner(b, runtime, batch),
      proto=b.protocol)
  if warmup:
    engine.warmup(b.input_hw)
  return engine


def stream_files(bundle_path: str, gallery_spec: str, queries_spec: str, *,
                 budget=None, deadline_ms=None, routing: str = 'auto',
                 batch: int = 16, mode: str = 'batch', runtime: str = 'jax',
                 topk: int = 10, seed: int = 0, json_out: str = '',
                 overwrite: bool = False, progress: bool = True) -> dict:
  """Streams the queries; returns the --json object. budget: Mul-Adds per
  query (a number, or text as parse_budget reads it: '2.9M', '50%');
  routing 'auto': margin for a labelled gallery, distance otherwise."""
  if json_out and fileio.exists(json_out) and not overwrite:
    raise errors.ConfigError(f'{json_out} exists; pass --overwrite to '
                             'replace it.')
  if (budget is None) == (deadline_ms is None):
    raise errors.ConfigError('Give --budget=MUL_ADDS or --deadline-ms=T '
                             '(one of them).')
  if mode not in ('batch', 'queued'):
    raise errors.ConfigError(f'--mode={mode!r}: use batch or queued.')
  if mode == 'queued' and deadline_ms is not None:
    raise errors.ConfigError('--mode=queued is for a --budget; a deadline '
                             'answers each micro-batch by itself.')
  if routing not in ROUTINGS:
    raise errors.ConfigError(f'--routing={routing!r}: use one of '
                             f'{", ".join(ROUTINGS)}.')
  b = bundle_lib.Bundle.load(bundle_path)
  check_exits(b, bundle_path)
  if budget is not None:
    budget = parse_budget(budget, b)
  else:
    deadline_ms = check_deadline(deadline_ms)
  queries = images_lib.read_inputs(queries_spec)
  g, _ = gallery_lib.load_or_embed(gallery_spec, b, progress=progress)
  n_g = len(g)
  g_pids = (g.inputs.person if g.inputs.person is not None else
            np.zeros(n_g, np.int64))
  g_camids = (g.inputs.camera if g.inputs.camera is not None else
              np.full(n_g, -1, np.int64))
  if routing == 'auto':  # margin reads the gallery's person ids
    routing = 'margin' if g.inputs.person is not None else 'distance'
    logging.info('--routing=auto: %s (the gallery %s person ids).', routing,
                 'has' if routing == 'margin' else 'has no')
  if routing == 'margin' and g.inputs.person is None:
    raise errors.ConfigError(
        '--routing=margin reads the gallery\'s person ids (a labelled CSV, '
        'path,person,camera); use --routing=distance (or auto) for an '
        'unlabelled gallery.')
  if topk > n_g:
    logging.warning('--topk=%d: the gallery holds %d images; each answer '
                    'lists %d.', topk, n_g, n_g)
  labelled = queries.person is not None
  engine = open_engine(b, g.embeddings, g_pids, g_camids, routing=routing,
                       budget=budget, deadline_ms=deadline_ms, batch=batch,
                       runtime=runtime, topk=topk, seed=seed,
                       keep_distances=labelled)
  costs, proto = [b.exit_costs[e] for e in engine_lib.EXITS], engine.proto
  prog = images_lib.Progress(len(queries), 'stream') if progress else None
  answers = []
  t_decode = 0.0
  for lo in range(0, len(queries), batch):
    hi = min(len(queries), lo + batch)
    t0 = time.perf_counter()
    imgs = np.stack([augment.load_image(f, b.input_hw)
                     for f in queries.files[lo:hi]])
    x = b.normalize(imgs)
    t_decode += time.perf_counter() - t0
    ids = ((queries.person[lo:hi], queries.camera[lo:hi]
            if queries.camera is not None else None) if labelled
           else (None, None))
    answers += (engine.process if mode == 'batch' else engine.submit)(x, *ids)
    if prog:
      prog.update(hi - lo)
  if mode == 'queued':
    answers += engine.flush()
  answers.sort(key=lambda a: a.index)
  exit_q = np.array([a.exit for a in answers])
  summary = {
      'exits': list(engine_lib.EXITS), 'exit_costs': costs,
      'exit_fractions': (np.bincount(exit_q, minlength=len(engine_lib.EXITS)) /
                         len(answers)).tolist(),
      'realized_cost': float(np.mean(np.asarray(costs)[exit_q])),
      'mean_latency_ms': float(np.mean([a.latency_ms for a in answers])),
      'routing': routing if budget is not None else None,
      'rank1': None, 'mAP': None,
      'seconds': {k: round(v, 4) for k, v in engine.timing.items()},
  }
  summary['seconds']['decoding'] = round(t_decode, 4)
  summary['mode'] = mode
  summary['runtime'] = runtime
  summary['budget' if budget is not None else 'deadline_ms'] = (
      budget if budget is not None else deadline_ms)
  if labelled:
    qc = (queries.camera if queries.camera is not None else
          np.full(len(queries), -1, np.int64))
    per = metrics.evaluate_per_query(
        np.stack([a.dist_G for a in answers]), queries.person, qc,
        g_pids, g_camids, ap=proto.ap)
    if np.any(per['valid']):
      s = metrics.summarize(per, ranks=(1,))
      summary['rank1'], summary['mAP'] = s['rank1'], s['mAP']
  out = {'queries': [
      {'path': queries.paths[a.index], 'exit': engine_lib.EXITS[a.exit],
       'latency_ms': a.latency_ms,
       'results': [{'path': g.inputs.paths[i], 'distance': float(d)}
                   for i, d in zip(a.results, a.distances)]}
      for a in answers], 'summary': summary}
  if json_out:
    reporting.write_json(json_out, out)
  return out


