r"""Answers a stream of query images with real early exit (inference/anytime).

  python -m dare_jax.tools.stream BUNDLE --gallery=G --queries=Q \
      (--budget=B | --deadline-ms=T) [--routing=margin|distance|random] \
      [--batch=16] [--mode=batch|queued] [--runtime=jax|onnx] \
      [--topk=10] [--seed=0] \
      [--json=OUT] [--overwrite]

G: a FEATURES.npz from tools/embed (its stage1, stage2, stage3 and fused
embeddings; person/camera when it was a labelled CSV) or images, embedded
now; Q: query images (a folder, a .txt, a .csv of path[,person,camera]), in
arrival order, each one view (the whole image resized to the input size,
as single-view evaluation: an anytime query cannot afford 10). --budget is the average Mul-Adds per query (bundle.json's
exit_costs: stage1 .. fused); --deadline-ms answers each micro-batch of
--batch queries with the deepest exit completed within T ms. --json writes
  {"queries": [{"path", "exit", "latency_ms", "results": [{"path",
    "distance"}]}],
   "summary": {"budget" | "deadline_ms", "exit_fractions", "mean_latency_ms",
               "rank1", "mAP"}}
(rank1 / mAP only when the queries carry person ids); stdout gets the
summary as JSON, stderr the progress.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags

from dare_jax import console
from dare_jax.tools import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('gallery', None, 'A FEATURES.npz or images (INPUT).')
  flags.DEFINE_string('queries', None, 'The query images (INPUT).')
  flags.DEFINE_float('budget', None, 'Average Mul-Adds per query.')
  flags.DEFINE_float('deadline-ms', None, 'Milliseconds per micro-batch.')
  flags.DEFINE_enum('routing', 'margin', ['margin', 'distance', 'random'],
                    'Who leaves early (budget/stream.py).')
  flags.DEFINE_integer('batch', 16, 'Queries per micro-batch.')
  flags.DEFINE_enum('mode', 'batch', ['batch', 'queued'],
                    "batch: a micro-batch's survivors continue together "
                    '(lowest latency); queued: survivors wait until --batch '
                    'of them fill the next stage (throughput; budget only).')
  flags.DEFINE_enum('runtime', 'jax', ['jax', 'onnx'],
                    'The stages in JAX, or in onnxruntime (each stage '
                    'exported to ONNX at start-up; the fastest on a CPU).')
  flags.DEFINE_integer('topk', 10, 'Results per query.')
  flags.DEFINE_integer('seed', 0, 'The random routing draws.')
  flags.DEFINE_string('json', '', 'Write every answer here.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --json.')
  flags.mark_flags_as_required(['gallery', 'queries'])


def run_stream(bundle_path: str, gallery_spec: str, queries_spec: str, *,
               budget=None, deadline_ms=None, routing: str = 'margin',
               batch: int = 16, mode: str = 'batch', runtime: str = 'jax',
               topk: int = 10,
               seed: int = 0,
               json_out: str = '', overwrite: bool = False,
               progress: bool = True) -> dict:
  """Streams the queries; returns the --json object."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from dare_jax import errors
  from dare_jax import fileio
  from dare_jax.data import augment
  from dare_jax.evaluation import metrics
  from dare_jax.evaluation import protocol as protocol_lib
  from dare_jax.inference import anytime
  from dare_jax.inference import bundle as bundle_lib
  from dare_jax.inference import gallery as gallery_lib
  from dare_jax.inference import images as images_lib
  # pylint: enable=g-import-not-at-top
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
  b = bundle_lib.Bundle.load(bundle_path)
  missing = [e for e in anytime.EXITS if e not in b.embedding_names]
  if missing:
    raise errors.ConfigError(
        f'{bundle_path}: the stream answers with {", ".join(anytime.EXITS)}; '
        f'this bundle has {", ".join(b.embedding_names)} only (a TriNet has '
        'one exit: nothing to leave early from).')
  g, _ = gallery_lib.load_or_embed(gallery_spec, b, progress=progress)
  queries = images_lib.read_inputs(queries_spec)
  n_g = len(g)
  g_pids = (g.inputs.person if g.inputs.person is not None else
            np.zeros(n_g, np.int64))
  g_camids = (g.inputs.camera if g.inputs.camera is not None else
              np.full(n_g, -1, np.int64))
  if routing == 'margin' and g.inputs.person is None:
    raise errors.ConfigError(
        '--routing=margin reads the gallery\'s person ids (a labelled CSV, '
        'path,person,camera); use --routing=distance for an unlabelled '
        'gallery.')
  costs = [b.exit_costs[e] for e in anytime.EXITS]
  labelled = queries.person is not None
  if runtime not in ('jax', 'onnx'):
    raise errors.ConfigError(f'--runtime={runtime!r}: use jax or onnx.')
  runner = (anytime.OnnxStageRunner(b.model, b.variables, b.input_hw, batch)
            if runtime == 'onnx' else None)
  proto = protocol_lib.Protocol.from_bundle(b.meta)
  engine = anytime.AnytimeEngine(
      b.model, b.variables, g.embeddings, g_pids, g_camids, costs,
      routing=routing, budget=budget, deadline_ms=deadline_ms, topk=topk,
      max_batch=batch, seed=seed, keep_distances=labelled, runner=runner,
      proto=proto)
  engine.warmup(b.input_hw)
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
      'exits': list(anytime.EXITS), 'exit_costs': costs,
      'exit_fractions': (np.bincount(exit_q, minlength=len(anytime.EXITS)) /
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
      {'path': queries.paths[a.index], 'exit': anytime.EXITS[a.exit],
       'latency_ms': a.latency_ms,
       'results': [{'path': g.inputs.paths[i], 'distance': float(d)}
                   for i, d in zip(a.results, a.distances)]}
      for a in answers], 'summary': summary}
  if json_out:
    from dare_jax import reporting  # pylint: disable=g-import-not-at-top
    reporting.write_json(json_out, out)
  return out


def main(argv):
  console.start()
  if len(argv) != 2:
    raise app.UsageError('usage: python -m dare_jax.tools.stream BUNDLE '
                         '--gallery=G --queries=Q --budget=B|--deadline-ms=T')
  return cli.emit_json(lambda: run_stream(
      argv[1], FLAGS.gallery, FLAGS.queries, budget=FLAGS.budget,
      deadline_ms=FLAGS['deadline-ms'].value, routing=FLAGS.routing,
      batch=FLAGS.batch, mode=FLAGS.mode, runtime=FLAGS.runtime,
      topk=FLAGS.topk, seed=FLAGS.seed,
      json_out=FLAGS.json, overwrite=FLAGS.overwrite)['summary'], indent=1)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
