"""Embeddings of your own images as a features file, and exact search.

tools/embed writes a features file (the one schema of
retrieval/features.py) with a gallery side: gallery_NAME for each
embedding the bundle has, gallery_paths (as the INPUT named them),
gallery_files (the absolute paths opened; search draws from them),
gallery_pids / gallery_camids when the INPUT (a CSV) had them; and tta,
bundle (the fingerprint of the bundle that embedded them) and protocol.
tools/search reads any file of that schema, a run's features.npz included
(its query side for --query). A gallery is embedded once: `embed --append`
adds the images it does not hold yet and keeps every old row as it was;
search refuses features from another bundle or of another dimension, since
their distances mean nothing.

Search is exact: distances under the run's protocol (retrieval/protocol.py,
from bundle.json), over chunks of queries so that memory is [chunk, G],
then the top K. With rerank, k-reciprocal re-ranking (the run's k1, k2,
lambda) over queries and gallery together; it returns the whole [Q, G]
matrix.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from absl import logging
import jax
import numpy as np

from dare_jax import errors
from dare_jax import fileio
from dare_jax import reporting
from dare_jax.evaluation import metrics
from dare_jax.inference import images as images_lib
from dare_jax.retrieval import features as features_lib
from dare_jax.retrieval import protocol as protocol_lib


@dataclasses.dataclass(frozen=True)
class Features:
  inputs: images_lib.Inputs
  embeddings: dict  # {name: float32 [N, D]}
  tta: int
  bundle: str

  def __len__(self) -> int:
    return len(self.inputs)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(self.embeddings)


def embed_inputs(bundle, inputs: images_lib.Inputs, *, tta: int = 10,
                 batch: int = 32, bad_images: str = 'error',
                 progress: bool = True) -> tuple[Features, Optional[str]]:
  """(the embeddings of the readable inputs, a 'skipped ...' line or None)."""
  prog = images_lib.Progress(len(inputs)) if progress else None
  embs, ok = images_lib.embed_files(
      bundle.forward, inputs.files, input_hw=bundle.input_hw,
      resize_hw=bundle.resize_hw, normalize=bundle.normalize, tta=tta,
      batch=batch, bad_images=bad_images, pad=bundle.runtime == 'jax',
      progress=prog)
  feats = Features(inputs.take(ok), embs, int(tta), bundle.fingerprint)
  return feats, images_lib.skipped_message(inputs, ok)


def save(path: str, feats: Features, overwrite: bool = False,
         protocol: Optional[protocol_lib.Protocol] = None) -> str:
  """A gallery side (the schema of retrieval/features.py) with tta, the
  bundle's fingerprint and the protocol."""
  if fileio.exists(path) and not overwrite:
    raise errors.ConfigError(f'{path} exists; pass --overwrite to replace '
                             'it (or --append to add images to it).')
  if not path.endswith('.npz'):
    raise errors.ConfigError(f'{path}: the features file must end in .npz.')
  inputs = feats.inputs
  arrays = features_lib.Side(feats.embeddings, inputs.person, inputs.camera,
                             inputs.paths, inputs.files).to_arrays('gallery')
  arrays.update(tta=np.int64(feats.tta), bundle=np.array(feats.bundle))
  if not fileio.is_remote(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return features_lib.write(path, arrays, protocol)


def load(path: str, bundle=None, side: Optional[str] = None) -> Features:
  """One side of a features file (`side` when the file has it, else the
  side it has: the gallery side first); with a bundle, checked against it
  (names, dimension, fingerprint)."""
  arrays = features_lib.read(path)
  present = [x for x in ('gallery', 'query')
             if features_lib.side_names(arrays, x)]
  if side not in present:  # a file of one side serves as either
    side = present[0] if present else 'gallery'
  got = features_lib.read_side(arrays, side, path)
  missing = [k for k in (features_lib.key(side, 'paths'), 'tta', 'bundle')
             if k not in arrays]
  if missing:
    raise errors.DataError(
        f'{path}: search needs the images behind the {side} embeddings '
        f'(it lacks {", ".join(missing)}); embed them with tools/embed.')
  files = got.files or tuple(os.path.abspath(p) for p in got.paths)
  feats = Features(images_lib.Inputs(got.paths, files, got.pids, got.camids),
                   got.embeddings, int(arrays['tta']), str(arrays['bundle']))
  if bundle is not None:
    check_compatible(path, feats, bundle)
  return feats


def check_compatible(path: str, feats: Features, bundle) -> None:
  for k, v in feats.embeddings.items():
    if v.shape[1] != bundle.embedding_dim:
      raise errors.DataError(
          f'{path}: its {k} embeddings have dimension {v.shape[1]}; the '
          f'bundle {bundle.path} has dimension {bundle.embedding_dim}.')
  if set(feats.names) != set(bundle.embedding_names):
    raise errors.DataError(
        f'{path} holds embeddings {", ".join(feats.names)}; the bundle '
        f'{bundle.path} has {", ".join(bundle.embedding_names)}.')
  if feats.bundle != bundle.fingerprint:
    raise errors.DataError(
        f'{path} was embedded by another bundle (fingerprint '
        f'{feats.bundle}, {bundle.path} is {bundle.fingerprint}); embed '
        'its images again with this bundle.')


def concat(old: Features, new: Features) -> Features:
  """old's rows, then new's: --append."""
  if old.tta != new.tta:
    raise errors.ConfigError(f'The file holds tta={old.tta} embeddings; '
                             f'append with --tta={old.tta}.')
  def ids(k):
    a, b = getattr(old.inputs, k), getattr(new.inputs, k)
    if a is None and b is None:
      return None
    fill = lambda v, n: (np.full(n, -1, np.int64) if v is None else v)
    return np.concatenate([fill(a, len(old)), fill(b, len(new))])
  inputs = images_lib.Inputs(old.inputs.paths + new.inputs.paths,
                             old.inputs.files + new.inputs.files,
                             ids('person'), ids('camera'))
  return Features(inputs, {k: np.concatenate([v, new.embeddings[k]])
                           for k, v in old.embeddings.items()},
                  old.tta, old.bundle)


def load_or_embed(spec: str, bundle, side: Optional[str] = None, **embed_kw
                  ) -> tuple[Features, Optional[str]]:
  """A FEATURES.npz as it is (its `side`), or an INPUT embedded now."""
  if spec.endswith('.npz'):
    return load(spec, bundle, side), None
  return embed_inputs(bundle, images_lib.read_inputs(spec), **embed_kw)


def check_exits(requested: str, bundle) -> tuple[str, ...]:
  """The embedding names of --exit (a name, or 'all')."""
  names = bundle.embedding_names
  if requested == 'all':
    return names
  if requested not in names:
    raise errors.ConfigError(
        f'--exit={requested}: this bundle has {", ".join(names)} (or all).')
  return (requested,)


def search(q_QxD: np.ndarray, g_GxD: np.ndarray, topk: int, *,
           proto: protocol_lib.Protocol = protocol_lib.Protocol(),
           rerank: bool = False, chunk: Optional[int] = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """(int64 [Q, K] gallery indices, float32 [Q, K] distances), nearest
  first, K = min(topk, G); ties keep gallery order. Distances under
  `proto`; with rerank, its k-reciprocal re-ranked distances."""
  num_q, num_g = len(q_QxD), len(g_GxD)
  if topk < 1:
    raise errors.ConfigError(f'--topk={topk} must be >= 1.')
  if not num_q or not num_g:
    raise errors.DataError(f'Nothing to search: {num_q} queries, {num_g} '
                           'gallery images.')
  k = min(topk, num_g)
  if rerank:
    if num_q + num_g < proto.k1 + 1:
      raise errors.ConfigError(
          f'--rerank: k1={proto.k1} needs at least {proto.k1 + 1} '
          f'images (queries + gallery); there are {num_q + num_g}. Search '
          'without --rerank.')
    chunks = [(0, num_q, proto.rerank_distances(q_QxD, g_GxD))]
  else:
    c = chunk or metrics._default_chunk(num_q, num_g)  # pylint: disable=protected-access
    chunks = ((lo, min(num_q, lo + c), None) for lo in range(0, num_q, c))
  idx, dist_out = [], []
  for lo, hi, d in chunks:
    if d is None:
      d = proto.distances(q_QxD[lo:hi], g_GxD)
    neg, i = jax.lax.top_k(-d, k)
    idx.append(np.asarray(i, np.int64))
    dist_out.append(-np.asarray(neg, np.float32))
  return np.concatenate(idx), np.concatenate(dist_out)


def results(query: Features, gallery: Features, name: str,
            idx_QxK: np.ndarray, dist_QxK: np.ndarray) -> list[dict]:
  """The --json objects of one exit: {query, exit, results: [{path,
  distance, person}]}."""
  gp = gallery.inputs.person
  out = []
  for q, (row, dists) in enumerate(zip(idx_QxK, dist_QxK)):
    out.append({'query': query.inputs.paths[q], 'exit': name, 'results': [
        {'path': gallery.inputs.paths[g], 'distance': float(d),
         'person': None if gp is None else int(gp[g])}
        for g, d in zip(row, dists)]})
  return out


# ----------------------------------------------------------------------------
# The tools' work (tools/embed and tools/search only parse and print).

# Rows a figure may hold: a figure of thousands of queries helps no one.
MAX_FIGURE_ROWS = 20


def embed_to_file(bundle_path: str, input_spec: str, out: str, *,
                  tta: int = 10, batch: int = 32, runtime: str = 'jax',
                  bad_images: str = 'error', append: bool = False,
                  overwrite: bool = False, progress: bool = True) -> dict:
  """tools/embed: embeds an INPUT's images into the features file `out`
  (with append, only those it does not hold yet); returns a summary {out,
  input, runtime, tta, embedded, skipped, images, embeddings}."""
  from dare_jax.inference import bundle as bundle_lib  # pylint: disable=g-import-not-at-top
  if append and overwrite:
    raise errors.ConfigError('--append and --overwrite: choose one.')
  if not out.endswith('.npz'):
    raise errors.ConfigError(f'--out={out}: the features file must end in '
                             '.npz.')
  if fileio.exists(out) and not (append or overwrite):
    raise errors.ConfigError(f'{out} exists; pass --overwrite to replace it '
                             'or --append to add images to it.')
  b = bundle_lib.Bundle.load(bundle_path, runtime)
  inputs = images_lib.read_inputs(input_spec)
  old = None
  if append and fileio.exists(out):
    old = load(out, b)
    if old.tta != tta:
      raise errors.ConfigError(f'{out} holds tta={old.tta} embeddings; '
                               f'append with --tta={old.tta}.')
    have = set(old.inputs.paths)
    inputs = inputs.take(np.array([p not in have for p in inputs.paths]))
  summary = {'out': fileio.absolute(out), 'input': input_spec,
             'runtime': runtime, 'tta': tta, 'embedded': 0, 'skipped': 0}
  if len(inputs):
    feats, skipped = embed_inputs(
        b, inputs, tta=tta, batch=batch, bad_images=bad_images,
        progress=progress)
    summary['embedded'] = len(feats)
    summary['skipped'] = len(inputs) - len(feats)
    if skipped:
      logging.warning('%s', skipped)
    feats = concat(old, feats) if old is not None else feats
    save(out, feats, overwrite=True, protocol=b.protocol)
  elif old is None:
    raise errors.DataError(f'{input_spec}: no image to embed.')
  summary['images'] = summary['embedded'] + (len(old) if old else 0)
  summary['embeddings'] = list(b.embedding_names)
  return summary


def _check_out(path: str, overwrite: bool) -> None:
  if path and fileio.exists(path) and not overwrite:
    raise errors.ConfigError(f'{path} exists; pass --overwrite to replace '
                             'it.')


def _match(q_person, g_person):
  if q_person is None or g_person is None or q_person < 0 or g_person < 0:
    return None
  return bool(q_person == g_person)


def figure_rows(query, gallery_feats, per_exit, input_hw) -> list[dict]:
  """The rows of figures/ranked.ranked_lists: each query, each exit."""
  from dare_jax.figures import common  # pylint: disable=g-import-not-at-top
  cache = {}
  # Crops are drawn at the input's aspect, at least 128 pixels high.
  scale = max(1, -(-128 // input_hw[0]))
  show_hw = (input_hw[0] * scale, input_hw[1] * scale)
  image = lambda f: common.file_image(f, show_hw, cache)
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


def search_files(bundle_path: str, gallery_spec: str, query_spec: str, *,
                 topk: int = 10, exit_name: str = 'fused',
                 rerank: bool = False, json_out: str = '', figure: str = '',
                 tta: int = 10, batch: int = 32, runtime: str = 'jax',
                 overwrite: bool = False, progress: bool = True
                 ) -> list[dict]:
  """tools/search: the top-K of each query in a gallery (either a
  FEATURES.npz or images embedded now), [{query, exit, results: [{path,
  distance, person}]}], also written to json_out and drawn to figure when
  given."""
  from dare_jax.inference import bundle as bundle_lib  # pylint: disable=g-import-not-at-top
  _check_out(json_out, overwrite)
  _check_out(figure, overwrite)
  b = bundle_lib.Bundle.load(bundle_path, runtime)
  names = check_exits(exit_name, b)
  kw = dict(tta=tta, batch=batch, progress=progress)
  g, skipped_g = load_or_embed(gallery_spec, b, 'gallery', **kw)
  q, skipped_q = load_or_embed(query_spec, b, 'query', **kw)
  for s in (skipped_g, skipped_q):
    if s:
      logging.warning('%s', s)
  if topk > len(g):
    logging.warning('--topk=%d: the gallery holds %d images; each query '
                    'lists %d.', topk, len(g), len(g))
  proto = b.protocol
  per_exit = {name: search(q.embeddings[name], g.embeddings[name], topk,
                           proto=proto, rerank=rerank) for name in names}
  by_exit = [results(q, g, name, idx, dist)
             for name, (idx, dist) in per_exit.items()]
  out = [r for rows in zip(*by_exit) for r in rows]  # a query's exits together
  if json_out:
    reporting.write_json(json_out, out)
  if figure:
    from dare_jax.figures import ranked as figures  # pylint: disable=g-import-not-at-top
    if len(q) * len(names) > MAX_FIGURE_ROWS:
      logging.warning('The figure shows the first %d of %d rows.',
                      MAX_FIGURE_ROWS, len(q) * len(names))
    figures.ranked_lists(
        figure, figure_rows(q, g, per_exit, b.input_hw),
        title=(f'{os.path.basename(bundle_path.rstrip("/"))}: the top '
               f'{min(topk, len(g))} of {len(g)} gallery images per query '
               f'({", ".join(names)}; {proto.describe()}'
               f'{", re-ranked" if rerank else ""})'))
  return out
