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

import os
import sys

from absl import app
from absl import flags
from dare_jax import console


FLAGS = flags.FLAGS
# Rows a figure may hold: a figure of thousands of queries helps no one.
MAX_FIGURE_ROWS = 20


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


def _check_out(path: str, overwrite: bool) -> None:
  # pylint: disable=g-import-not-at-top
  from dare_jax import errors
  from dare_jax import fileio
  # pylint: enable=g-import-not-at-top
  if path and fileio.exists(path) and not overwrite:
    raise errors.ConfigError(f'{path} exists; pass --overwrite to replace '
                             'it.')


def _match(q_person, g_person):
  if q_person is None or g_person is None or q_person < 0 or g_person < 0:
    return None
  return bool(q_person == g_person)


def figure_rows(query, gallery_feats, per_exit, input_hw) -> list[dict]:
  """The rows of figures.ranked_lists: each query, each exit."""
  # pylint: disable=g-import-not-at-top
  from dare_jax.data import augment
  # pylint: enable=g-import-not-at-top
  cache = {}
  # Crops are drawn at the input's aspect, at least 128 pixels high.
  scale = max(1, -(-128 // input_hw[0]))
  show_hw = (input_hw[0] * scale, input_hw[1] * scale)

  def image(f):
    if f not in cache:
      cache[f] = augment.load_image(f, show_hw)
    return cache[f]
  qp, gp = query.inputs.person, gallery_feats.inputs.person
  rows = []
  for q in range(len(query)):
    for name, (idx, dist) in per_exit.items():
      label = os.path.basename(query.inputs.paths[q])
      if qp is not None and qp[q] >= 0:
        label += f'  person {int(qp[q])}'
      rows.append({
          'query': image(query.inputs.files[q]), 'query_label': label,
          'exit': name,
          'results': [{'image': image(gallery_feats.inputs.files[g]),
                       'distance': float(d),
                       'match': _match(None if qp is None else qp[q],
                                       None if gp is None else gp[g])}
                      for g, d in zip(idx[q], dist[q])]})
      if len(rows) >= MAX_FIGURE_ROWS:
        return rows
  return rows


def search(bundle_path: str, gallery_spec: str, query_spec: str, *,
           topk: int = 10, exit_name: str = 'fused', rerank: bool = False,
           json_out: str = '', figure: str = '', tta: int = 10,
           batch: int = 32, runtime: str = 'jax', overwrite: bool = False,
           progress: bool = True) -> list[dict]:
  """The --json list (also written to json_out when given)."""
  # pylint: disable=g-import-not-at-top
  from absl import logging
  from dare_jax.inference import bundle as bundle_lib
  from dare_jax.inference import gallery as gallery_lib
  # pylint: enable=g-import-not-at-top
  _check_out(json_out, overwrite)
  _check_out(figure, overwrite)
  b = bundle_lib.Bundle.load(bundle_path, runtime)
  names = gallery_lib.check_exits(exit_name, b)
  kw = dict(tta=tta, batch=batch, progress=progress)
  g, skipped_g = gallery_lib.load_or_embed(gallery_spec, b, **kw)
  q, skipped_q = gallery_lib.load_or_embed(query_spec, b, **kw)
  for s in (skipped_g, skipped_q):
    if s:
      logging.warning('%s', s)
  opts = b.meta['search']
  rr = ({k: opts[k] for k in ('k1', 'k2', 'lambda_value')} if rerank
        else None)
  per_exit = {}
  for name in names:
    idx, dist = gallery_lib.search(
        q.embeddings[name], g.embeddings[name], topk, metric=opts['metric'],
        normalize=opts['normalize'], rerank=rr)
    per_exit[name] = (idx, dist)
  by_exit = [gallery_lib.results(q, g, name, idx, dist)
             for name, (idx, dist) in per_exit.items()]
  out = [r for rows in zip(*by_exit) for r in rows]  # a query's exits together
  if json_out:
    from dare_jax import reporting  # pylint: disable=g-import-not-at-top
    reporting.write_json(json_out, out)
  if figure:
    # pylint: disable=g-import-not-at-top
    from dare_jax.inference import figures
    # pylint: enable=g-import-not-at-top
    if len(q) * len(names) > MAX_FIGURE_ROWS:
      logging.warning('The figure shows the first %d of %d rows.',
                      MAX_FIGURE_ROWS, len(q) * len(names))
    figures.ranked_lists(figure, figure_rows(q, g, per_exit, b.input_hw),
                         title=f'{os.path.basename(bundle_path.rstrip("/"))}'
                               f'{"  re-ranked" if rerank else ""}')
  return out


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
  from dare_jax import errors  # pylint: disable=g-import-not-at-top
  try:
    out = search(argv[1], FLAGS.gallery, FLAGS.query, topk=FLAGS.topk,
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
