r"""Searches a gallery of your own images with a model bundle.

  python -m dare_jax.tools.search BUNDLE --gallery=G --query=Q [--topk=10] \
      [--exit=fused|stage1..4|all] [--rerank] [--json=OUT.json] \
      [--figure=OUT.png] [--tta=10|1] [--batch=32] [--runtime=jax|onnx] \
      [--overwrite]

G: a FEATURES.npz from tools/embed (a large gallery is embedded once and
reused) or any INPUT tools/embed takes (a folder, a .txt, a .csv), embedded
now; Q: an image, a folder, a list or a FEATURES.npz. For each query and
exit it prints the top-K gallery paths with their distances, nearest first:
exact distances, as the run's evaluation computes them (the bundle records
its metric), over chunks of queries. --json writes
  [{"query": PATH, "exit": NAME,
    "results": [{"path": P, "distance": D, "person": ID or null}, ...]}, ...]
--figure draws each query beside its top-K crops, one row per exit, the
distance under each crop and a green/red frame when both sides have person
ids (a labelled CSV). Nothing is overwritten without --overwrite.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from dare_jax import console


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('gallery', None, 'A FEATURES.npz or images (INPUT).')
  flags.DEFINE_string('query', None, 'An image, images (INPUT) or a '
                      'FEATURES.npz.')
  flags.DEFINE_integer('topk', 10, 'Results per query.')
  flags.DEFINE_string('exit', 'fused', 'The embedding to search with '
                      '(fused, stage1..stage4) or all.')
  flags.DEFINE_bool('rerank', False, 'k-reciprocal re-ranking (the k1, k2 '
                    'and lambda of the run, from bundle.json).')
  flags.DEFINE_string('json', '', 'Write the results here as JSON.')
  flags.DEFINE_string('figure', '', 'Draw the ranked lists here (.png).')
  flags.DEFINE_enum('tta', '10', ['10', '1'], 'Views per image for images '
                    'embedded now.')
  flags.DEFINE_integer('batch', 32, 'Images per forward.')
  flags.DEFINE_enum('runtime', 'jax', ['jax', 'onnx'], 'For images embedded '
                    'now.')
  flags.DEFINE_bool('overwrite', False, 'Replace existing --json/--figure.')
  flags.mark_flags_as_required(['gallery', 'query'])


def print_results(out: list[dict], stream=None) -> None:
  stream = stream or sys.stdout
  for r in out:
    print(f'{r["query"]}  [{r["exit"]}]', file=stream)
    for rank, hit in enumerate(r['results'], start=1):
      person = '' if hit['person'] is None else f'  person {hit["person"]}'
      print(f'  {rank:3d}  {hit["distance"]:.4f}  {hit["path"]}{person}',
            file=stream)


def main(argv):
  console.start()
  if len(argv) != 2:
    raise app.UsageError('usage: python -m dare_jax.tools.search BUNDLE '
                         '--gallery=G --query=Q [flags]')
  # pylint: disable=g-import-not-at-top
  from dare_jax import errors
  from dare_jax.inference import gallery
  # pylint: enable=g-import-not-at-top
  try:
    out = gallery.search_files(argv[1], FLAGS.gallery, FLAGS.query, topk=FLAGS.topk,
                 exit_name=FLAGS.exit, rerank=FLAGS.rerank,
                 json_out=FLAGS.json, figure=FLAGS.figure,
                 tta=int(FLAGS.tta), batch=FLAGS.batch,
                 runtime=FLAGS.runtime, overwrite=FLAGS.overwrite)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print_results(out)
  return 0


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
