"""Embeddings of your own images as a file, and exact search over them.

FEATURES.npz (tools/embed writes it, tools/search reads it):
  paths     str [N]       the images as the INPUT named them
  stage1 .. stage4, fused float32 [N, D], the embeddings the bundle has
  person, camera          int64 [N], only when the INPUT (a CSV) had them
  files     str [N]       the absolute paths opened (search draws from them)
  tta       int           views averaged per image (10 or 1)
  bundle    str           the fingerprint of the bundle that embedded them
A gallery is embedded once: `embed --append` adds the images it does not
hold yet and keeps every old row as it was; search refuses features from
another bundle or of another dimension, since their distances mean nothing.

Search is exact: distances as the evaluator computes them
(evaluation/metrics.pairwise_distances with the run's eval.metric and
eval.normalize, from bundle.json), over chunks of queries so that memory is
[chunk, G], then the top K. With rerank, k-reciprocal re-ranking
(evaluation/rerank.rerank_features, the run's k1, k2, lambda) over queries
and gallery together; it returns the whole [Q, G] matrix.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import numpy as np

from dare_jax import errors
from dare_jax import fileio
from dare_jax.evaluation import features as features_lib
from dare_jax.evaluation import metrics
from dare_jax.evaluation import rerank as rerank_lib
from dare_jax.inference import images as images_lib

_META_KEYS = ('paths', 'files', 'person', 'camera', 'tta', 'bundle')


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


def save(path: str, feats: Features, overwrite: bool = False) -> str:
  if fileio.exists(path) and not overwrite:
    raise errors.ConfigError(f'{path} exists; pass --overwrite to replace '
                             'it (or --append to add images to it).')
  if not path.endswith('.npz'):
    raise errors.ConfigError(f'{path}: the features file must end in .npz.')
  arrays: dict[str, Any] = {
      'paths': np.array(feats.inputs.paths, dtype=str),
      'files': np.array(feats.inputs.files, dtype=str),
      'tta': np.int64(feats.tta), 'bundle': np.array(feats.bundle)}
  for k in ('person', 'camera'):
    v = getattr(feats.inputs, k)
    if v is not None:
      arrays[k] = np.asarray(v, np.int64)
  for k, v in feats.embeddings.items():
    arrays[k] = np.asarray(v, np.float32)
  if not fileio.is_remote(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.save_npz(path, arrays)
  return path


def load(path: str, bundle=None) -> Features:
  """A FEATURES.npz; with a bundle, checked against it (names, dimension,
  fingerprint)."""
  if not fileio.isfile(path):
    raise errors.DataNotFoundError(f'{path}: no such features file.')
  features_lib.check_npz(path)
  with fileio.open_npz(path) as z:
    missing = [k for k in ('paths', 'tta', 'bundle') if k not in z.files]
    if missing:
      raise errors.DataError(
          f'{path}: not a features file of tools/embed (it lacks '
          f'{", ".join(missing)}).')
    paths = tuple(str(p) for p in z['paths'])
    files = (tuple(str(p) for p in z['files']) if 'files' in z.files
             else tuple(os.path.abspath(p) for p in paths))
    ids = {k: z[k].astype(np.int64) if k in z.files else None
           for k in ('person', 'camera')}
    embs = {k: z[k].astype(np.float32) for k in z.files
            if k not in _META_KEYS}
    feats = Features(images_lib.Inputs(paths, files, ids['person'],
                                       ids['camera']),
                     embs, int(z['tta']), str(z['bundle']))
  for k, v in feats.embeddings.items():
    if v.ndim != 2 or len(v) != len(paths):
      raise errors.DataError(f'{path}: {k} has shape {v.shape}; expected '
                             f'[{len(paths)}, D].')
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


def load_or_embed(spec: str, bundle, **embed_kw
                  ) -> tuple[Features, Optional[str]]:
  """A FEATURES.npz as it is, or an INPUT embedded now."""
  if spec.endswith('.npz'):
    return load(spec, bundle), None
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
           metric: str = 'euclidean', normalize: bool = False,
           rerank: Optional[dict] = None, chunk: Optional[int] = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """(int64 [Q, K] gallery indices, float32 [Q, K] distances), nearest
  first, K = min(topk, G); ties keep gallery order.

  rerank: {'k1', 'k2', 'lambda_value'} for k-reciprocal re-ranking (the
  distances are then the re-ranked ones).
  """
  num_q, num_g = len(q_QxD), len(g_GxD)
  if topk < 1:
    raise errors.ConfigError(f'--topk={topk} must be >= 1.')
  if not num_q or not num_g:
    raise errors.DataError(f'Nothing to search: {num_q} queries, {num_g} '
                           'gallery images.')
  k = min(topk, num_g)
  if rerank is not None:
    if num_q + num_g < rerank['k1'] + 1:
      raise errors.ConfigError(
          f'--rerank: k1={rerank["k1"]} needs at least {rerank["k1"] + 1} '
          f'images (queries + gallery); there are {num_q + num_g}. Search '
          'without --rerank.')
    dist = rerank_lib.rerank_features(q_QxD, g_GxD, normalize=normalize,
                                      **rerank)
    chunks = [(0, num_q, dist)]
  else:
    c = chunk or metrics._default_chunk(num_q, num_g)  # pylint: disable=protected-access
    chunks = ((lo, min(num_q, lo + c), None) for lo in range(0, num_q, c))
  idx, dist_out = [], []
  for lo, hi, d in chunks:
    if d is None:
      d = metrics.pairwise_distances(q_QxD[lo:hi], g_GxD, metric, normalize)
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
