"""Evaluating a features file: the one path shared by --mode=eval and
`python -m dare_jax.tools.evaluate_features`.

The file (features.npz) may come from any framework. Its schema:
  query_pids, query_camids      int [Nq]   (camid -1 = unknown)
  gallery_pids, gallery_camids  int [Ng]   (pid -1 junk, 0 distractor)
  query_NAME                    float [Nq, D]   for each embedding NAME
  gallery_NAME                  float [Ng, D]
Every NAME that has both a query_ and a gallery_ array is evaluated.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax import fileio
from dare_jax.evaluation import metrics

ID_KEYS = ('query_pids', 'query_camids', 'gallery_pids', 'gallery_camids')
REPORTED = ('rank1', 'rank5', 'rank10', 'mAP', 'mINP', 'num_valid_queries')


def embedding_names(feats: Mapping[str, np.ndarray]) -> list[str]:
  """The NAMEs with both query_NAME and gallery_NAME, in file order."""
  names = []
  for key in feats:
    if key.startswith('query_') and key not in ID_KEYS:
      name = key[len('query_'):]
      if f'gallery_{name}' in feats:
        names.append(name)
  return names


def check_features(feats: Mapping[str, np.ndarray], source: str) -> list[str]:
  """Validates the schema; returns the embedding names.

  Raises:
    errors.DataError naming `source`, the key and what is wrong.
  """
  missing = [k for k in ID_KEYS if k not in feats]
  if missing:
    raise errors.DataError(
        f'{source}: missing {", ".join(missing)}. A features file needs '
        f'{", ".join(ID_KEYS)} (int [N]) and query_NAME / gallery_NAME '
        '(float [N, D]) pairs.')
  for side in ('query', 'gallery'):
    n = None
    for k in (f'{side}_pids', f'{side}_camids'):
      a = np.asarray(feats[k])
      if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise errors.DataError(f'{source}: {k} must be a 1-D integer array; '
                               f'got {a.dtype} {a.shape}.')
      if n is not None and len(a) != n:
        raise errors.DataError(f'{source}: {side}_pids has {n} entries but '
                               f'{k} has {len(a)}.')
      n = len(a)
  names = embedding_names(feats)
  if not names:
    raise errors.DataError(
        f'{source}: no embedding to evaluate: no NAME with both query_NAME '
        f'and gallery_NAME (keys: {", ".join(sorted(feats))}).')
  for name in names:
    q, g = np.asarray(feats[f'query_{name}']), np.asarray(feats[f'gallery_{name}'])
    for key, a, side in ((f'query_{name}', q, 'query'),
                         (f'gallery_{name}', g, 'gallery')):
      n = len(feats[f'{side}_pids'])
      if a.ndim != 2 or a.shape[0] != n:
        raise errors.DataError(f'{source}: {key} must be [{n}, D] (one row '
                               f'per {side} item); got shape {a.shape}.')
      if not np.issubdtype(a.dtype, np.floating):
        raise errors.DataError(f'{source}: {key} must be floating point; '
                               f'got {a.dtype}.')
      if not np.all(np.isfinite(a)):
        raise errors.DataError(f'{source}: {key} holds NaN or infinite '
                               'values.')
    if q.shape[1] != g.shape[1]:
      raise errors.DataError(f'{source}: query_{name} has D={q.shape[1]} but '
                             f'gallery_{name} has D={g.shape[1]}.')
  return names


def check_npz(path: str, what: str = 'features file') -> None:
  """DataError unless path is an .npz (a zip of .npy arrays); numpy would
  call any other file 'pickled data'."""
  if not fileio.is_zipfile(path):
    raise errors.DataError(
        f'{path} is not an .npz file (a zip archive of arrays, as '
        f'numpy.savez writes); a {what} comes from --mode=export, '
        '--mode=eval or tools/embed.')


def load_features(path: str) -> dict[str, np.ndarray]:
  """Reads and validates a features .npz (see the module docstring)."""
  if not fileio.isfile(path):
    raise errors.DataNotFoundError(f'Features file not found: {path}')
  check_npz(path)
  try:
    with fileio.open_npz(path) as f:
      feats = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise errors.DataError(f'{path}: not a readable .npz file ({e}).') from e
  check_features(feats, path)
  return feats


def evaluate_features_file(
    feats: Mapping[str, np.ndarray], *, names: Optional[Sequence[str]] = None,
    metric: str = 'euclidean', normalize: bool = False, ap: str = 'market',
    ranks: Sequence[int] = (1, 5, 10), rerank: bool = False, k1: int = 20,
    k2: int = 6, lambda_value: float = 0.3) -> dict[str, dict]:
  """{NAME: {rank1, rank5, rank10, ..., mAP, mINP, num_valid_queries,
  num_queries}} for each embedding NAME (fractions in [0, 1]).

  With rerank=True the ranking is that of the k-reciprocal re-ranked
  distances (computed from squared Euclidean distances of the features, L2
  normalised first when `normalize`; `metric` does not apply to it).
  """
  names = list(names) if names is not None else embedding_names(feats)
  ids = [np.asarray(feats[k]) for k in ID_KEYS]
  out = {}
  for name in names:
    q, g = feats[f'query_{name}'], feats[f'gallery_{name}']
    if rerank:
      from dare_jax.evaluation import rerank as rerank_lib  # pylint: disable=g-import-not-at-top
      dist_QxG = rerank_lib.rerank_features(
          q, g, k1=k1, k2=k2, lambda_value=lambda_value, normalize=normalize)
      out[name] = metrics.evaluate_ranking(dist_QxG, *ids, ranks=ranks, ap=ap)
    else:
      out[name] = metrics.evaluate_features(q, g, *ids, metric=metric,
                                            normalize=normalize, ranks=ranks,
                                            ap=ap)
    log_metrics(name, out[name], reranked=rerank)
  return out


def log_metrics(name: str, result: Mapping, reranked: bool = False) -> None:
  """One log line of an embedding's evaluate_ranking result."""
  # A summary of per-query results without 'inp' has no mINP.
  minp = f' mINP {result["mINP"]:.4f}' if 'mINP' in result else ''
  logging.info('%-8s%s rank1 %.4f mAP %.4f%s (%d of %d queries valid)', name,
               ' (re-ranked)' if reranked else '', result['rank1'],
               result['mAP'], minp, result['num_valid_queries'],
               result['num_queries'])


def evaluate_with_config(feats, eval_cfg, names=None) -> dict:
  """evaluate_features_file with config.eval's options; adds
  {'rerank': {NAME: ...}} when eval.rerank is on."""
  common = dict(names=names, normalize=eval_cfg.normalize, ap=eval_cfg.ap,
                ranks=tuple(eval_cfg.ranks))
  results = evaluate_features_file(feats, metric=eval_cfg.metric, **common)
  if eval_cfg.rerank:
    results['rerank'] = evaluate_features_file(
        feats, rerank=True, k1=eval_cfg.k1, k2=eval_cfg.k2,
        lambda_value=eval_cfg.lambda_value, **common)
  return results
