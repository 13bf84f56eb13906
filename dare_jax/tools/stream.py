r"""Answers a stream of query images with real early exit (inference/engine).

  python -m dare_jax.tools.stream BUNDLE --gallery=G --queries=Q \
      (--budget=B | --deadline-ms=T) [--routing=auto|margin|distance|random] \
      [--batch=16] [--mode=batch|queued] [--runtime=jax|onnx] \
      [--topk=10] [--seed=0] [--json=OUT] [--overwrite]

G: a FEATURES.npz from tools/embed (its stage1, stage2, stage3 and fused
embeddings; person/camera when it was a labelled CSV) or images, embedded
now; Q (--queries, or --query as tools/search spells it): query images (a
folder, a .txt, a .csv of path[,person,camera]), in arrival order, each one
view (the whole image resized to the input size, as single-view
evaluation: an anytime query cannot afford 10). --budget is the average
Mul-Adds per query: 2.9M, 1.2e9, or 50% (halfway from stage 1's cost to
the full model's); from stage 1's cost up (bundle.json's exit_costs; a lower one is refused with
them). --deadline-ms answers each micro-batch of
--batch queries with the deepest exit completed within T ms. --json writes
  {"queries": [{"path", "exit", "latency_ms", "results": [{"path",
    "distance"}]}],
   "summary": {"budget" | "deadline_ms", "exit_fractions", "mean_latency_ms",
               "rank1", "mAP"}}
(rank1 / mAP only when the queries carry person ids); stdout gets the
summary as JSON, stderr the progress.
"""

from __future__ import annotations


from absl import app
from absl import flags

from dare_jax import console
from dare_jax.tools import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('gallery', None, 'A FEATURES.npz or images (INPUT).')
  flags.DEFINE_string('queries', None, 'The query images (INPUT).')
  flags.DEFINE_alias('query', 'queries')  # tools/search's spelling
  flags.DEFINE_string(
      'budget', None, 'Average Mul-Adds per query: a number (2900000, '
      '2.9e6), with a unit (2.9M, 1.2G, 800k), a share of the way from '
      "stage 1's cost to the full model's (0% = stage 1, 50% halfway, 100% "
      "= full), or a multiple of the full cost (0.5x). Valid: from stage "
      "1's cost up (the bundle's exit_costs in bundle.json; a budget below "
      'is refused naming them); at or above the full cost every query gets '
      'the fusion.')
  flags.DEFINE_float('deadline-ms', None, 'Milliseconds per micro-batch, '
                     '> 0.')
  flags.DEFINE_enum('routing', 'auto', ['auto', 'margin', 'distance',
                                        'random'],
                    'Who leaves early (retrieval/exits.py); auto: margin '
                    'for a labelled gallery, distance otherwise.')
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


def main(argv):
  console.start()
  if len(argv) != 2:
    raise app.UsageError('usage: python -m dare_jax.tools.stream BUNDLE '
                         '--gallery=G --queries=Q --budget=B|--deadline-ms=T')
  from dare_jax.inference import streaming  # pylint: disable=g-import-not-at-top
  return cli.emit_json(lambda: streaming.stream_files(
      argv[1], FLAGS.gallery, FLAGS.queries, budget=FLAGS.budget,
      deadline_ms=FLAGS['deadline-ms'].value, routing=FLAGS.routing,
      batch=FLAGS.batch, mode=FLAGS.mode, runtime=FLAGS.runtime,
      topk=FLAGS.topk, seed=FLAGS.seed,
      json_out=FLAGS.json, overwrite=FLAGS.overwrite)['summary'], indent=1)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
