"""Re-ID retrieval metrics: pairwise distances, CMC, mAP and mINP, in JAX.

Protocol (official Market-1501 evaluation). For each query, the gallery is
ranked by ascending distance, ties broken by gallery index (stable sort), and
then two kinds of gallery entries are REMOVED from that query's ranking:
  * junk: gallery pid -1;
  * the query's own camera: same pid AND same camid as the query.
Distractors (pid 0) stay in as negatives. A "good" gallery image has the
query's pid and a different camid. Queries with no good image are left out
of every average (counted by `num_valid_queries`).

Unknown cameras (camid -1, e.g. a folder of your own without camera ids):
a camera that is unknown on either side never equals another, so nothing is
removed for sharing the query's camera and every gallery image of the
query's identity is a good match -- the plain retrieval protocol. The query
image itself must then not be in the gallery (it would be a free hit).

CMC rank-k is the fraction of valid queries whose first good image lies in
the top k of the remaining gallery. AP comes in two flavours; with n_good good
images and the k-th hit (k = 1..n_good) at 1-based rank r among the remaining
gallery:
  * 'market' (official Market-1501 compute_AP, trapezoidal):
      sum_k (1 / n_good) * ((k - 1) / (r - 1) + k / r) / 2,
    where (k - 1) / (r - 1) reads as 1 when r = 1;
  * 'standard' (torchreid / fast-reid): sum_k (1 / n_good) * k / r.
INP (inverse negative penalty; Ye et al., "Deep Learning for Person
Re-identification: A Survey and Outlook", 2020, as fast-reid reports it) is
n_good / R_hard, with R_hard the rank (same 1-based rank among the
remaining gallery) of the last, hardest, good image; mINP averages it over
the valid queries as mAP averages AP.

Queries are processed in fixed-size chunks by one jitted function (the last
chunk is padded, so it compiles once per (chunk, G)); peak memory is a small
multiple of chunk x G words instead of Q x G.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dare_jax import errors

METRICS = ('euclidean', 'sqeuclidean', 'cosine')
AP_KINDS = ('market', 'standard')

# The default chunk keeps each [chunk, G] intermediate at about 2**20 words
# (4 MiB; Market-1501: 65 queries a chunk). On CPU, ranking Market-1501 then
# adds ~180 MB to the process (incl. ~95 MB of compiler), and larger chunks
# were no faster.
_CHUNK_ELEMENTS = 1 << 20
# Guards the divisions in L2 normalisation against all-zero features.
_NORM_EPS = 1e-12


# ----------------------------------------------------------------------------
# Distances.


@functools.partial(jax.jit, static_argnames=('metric', 'normalize'))
def _pairwise_distances(q_QxD, g_GxD, metric, normalize):
  q_QxD = q_QxD.astype(jnp.float32)
  g_GxD = g_GxD.astype(jnp.float32)
  if normalize or metric == 'cosine':
    q_QxD = q_QxD / jnp.maximum(
        jnp.linalg.norm(q_QxD, axis=1, keepdims=True), _NORM_EPS)
    g_GxD = g_GxD / jnp.maximum(
        jnp.linalg.norm(g_GxD, axis=1, keepdims=True), _NORM_EPS)
  if metric != 'cosine':
    # Distances do not change under a common shift, but the rounding error of
    # the expanded form below grows with |q|^2 + |g|^2; centring removes the
    # large shared mean of e.g. post-ReLU features.
    centre_D = jnp.mean(g_GxD, axis=0)
    q_QxD, g_GxD = q_QxD - centre_D, g_GxD - centre_D
  # HIGHEST keeps the matmul in true float32 (no TF32 / bf16 passes on GPU or
  # TPU); the expanded Euclidean form cancels badly without it.
  dot_QxG = jnp.matmul(q_QxD, g_GxD.T, precision=jax.lax.Precision.HIGHEST)
  if metric == 'cosine':
    return 1.0 - dot_QxG
  q2_Qx1 = jnp.sum(q_QxD * q_QxD, axis=1, keepdims=True)
  g2_1xG = jnp.sum(g_GxD * g_GxD, axis=1)[None, :]
  # Rounding can push the expanded form slightly below 0 for near-identical
  # vectors; sqrt of that would be NaN.
  sq_QxG = jnp.maximum(q2_Qx1 + g2_1xG - 2.0 * dot_QxG, 0.0)
  if metric == 'sqeuclidean':
    return sq_QxG
  return jnp.sqrt(sq_QxG)


def pairwise_distances(q_QxD, g_GxD, metric: str = 'euclidean',
                       normalize: bool = False) -> jax.Array:
  """Distances between every query and every gallery feature.

  Args:
    q_QxD: float [Q, D] query features.
    g_GxD: float [G, D] gallery features.
    metric: 'euclidean', 'sqeuclidean' or 'cosine' (1 - cosine similarity).
    normalize: L2-normalise the features first (a no-op for 'cosine').

  Returns:
    float32 [Q, G] distances, on JAX's default device.

  Raises:
    errors.ConfigError (options) / errors.DataError (inputs), both
    ValueErrors: unknown metric or feature shapes that do not agree.
  """
  if metric not in METRICS:
    raise errors.ConfigError(
        f'Unknown metric {metric!r}; expected one of {METRICS}.')
  q_shape, g_shape = np.shape(q_QxD), np.shape(g_GxD)
  if len(q_shape) != 2 or len(g_shape) != 2:
    raise errors.DataError(
        f'Features must be 2-D [N, D]; got query {q_shape} and gallery '
        f'{g_shape}.')
  if q_shape[1] != g_shape[1]:
    raise errors.DataError(
        f'Query features have D={q_shape[1]} but gallery features have '
        f'D={g_shape[1]}.')
  return _pairwise_distances(jnp.asarray(q_QxD), jnp.asarray(g_GxD),
                             metric=metric, normalize=bool(normalize))


# ----------------------------------------------------------------------------
# Ranking.


def removal_mask(q_pids, q_camids, g_pids, g_camids):
  """The protocol's same-identity and removed masks (see the module doc).

  Works on NumPy and jax.numpy arrays alike, by broadcasting.

  Args:
    q_pids, q_camids: int [Q] query person and camera ids.
    g_pids, g_camids: int [G] gallery ids, or [Q, G] (a row of gallery ids
      per query, e.g. already in each query's ranked order).

  Returns:
    (same_pid_QxG, removed_QxG), bool [Q, G]: the gallery entry has the
    query's pid; the entry is dropped from the query's ranking (junk, pid
    -1, or the query's pid seen by the query's own camera; an unknown camera,
    camid -1, never matches).
  """
  q_pids_Qx1, q_camids_Qx1 = q_pids[:, None], q_camids[:, None]
  same_pid_QxG = g_pids == q_pids_Qx1
  # Unknown cameras (-1) never match: nothing is removed for them.
  same_cam_QxG = ((g_camids == q_camids_Qx1) & (g_camids >= 0) &
                  (q_camids_Qx1 >= 0))
  removed_QxG = (g_pids == -1) | (same_pid_QxG & same_cam_QxG)
  return same_pid_QxG, removed_QxG


def _float_dtype():
  # float64 only when the user enabled x64; never switched on here.
  return jax.dtypes.canonicalize_dtype(np.float64)


def _ordered_uint32(x):
  """Maps float32 to uint32 so that unsigned order equals numeric order."""
  # NumPy ranks -0.0 and +0.0 as equal and every NaN last; canonical +0.0
  # and +NaN give the same order on the bit patterns.
  x = jnp.where(x == 0, 0.0, x)
  x = jnp.where(jnp.isnan(x), jnp.nan, x).astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  negative = (bits >> 31) == 1
  return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _radix_argsort_rows(x_CxG):
  """Stable argsort along axis 1 from single-operand int32 sorts.

  XLA:CPU sorts a lone int32 operand with a plain comparison about 6x faster
  than any sort carrying a payload (which argsort needs), so this is an LSD
  radix sort: each pass packs one digit of the order-preserving key above the
  position, sorts that int32, and reads the permutation from the low bits.
  Sorting by (digit, position) keeps each pass stable. Two passes cover the
  32-bit key for G <= 2**15 (Market-1501, DukeMTMC-reID), three up to 2**20.
  """
  c, g = x_CxG.shape
  idx_bits = max(1, (g - 1).bit_length())
  digit_bits = 31 - idx_bits  # The packed key stays a non-negative int32.
  if digit_bits < 1:
    raise errors.DataError(f'A gallery of {g} images is too large to rank.')
  num_passes = -(-32 // digit_bits)
  key_CxG = _ordered_uint32(x_CxG)
  pos_CxG = jax.lax.broadcasted_iota(jnp.int32, (c, g), 1)
  idx_mask = (1 << idx_bits) - 1
  digit_mask = jnp.uint32((1 << digit_bits) - 1)
  perm_CxG = pos_CxG
  for t in range(num_passes):
    digit_CxG = ((key_CxG >> (t * digit_bits)) & digit_mask).astype(jnp.int32)
    if t:
      digit_CxG = jnp.take_along_axis(digit_CxG, perm_CxG, axis=1)
    packed_CxG = jnp.sort((digit_CxG << idx_bits) | pos_CxG, axis=1)
    step_CxG = packed_CxG & idx_mask
    perm_CxG = (step_CxG if t == 0 else
                jnp.take_along_axis(perm_CxG, step_CxG, axis=1))
  return perm_CxG


def _use_radix() -> bool:
  # GPU and TPU sorts with a payload are fast; only XLA:CPU needs the detour.
  return jax.default_backend() == 'cpu'


def _stable_argsort_rows(x_CxG, radix):
  if radix:
    return _radix_argsort_rows(x_CxG)
  return jnp.argsort(x_CxG, axis=1, stable=True)


@functools.partial(jax.jit, static_argnames=('ap', 'radix'))
def _rank_chunk(dist_CxG, q_pids_C, q_camids_C, g_pids_G, g_camids_G, ap,
                radix):
  """Per-query first-hit rank, AP, INP and good count for one chunk."""
  g = dist_CxG.shape[1]
  order_CxG = _stable_argsort_rows(dist_CxG, radix)
  pids_CxG = g_pids_G[order_CxG]
  cams_CxG = g_camids_G[order_CxG]
  same_pid_CxG, removed_CxG = removal_mask(q_pids_C, q_camids_C, pids_CxG,
                                           cams_CxG)
  good_CxG = same_pid_CxG & ~removed_CxG
  # rank: 1-based rank among the entries that survive removal (read only at
  # good, hence kept, positions); hit: running count of good entries.
  kept_CxG = (~removed_CxG).astype(jnp.int32)
  good01_CxG = good_CxG.astype(jnp.int32)
  count_bits = g.bit_length()  # Both counts are at most g.
  if 2 * count_bits <= 31:
    # One scan instead of two (the scans cost as much as a radix pass).
    both_CxG = jnp.cumsum(kept_CxG + (good01_CxG << count_bits), axis=1)
    rank_CxG = both_CxG & ((1 << count_bits) - 1)
    hit_CxG = both_CxG >> count_bits
  else:
    rank_CxG = jnp.cumsum(kept_CxG, axis=1)
    hit_CxG = jnp.cumsum(good01_CxG, axis=1)
  n_good_C = hit_CxG[:, -1]
  first_C = jnp.min(jnp.where(good_CxG, rank_CxG, g + 1), axis=1) - 1
  first_C = jnp.where(n_good_C > 0, first_C, -1)
  # The hardest good image: the largest kept rank of a good entry (0 when
  # there is none; such a query is not valid and its INP is 0, as its AP).
  last_C = jnp.max(jnp.where(good_CxG, rank_CxG, 0), axis=1)

  fdt = _float_dtype()
  r_CxG = rank_CxG.astype(fdt)
  k_CxG = hit_CxG.astype(fdt)
  if ap == 'market':
    # At r = 1 the "previous precision" (k-1)/(r-1) is defined as 1; the
    # denominator is patched so the unused branch never divides by zero.
    prev_CxG = jnp.where(rank_CxG > 1,
                         (k_CxG - 1) / jnp.maximum(r_CxG - 1, 1), 1.0)
    term_CxG = 0.5 * (prev_CxG + k_CxG / r_CxG)
  else:
    term_CxG = k_CxG / r_CxG
  ap_sum_C = jnp.sum(jnp.where(good_CxG, term_CxG, 0.0), axis=1)
  ap_C = jnp.where(n_good_C > 0,
                   ap_sum_C / jnp.maximum(n_good_C, 1).astype(fdt), 0.0)
  inp_C = jnp.where(n_good_C > 0,
                    n_good_C.astype(fdt) / jnp.maximum(last_C, 1).astype(fdt),
                    0.0)
  return first_C, ap_C, inp_C, n_good_C


def _as_ids(x, name: str, length: Optional[int] = None) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 1:
    raise errors.DataError(f'{name} must be 1-D; got shape {x.shape}.')
  if length is not None and len(x) != length:
    raise errors.DataError(f'{name} has {len(x)} entries; expected {length}.')
  if x.size and not np.issubdtype(x.dtype, np.integer):
    raise errors.DataError(f'{name} must hold integers; got dtype {x.dtype}.')
  if x.size and (x.min() < np.iinfo(np.int32).min or
                 x.max() > np.iinfo(np.int32).max):
    raise errors.DataError(f'{name} has values outside the int32 range.')
  return x.astype(np.int32)


def _check_dist(dist_QxG, q_pids, q_camids, g_pids, g_camids):
  shape = np.shape(dist_QxG)
  if len(shape) != 2:
    raise errors.DataError(f'dist_QxG must be 2-D [Q, G]; got shape {shape}.')
  num_q, num_g = shape
  ids = (_as_ids(q_pids, 'q_pids', num_q), _as_ids(q_camids, 'q_camids', num_q),
         _as_ids(g_pids, 'g_pids', num_g), _as_ids(g_camids, 'g_camids', num_g))
  return num_q, num_g, ids


def _default_chunk(num_q: int, num_g: int) -> int:
  return max(1, min(num_q, _CHUNK_ELEMENTS // max(num_g, 1)))


def evaluate_per_query(dist_QxG, q_pids, q_camids, g_pids, g_camids, *,
                       ap: str = 'market',
                       query_chunk: Optional[int] = None) -> dict:
  """Per-query ranking results under the Market-1501 protocol.

  Args:
    dist_QxG: float [Q, G] distances (cast to float32; smaller = closer).
    q_pids: int [Q] query person ids.
    q_camids: int [Q] query camera ids.
    g_pids: int [G] gallery person ids (-1 junk, 0 distractor).
    g_camids: int [G] gallery camera ids.
    ap: 'market' (trapezoidal, official) or 'standard' (mean precision@hit).
    query_chunk: queries ranked per jitted call; the default keeps chunk x G
      at about 1M elements.

  Returns:
    A dict of NumPy arrays:
      first_hit_rank: int [Q], 0-based rank of the first good image among
        the gallery left after removal; -1 when the query is not valid.
      ap: float [Q] average precision; 0 when the query is not valid.
      inp: float [Q] inverse negative penalty, num_good / (1-based rank of
        the last good image among the gallery left after removal); 0 when
        the query is not valid.
      num_good: int [Q] good gallery images per query.
      valid: bool [Q] the query has at least one good gallery image.

  Raises:
    errors.ConfigError (options) / errors.DataError (inputs), both
    ValueErrors: shapes that do not agree, an unknown `ap`, a bad chunk size.
  """
  if ap not in AP_KINDS:
    raise errors.ConfigError(f'Unknown ap {ap!r}; expected one of {AP_KINDS}.')
  num_q, num_g, (qp, qc, gp, gc) = _check_dist(
      dist_QxG, q_pids, q_camids, g_pids, g_camids)
  if query_chunk is None:
    chunk = _default_chunk(num_q, num_g)
  else:
    if (isinstance(query_chunk, bool) or
        not isinstance(query_chunk, (int, np.integer)) or query_chunk < 1):
      raise errors.ConfigError(
          f'query_chunk must be a positive int; got {query_chunk!r}.')
    chunk = int(min(query_chunk, max(num_q, 1)))
  if num_q == 0 or num_g == 0:
    return {'first_hit_rank': np.full((num_q,), -1, np.int32),
            'ap': np.zeros((num_q,), np.float32),
            'inp': np.zeros((num_q,), np.float32),
            'num_good': np.zeros((num_q,), np.int32),
            'valid': np.zeros((num_q,), bool)}

  # NumPy input is converted a chunk at a time, so no full float32 copy of
  # a large matrix is made; a jax.Array is already where it will be ranked.
  on_device = isinstance(dist_QxG, jax.Array)
  dist = dist_QxG if on_device else np.asarray(dist_QxG)
  radix = _use_radix()
  g_pids_G, g_camids_G = jnp.asarray(gp), jnp.asarray(gc)
  firsts, aps, inps, n_goods = [], [], [], []
  for start in range(0, num_q, chunk):
    stop = min(start + chunk, num_q)
    d = dist[start:stop].astype(np.float32)
    p, c = qp[start:stop], qc[start:stop]
    pad = chunk - (stop - start)
    if pad:
      # Padded rows are ranked like any other and dropped below; padding
      # keeps every call at the same shape so the function compiles once.
      d = (jnp if on_device else np).pad(d, ((0, pad), (0, 0)))
      p, c = np.pad(p, (0, pad)), np.pad(c, (0, pad))
    first_C, ap_C, inp_C, n_good_C = _rank_chunk(
        jnp.asarray(d), jnp.asarray(p), jnp.asarray(c), g_pids_G, g_camids_G,
        ap=ap, radix=radix)
    n = stop - start
    firsts.append(first_C[:n])
    aps.append(ap_C[:n])
    inps.append(inp_C[:n])
    n_goods.append(n_good_C[:n])
    if len(firsts) > 1:
      # Dispatch is asynchronous: without this wait every chunk's input (and
      # work space) would be allocated at once. One chunk in flight while the
      # next is prepared keeps the device busy.
      firsts[-2].block_until_ready()
  first = np.asarray(jnp.concatenate(firsts))
  n_good = np.asarray(jnp.concatenate(n_goods))
  return {'first_hit_rank': first,
          'ap': np.asarray(jnp.concatenate(aps)),
          'inp': np.asarray(jnp.concatenate(inps)),
          'num_good': n_good,
          'valid': n_good > 0}


def _check_ranks(ranks: Sequence[int]) -> tuple[int, ...]:
  ranks = tuple(ranks)
  for k in ranks:
    if (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
      raise errors.ConfigError(f'ranks must be positive ints; got {ranks!r}.')
  return tuple(int(k) for k in ranks)


def summarize(per_query: dict, ranks: Sequence[int] = (1, 5, 10)) -> dict:
  """Aggregates evaluate_per_query's output into CMC rank-k, mAP and mINP.

  Args:
    per_query: the dict evaluate_per_query returns (or a row subset of it).
      'inp' may be left out (a dict assembled from first_hit_rank, ap,
      num_good and valid alone); 'mINP' is then not reported.
    ranks: the k of each CMC rank-k to report.

  Returns:
    {'rank{k}': float for k in ranks, 'mAP': float, 'mINP': float,
     'num_valid_queries': int, 'num_queries': int}; fractions in [0, 1].

  Raises:
    errors.ConfigError (options) / errors.DataError (inputs), both
    ValueErrors: no query has a good gallery image, or bad ranks.
  """
  ranks = _check_ranks(ranks)
  valid = np.asarray(per_query['valid'], bool)
  num_valid = int(valid.sum())
  if num_valid == 0:
    raise errors.DataError(
        'No query has a good gallery image (same pid, different camera): '
        'CMC and mAP are undefined.')
  first = np.asarray(per_query['first_hit_rank'])[valid]
  out = {}
  for k in ranks:
    # Integer counts keep rank-k exact; only the final division is float.
    out[f'rank{k}'] = int(np.count_nonzero(first < k)) / num_valid
  out['mAP'] = float(np.mean(np.asarray(per_query['ap'])[valid],
                             dtype=np.float64))
  if 'inp' in per_query:
    out['mINP'] = float(np.mean(np.asarray(per_query['inp'])[valid],
                                dtype=np.float64))
  out['num_valid_queries'] = num_valid
  out['num_queries'] = int(valid.shape[0])
  return out


def evaluate_ranking(dist_QxG, q_pids, q_camids, g_pids, g_camids, *,
                     ranks: Sequence[int] = (1, 5, 10), ap: str = 'market',
                     query_chunk: Optional[int] = None) -> dict:
  """CMC rank-k, mAP and mINP of a distance matrix under the Market-1501
  protocol.

  Args:
    dist_QxG: float [Q, G] distances (smaller = closer).
    q_pids, q_camids: int [Q] query person and camera ids.
    g_pids, g_camids: int [G] gallery person and camera ids.
    ranks: the k of each CMC rank-k to report.
    ap: 'market' (trapezoidal, official) or 'standard' (mean precision@hit).
    query_chunk: queries ranked per jitted call (default: about 1M / G).

  Returns:
    {'rank{k}': float for k in ranks, 'mAP': float, 'mINP': float,
     'num_valid_queries': int, 'num_queries': int}; fractions in [0, 1].

  Raises:
    errors.ConfigError (options) / errors.DataError (inputs), both
    ValueErrors: bad shapes or options, or no valid query at all.
  """
  ranks = _check_ranks(ranks)
  per_query = evaluate_per_query(dist_QxG, q_pids, q_camids, g_pids, g_camids,
                                 ap=ap, query_chunk=query_chunk)
  return summarize(per_query, ranks)


def evaluate_features(q_feats, g_feats, q_pids, q_camids, g_pids, g_camids,
                      *, metric: str = 'euclidean', normalize: bool = False,
                      **kwargs) -> dict:
  """pairwise_distances followed by evaluate_ranking.

  Args:
    q_feats: float [Q, D] query features.
    g_feats: float [G, D] gallery features.
    q_pids, q_camids: int [Q] query person and camera ids.
    g_pids, g_camids: int [G] gallery person and camera ids.
    metric: see pairwise_distances.
    normalize: L2-normalise the features first.
    **kwargs: ranks, ap, query_chunk for evaluate_ranking.

  Returns:
    evaluate_ranking's dict.

  Raises:
    errors.ConfigError (options) / errors.DataError (inputs), both
    ValueErrors: as pairwise_distances and evaluate_ranking.
  """
  # Option errors surface before the distances are computed.
  if kwargs.get('ap', 'market') not in AP_KINDS:
    raise errors.ConfigError(
        f'Unknown ap {kwargs["ap"]!r}; expected one of {AP_KINDS}.')
  _check_ranks(kwargs.get('ranks', ()))
  dist_QxG = pairwise_distances(q_feats, g_feats, metric=metric,
                                normalize=normalize)
  return evaluate_ranking(dist_QxG, q_pids, q_camids, g_pids, g_camids,
                          **kwargs)
