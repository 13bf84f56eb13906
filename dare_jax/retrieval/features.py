"""The one features-file schema: what --mode=eval/export, tools/embed and
other frameworks write, and what every scorer and tools/search read.

A features file (.npz) holds one or both SIDES, 'query' and 'gallery':
  {side}_NAME     float [N, D]  one array per embedding NAME (stage1..4, fused)
  {side}_pids     int [N]       person ids (-1 junk, 0 distractor); optional
                                for search, required for evaluation
  {side}_camids   int [N]       camera ids (-1 unknown); optional likewise
  {side}_paths    str [N]       the images as their list named them; optional
  {side}_files    str [N]       the absolute paths opened; optional
and, once per file:
  protocol        str  JSON of retrieval/protocol.Protocol (how to score)
  tta             int  views averaged per image (10 or 1)
  bundle          str  fingerprint of the bundle that embedded them
--mode=eval and export write both sides with ids and the protocol; tools/embed
writes a gallery side with paths, files, tta, bundle and the protocol, and
ids when its input had them (tools/search reads either side of any file). Evaluation needs both
sides' NAME, pids and camids; search needs one side's NAME and paths.
Files of tools/embed from before 2026-12-03 (bare NAME, paths, person,
camera) are read as a gallery side, said once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax import fileio

SIDES = ('query', 'gallery')
ID_FIELDS = ('pids', 'camids')
PATH_FIELDS = ('paths', 'files')
PROTOCOL_KEY = 'protocol'  # retrieval/protocol.Protocol as JSON
META_KEYS = (PROTOCOL_KEY, 'tta', 'bundle')
ID_KEYS = tuple(f'{s}_{f}' for s in SIDES for f in ID_FIELDS)
_FIELDS = ID_FIELDS + PATH_FIELDS
# tools/embed before 2026-12-03: these keys, the rest bare embedding names.
_LEGACY = {'paths': 'paths', 'files': 'files', 'person': 'pids',
           'camera': 'camids'}
_LEGACY_NOTED: set = set()


def key(side: str, field: str) -> str:
  return f'{side}_{field}'


def side_names(feats: Mapping[str, Any], side: str) -> list[str]:
  """The embedding NAMEs a side holds, in file order."""
  prefix = f'{side}_'
  return [k[len(prefix):] for k in feats
          if k.startswith(prefix) and k[len(prefix):] not in _FIELDS]


def embedding_names(feats: Mapping[str, Any]) -> list[str]:
  """The NAMEs with both query_NAME and gallery_NAME, in file order."""
  return [n for n in side_names(feats, 'query')
          if key('gallery', n) in feats]


def check_features(feats: Mapping[str, Any], source: str) -> list[str]:
  """Validates a file for evaluation (both sides, ids); returns the
  embedding names.

  Raises:
    errors.DataError naming `source`, the key and what is wrong.
  """
  missing = [k for k in ID_KEYS if k not in feats]
  if missing:
    raise errors.DataError(
        f'{source}: missing {", ".join(missing)}. A features file to '
        f'evaluate needs {", ".join(ID_KEYS)} (int [N]) and query_NAME / '
        'gallery_NAME (float [N, D]) pairs (schema: '
        'dare_jax/retrieval/features.py).')
  for side in SIDES:
    _check_ids(feats, side, source)
  names = embedding_names(feats)
  if not names:
    raise errors.DataError(
        f'{source}: no embedding to evaluate: no NAME with both query_NAME '
        f'and gallery_NAME (keys: {", ".join(sorted(feats))}).')
  lonely = [key(s, n) for s in SIDES for n in side_names(feats, s)
            if n not in names]
  if lonely:
    raise errors.DataError(
        f'{source}: {", ".join(lonely)} has no counterpart on the other side '
        f'(query_NAME needs gallery_NAME); the file is incomplete.')
  for name in names:
    dq, dg = (_check_embedding(feats, side, name, source) for side in SIDES)
    if dq != dg:
      raise errors.DataError(f'{source}: query_{name} has D={dq} but '
                             f'gallery_{name} has D={dg}.')
  return names


def _check_ids(feats, side: str, source: str) -> Optional[int]:
  n = None
  for f in ID_FIELDS:
    k = key(side, f)
    if k not in feats:
      continue
    a = np.asarray(feats[k])
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
      raise errors.DataError(f'{source}: {k} must be a 1-D integer array; '
                             f'got {a.dtype} {a.shape}.')
    if n is not None and len(a) != n:
      raise errors.DataError(f'{source}: {side}_pids has {n} entries but '
                             f'{k} has {len(a)}.')
    n = len(a)
  return n


def _check_embedding(feats, side: str, name: str, source: str) -> int:
  k = key(side, name)
  a = np.asarray(feats[k])
  n = next((len(feats[key(side, f)]) for f in _FIELDS
            if key(side, f) in feats), len(a))
  if a.ndim != 2 or a.shape[0] != n:
    raise errors.DataError(f'{source}: {k} must be [{n}, D] (one row per '
                           f'{side} item); got shape {a.shape}.')
  if not np.issubdtype(a.dtype, np.floating):
    raise errors.DataError(f'{source}: {k} must be floating point; got '
                           f'{a.dtype}.')
  if not np.all(np.isfinite(a)):
    raise errors.DataError(f'{source}: {k} holds NaN or infinite values.')
  return a.shape[1]


def check_npz(path: str, what: str = 'features file') -> None:
  """DataError unless path is an .npz (a zip of .npy arrays); numpy would
  call any other file 'pickled data'."""
  if not fileio.is_zipfile(path):
    raise errors.DataError(
        f'{path} is not an .npz file (a zip archive of arrays, as '
        f'numpy.savez writes); a {what} comes from --mode=export, '
        '--mode=eval or tools/embed.')


def read(path: str) -> dict[str, np.ndarray]:
  """Every array of a features file, as written (legacy tools/embed files
  renamed to the schema)."""
  if not fileio.isfile(path):
    raise errors.DataNotFoundError(f'Features file not found: {path}')
  check_npz(path)
  try:
    with fileio.open_npz(path) as f:
      feats = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError) as e:
    raise errors.DataError(f'{path}: not a readable .npz file ({e}); '
                           'write it again.') from e
  if 'paths' in feats and not any(k.startswith(('query_', 'gallery_'))
                                  for k in feats):
    if path not in _LEGACY_NOTED:
      _LEGACY_NOTED.add(path)
      logging.warning('%s: a tools/embed file from before 2026-12-03 (bare '
                      'names); read as a gallery side.', path)
    feats = {(key('gallery', _LEGACY[k]) if k in _LEGACY else
              k if k in META_KEYS else key('gallery', k)): v
             for k, v in feats.items()}
  return feats


def load_features(path: str) -> dict[str, np.ndarray]:
  """A features file validated for evaluation (check_features)."""
  feats = read(path)
  check_features(feats, path)
  return feats


def write(path: str, feats: Mapping[str, Any], protocol=None) -> str:
  """Writes a features dict (the schema's keys), with `protocol` (a
  retrieval/protocol.Protocol) recorded when given."""
  arrays = dict(feats)
  if protocol is not None:
    arrays[PROTOCOL_KEY] = protocol.to_array()
  fileio.save_npz(path, arrays)
  return path


@dataclasses.dataclass(frozen=True)
class Side:
  """One side of a features file: embeddings and what is known of each
  row (None where the file does not say)."""
  embeddings: dict  # {NAME: float32 [N, D]}
  pids: Optional[np.ndarray] = None  # int64 [N]
  camids: Optional[np.ndarray] = None
  paths: Optional[tuple] = None
  files: Optional[tuple] = None

  def to_arrays(self, side: str) -> dict[str, np.ndarray]:
    out: dict[str, Any] = {}
    for f in ID_FIELDS:
      if getattr(self, f) is not None:
        out[key(side, f)] = np.asarray(getattr(self, f), np.int64)
    for f in PATH_FIELDS:
      if getattr(self, f) is not None:
        out[key(side, f)] = np.array(getattr(self, f), dtype=str)
    for name, v in self.embeddings.items():
      out[key(side, name)] = np.asarray(v, np.float32)
    return out


def read_side(feats: Mapping[str, Any], side: str, source: str) -> Side:
  """One side of a file read by read(); DataError when it has no
  embedding or its arrays disagree in length."""
  names = side_names(feats, side)
  if not names:
    raise errors.DataError(
        f'{source}: no {side} embeddings ({side}_NAME arrays; keys: '
        f'{", ".join(sorted(feats))}).')
  _check_ids(feats, side, source)
  for name in names:
    _check_embedding(feats, side, name, source)
  get = lambda f: feats.get(key(side, f))
  as_str = lambda a: None if a is None else tuple(str(p) for p in a)
  as_int = lambda a: None if a is None else np.asarray(a).astype(np.int64)
  return Side({n: np.asarray(feats[key(side, n)], np.float32)
               for n in names}, as_int(get('pids')), as_int(get('camids')),
              as_str(get('paths')), as_str(get('files')))
