"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), sparse and chunked, in JAX.

Exactly the semantics of the authors' public `re_ranking.py` (queries first,
N = Q + G images):
  * original[i, j] = squared Euclidean distance, each row divided by its max;
  * R(i, k) = {j in the k+1 nearest of i : i in the k+1 nearest of j};
  * expansion: every c in R(i, k1) whose R(c, round(k1/2)) shares more than
    2/3 of its members with R(i, k1) adds that set; then unique;
  * V[i, j] = exp(-original[i, j]) / sum over the expansion set of i;
  * query expansion (k2 != 1): V[i] <- mean of V over the k2 nearest of i;
  * jaccard[i, g] = 1 - s / (2 - s), s = sum_j min(V[i, j], V[g, j]);
  * final = (1 - lambda) * jaccard + lambda * original, queries x gallery.

The authors hold several dense N x N arrays (distances, argsort, V, the
expanded V). Here nothing of size N x N is ever built from features:
  1. distance tiles [C, N] give each row's max and its k1+1 nearest
     neighbours (knn [N, k1+1]); R(i, k) is a mask over knn[i] found by
     gathering knn[knn[i]];
  2. the expansion sets are padded index lists, deduplicated by sorting
     (sentinel N), so V is sparse: idx [N, M], val [N, M] with M the realised
     largest set; weights recompute original[i, j] from the two feature rows;
  3. query expansion gathers k2 rows, sorts the union and sums duplicates;
  4. the Jaccard numerator walks an inverted index (CSC) of the gallery rows
     of V: for query i, every (j, V[i, j]) pair visits the column list of j.
     The visits are laid out ragged (exactly the sum of the column lengths,
     padded to a power of two), so a hub column that sits in hundreds of
     rows costs only what it holds; padding every column to the longest
     (~14x the mean on clustered Market-sized data) is avoided;
  5. queries are grouped into runs with a bounded number of visits and
     written in place into one donated [Q, G] buffer; the original term is
     recomputed per chunk.
Memory is O(N (k1 + M2) + nnz(V) + Q G) besides a few [C, N] tiles; work is
O(N^2 D) for the distances plus O(visits) for the Jaccard term.

Every jitted step works on fixed-size row chunks (the last one padded), so
each compiles once per problem shape; the Jaccard step compiles once per
power-of-two visit count (a handful).

Neighbour ties: jax.lax.top_k keeps the lower index first among equal
distances, while the authors' np.argsort (quicksort) has no defined order
among ties. Continuous features rarely tie, but float32 distances over
Market-1501-sized rows (19,281 values) occasionally do at a k boundary; on
the benchmark's synthetic Market data one row did, which moved 157 of 53.6M
output entries (max 0.064) against the authors' code, and with their argsort
made stable (ties by index) the two agree to 4e-7.
"""

from __future__ import annotations

import functools
import numbers
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from dare_jax import errors

# Words per [C, N] distance tile (and per [C, G] output chunk). 4M words =
# 16 MiB on CPU (Market-1501: 217 rows a tile); accelerators get bigger tiles
# because each chunk is one dispatch and their per-dispatch cost dominates
# small tiles.
_TILE_ELEMENTS_CPU = 1 << 22
_TILE_ELEMENTS_ACCEL = 1 << 26
# Visits (column entries walked) per Jaccard step: the smallest buffer, and
# the most a step takes unless one query alone needs more (each visit holds
# ~6 words of work space).
_MIN_VISITS = 1 << 12
_MAX_VISITS_CPU = 1 << 22
_MAX_VISITS_ACCEL = 1 << 26
# Guards the divisions in L2 normalisation against all-zero features.
_NORM_EPS = 1e-12
_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------
# Where distances come from: features ('features': (f_NxD, sq_N), centred)
# or a dense, already row-normalised matrix ('dense': (orig_NxN,)).


def _rows_sq(kind, src, rows_C):
  """Unnormalised squared distances of rows_C to all N images: [C, N]."""
  if kind == 'dense':
    return src[0][rows_C]
  f_NxD, sq_N = src
  dot_CxN = jnp.matmul(f_NxD[rows_C], f_NxD.T, precision=_HIGHEST)
  # Rounding can push the expanded form slightly below 0 for near-identical
  # vectors (an image with itself).
  return jnp.maximum(sq_N[rows_C][:, None] + sq_N[None, :] - 2.0 * dot_CxN,
                     0.0)


def _pairs_sq(kind, src, rows_C, cols_CxM):
  """Unnormalised squared distances of rows_C[c] to cols_CxM[c, m]."""
  if kind == 'dense':
    return src[0][rows_C[:, None], cols_CxM]
  f_NxD, sq_N = src
  # Same expanded form (and clamp) as the tiles, so a pair gets the value
  # its tile gave it up to float32 summation order.
  dot_CxM = jnp.einsum('cd,cmd->cm', f_NxD[rows_C], f_NxD[cols_CxM],
                       precision=_HIGHEST)
  return jnp.maximum(sq_N[rows_C][:, None] + sq_N[cols_CxM] - 2.0 * dot_CxM,
                     0.0)


@functools.partial(jax.jit, static_argnames=('normalize',))
def _prepare_features(feats_NxD, normalize):
  f_NxD = feats_NxD.astype(jnp.float32)
  if normalize:
    f_NxD = f_NxD / jnp.maximum(
        jnp.linalg.norm(f_NxD, axis=1, keepdims=True), _NORM_EPS)
  # Distances do not change under a common shift, but the rounding error of
  # the expanded form grows with |x|^2; centring removes a large shared mean.
  f_NxD = f_NxD - jnp.mean(f_NxD, axis=0)
  return f_NxD, jnp.sum(f_NxD * f_NxD, axis=1)


@jax.jit
def _prepare_dense(dist_q_g, dist_q_q, dist_g_g):
  d_NxN = jnp.concatenate([
      jnp.concatenate([dist_q_q, dist_q_g], axis=1),
      jnp.concatenate([dist_q_g.T, dist_g_g], axis=1)], axis=0)
  d_NxN = jnp.square(d_NxN.astype(jnp.float32))
  # The authors' np.transpose(d / np.max(d, axis=0)): for a symmetric d this
  # divides each row by its max.
  return (d_NxN / jnp.max(d_NxN, axis=0)).T


# ----------------------------------------------------------------------------
# Jitted steps over row chunks.


@functools.partial(jax.jit, static_argnames=('kind', 'k'))
def _knn_chunk(kind, src, rows_C, k):
  """Row max of the distances and the k nearest (ascending) of each row."""
  d_CxN = _rows_sq(kind, src, rows_C)
  rowmax_C = jnp.max(d_CxN, axis=1)
  # top_k of the negated distances: ascending distance, lower index first
  # among ties. Normalising by a positive row max does not change the order.
  _, knn_CxK = jax.lax.top_k(-d_CxN, k)
  return knn_CxK.astype(jnp.int32), rowmax_C


def _reciprocal(knn_NxK, rows, k):
  """R(row, k) as a mask over the row's k+1 nearest, for rows of any shape.

  Returns (near, mask), both rows.shape + (k+1,): mask[..., a] says that
  the row is among the k+1 nearest of its a-th nearest near[..., a].
  """
  near = knn_NxK[rows, :k + 1]
  back = knn_NxK[near, :k + 1]
  return near, jnp.any(back == rows[..., None, None], axis=-1)


@functools.partial(jax.jit, static_argnames=('k1', 'kh'))
def _sets_chunk(knn_NxK, rows_C, k1, kh):
  """Sorted, deduplicated expansion sets, padded with N: ([C, W], [C])."""
  n = knn_NxK.shape[0]
  c = rows_C.shape[0]
  knn_CxK, r_CxK = _reciprocal(knn_NxK, rows_C, k1)
  # R(c, kh) of every neighbour c of each row (only those in R(i, k1) are
  # used); recomputed here rather than stored, it is C * K * H^2 gathers.
  rc_CxKxH, rc_in_CxKxH = _reciprocal(knn_NxK, knn_CxK, kh)
  # Non-members: -1 in R(i, k1), -2 in R(c, kh), so they never match.
  ri_CxK = jnp.where(r_CxK, knn_CxK, -1)
  shared_CxKxH = jnp.any(
      jnp.where(rc_in_CxKxH, rc_CxKxH, -2)[..., None] ==
      ri_CxK[:, None, None, :], axis=3)
  n_shared_CxK = jnp.sum(shared_CxKxH, axis=2)
  n_rc_CxK = jnp.sum(rc_in_CxKxH, axis=2)
  # |Rc & R| > 2/3 |Rc| in integers; equal to the authors' float test for
  # every set size that can occur.
  accept_CxK = r_CxK & (3 * n_shared_CxK > 2 * n_rc_CxK)
  added_CxKxH = jnp.where(accept_CxK[..., None] & rc_in_CxKxH, rc_CxKxH, n)
  cand_CxW = jnp.concatenate(
      [jnp.where(r_CxK, knn_CxK, n), added_CxKxH.reshape(c, -1)], axis=1)
  cand_CxW = jnp.sort(cand_CxW, axis=1)
  dup_CxW = jnp.concatenate(
      [jnp.zeros((c, 1), bool), cand_CxW[:, 1:] == cand_CxW[:, :-1]], axis=1)
  cand_CxW = jnp.sort(jnp.where(dup_CxW, n, cand_CxW), axis=1)
  return cand_CxW, jnp.sum(cand_CxW < n, axis=1)


@functools.partial(jax.jit, static_argnames=('kind',))
def _weights_chunk(kind, src, rowmax_N, idx_NxM, rows_C):
  """V rows: exp(-original) over each set, normalised to sum 1."""
  n = rowmax_N.shape[0]
  idx_CxM = idx_NxM[rows_C]
  valid_CxM = idx_CxM < n
  d_CxM = _pairs_sq(kind, src, rows_C, jnp.where(valid_CxM, idx_CxM, 0))
  w_CxM = jnp.where(valid_CxM, jnp.exp(-(d_CxM / rowmax_N[rows_C][:, None])),
                    0.0)
  return w_CxM / jnp.sum(w_CxM, axis=1, keepdims=True)


@functools.partial(jax.jit, static_argnames=('k2',))
def _query_expansion_chunk(knn_NxK, idx_NxM, val_NxM, rows_C, k2):
  """Mean of the V rows of the k2 nearest, as a sorted sparse row."""
  n = knn_NxK.shape[0]
  c, m = rows_C.shape[0], idx_NxM.shape[1]
  w = k2 * m
  near_Cxk2 = knn_NxK[rows_C, :k2]
  idx_CxW = idx_NxM[near_Cxk2].reshape(c, w)
  val_CxW = val_NxM[near_Cxk2].reshape(c, w)
  idx_CxW, val_CxW = jax.lax.sort((idx_CxW, val_CxW), dimension=1,
                                  num_keys=1)
  new_CxW = jnp.concatenate(
      [jnp.ones((c, 1), bool), idx_CxW[:, 1:] != idx_CxW[:, :-1]], axis=1)
  # Segment ids run 0.. within a row; offset by row so one segment_sum
  # serves the whole chunk. The padding (N) ends up in the last segment
  # with sum 0.
  seg_CxW = jnp.cumsum(new_CxW, axis=1) - 1 + (jnp.arange(c) * w)[:, None]
  sum_CxW = jax.ops.segment_sum(val_CxW.ravel(), seg_CxW.ravel(),
                                num_segments=c * w,
                                indices_are_sorted=True).reshape(c, w)
  uidx_CxW = jnp.full((c * w,), n, jnp.int32).at[seg_CxW.ravel()].min(
      idx_CxW.ravel()).reshape(c, w)
  qval_CxW = jnp.where(uidx_CxW < n, sum_CxW / k2, 0.0)
  return uidx_CxW, qval_CxW, jnp.sum(uidx_CxW < n, axis=1)


@functools.partial(jax.jit, static_argnames=('num_q',))
def _inverted_index(idx_NxM, val_NxM, num_q):
  """CSC of the gallery rows of V, and the visits each query will make.

  Returns:
    row_E, val_E: [G * M] gallery row (0-based in the gallery) and value of
      every entry, sorted by column; padding sorts last.
    start_N, count_N: [N] where each column's run starts, and its length.
    visits_Q: [Q] sum over the query's support of the column lengths.
  """
  n, m = idx_NxM.shape
  g = n - num_q
  col_E = idx_NxM[num_q:].ravel()
  row_E = jnp.repeat(jnp.arange(g, dtype=jnp.int32), m)
  col_E, row_E, val_E = jax.lax.sort((col_E, row_E, val_NxM[num_q:].ravel()),
                                     num_keys=1)
  count_N = jax.ops.segment_sum(jnp.ones_like(col_E), col_E,
                                num_segments=n + 1)[:n]
  start_N = jnp.cumsum(count_N) - count_N
  idx_QxM = idx_NxM[:num_q]
  visits_Q = jnp.sum(jnp.where(idx_QxM < n,
                               count_N[jnp.minimum(idx_QxM, n - 1)], 0),
                     axis=1)
  return row_E, val_E, start_N, count_N, visits_Q


@functools.partial(jax.jit,
                   static_argnames=('kind', 'chunk', 'num_q', 'visits'),
                   donate_argnames=('out_QxG',))
def _final_chunk(kind, src, rowmax_N, idx_NxM, val_NxM, start_N, count_N,
                 row_E, val_E, out_QxG, first, lo, hi, lambda_value, chunk,
                 num_q, visits):
  """Writes re-ranked rows lo..hi-1 of out_QxG [Q, G] (queries x gallery).

  The chunk spans rows first..first+chunk-1 (first <= lo, hi <= first +
  chunk <= Q); rows outside [lo, hi) make no visits and keep their old
  values, so every chunk has the same shape. `visits` bounds the column
  entries the live rows walk.
  """
  n = rowmax_N.shape[0]
  g = n - num_q
  c, m = chunk, idx_NxM.shape[1]
  rows_C = first + jnp.arange(c, dtype=jnp.int32)
  live_C = (rows_C >= lo) & (rows_C < hi)
  idx_P = idx_NxM[rows_C].ravel()
  val_P = val_NxM[rows_C].ravel()
  valid_P = (idx_P < n) & jnp.repeat(live_C, m)
  col_P = jnp.minimum(idx_P, n - 1)
  len_P = jnp.where(valid_P, count_N[col_P], 0)
  first_P = jnp.cumsum(len_P) - len_P
  # Visit t walks entry t - first_P[p] of the column of pair p, the last pair
  # starting at or before t; the tail beyond the real total is masked.
  t_T = jnp.arange(visits, dtype=jnp.int32)
  pair_T = jnp.repeat(jnp.arange(c * m, dtype=jnp.int32), len_P,
                      total_repeat_length=visits)
  live_T = t_T < jnp.sum(len_P)
  pos_T = start_N[col_P[pair_T]] + (t_T - first_P[pair_T])
  pos_T = jnp.clip(pos_T, 0, row_E.shape[0] - 1)
  contrib_T = jnp.where(live_T, jnp.minimum(val_P[pair_T], val_E[pos_T]), 0.0)
  target_T = (pair_T // m) * g + row_E[pos_T]
  s_CxG = jnp.zeros((c * g,), jnp.float32).at[target_T].add(
      contrib_T).reshape(c, g)
  jaccard_CxG = 1.0 - s_CxG / (2.0 - s_CxG)
  orig_CxG = (_rows_sq(kind, src, rows_C)[:, num_q:] /
              rowmax_N[rows_C][:, None])
  new_CxG = (1.0 - lambda_value) * jaccard_CxG + lambda_value * orig_CxG
  old_CxG = jax.lax.dynamic_slice(out_QxG, (first, 0), (c, g))
  return jax.lax.dynamic_update_slice(
      out_QxG, jnp.where(live_C[:, None], new_CxG, old_CxG), (first, 0))


def _visit_groups(visits_Q, max_rows, max_visits):
  """Splits queries into runs of <= max_rows rows and <= max_visits visits.

  A single query over max_visits gets a run of its own. Returns
  [(lo, hi, visits)] covering 0..Q-1 in order.
  """
  groups, lo, num_q = [], 0, len(visits_Q)
  while lo < num_q:
    hi, total = lo + 1, int(visits_Q[lo])
    while (hi < num_q and hi - lo < max_rows and
           total + int(visits_Q[hi]) <= max_visits):
      total += int(visits_Q[hi])
      hi += 1
    groups.append((lo, hi, total))
    lo = hi
  return groups


# ----------------------------------------------------------------------------
# Driver.


def _chunks(n: int, chunk: int):
  """(start, stop, rows_C) with rows_C padded to `chunk` by repeating n-1."""
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    rows_C = np.minimum(np.arange(start, start + chunk), n - 1)
    yield start, stop, jnp.asarray(rows_C, jnp.int32)


def _map_rows(fn, n, chunk):
  """Runs fn(rows_C) over all rows; concatenates each output's valid rows."""
  parts = []
  for _, _, rows_C in _chunks(n, chunk):
    out = fn(rows_C)
    parts.append(out if isinstance(out, tuple) else (out,))
  # Whole padded chunks are joined and cut once: slicing every chunk to its
  # valid rows would compile an eager slice per distinct length.
  outs = tuple(jnp.concatenate(p)[:n] for p in zip(*parts))
  return outs if len(outs) > 1 else outs[0]


def _tile_elements() -> int:
  return (_TILE_ELEMENTS_CPU if jax.default_backend() == 'cpu' else
          _TILE_ELEMENTS_ACCEL)


class _StageClock:
  """Seconds per stage into stats['seconds'] (blocking), only when asked."""

  def __init__(self, stats):
    self._stats = stats
    self._last = time.perf_counter()
    if stats is not None:
      stats['seconds'] = {}

  def mark(self, name, array):
    if self._stats is None:
      return
    jax.block_until_ready(array)
    now = time.perf_counter()
    self._stats['seconds'][name] = now - self._last
    self._last = now


def _max_visits() -> int:
  return (_MAX_VISITS_CPU if jax.default_backend() == 'cpu' else
          _MAX_VISITS_ACCEL)


def _rerank(kind, src, num_q, n, k1, k2, lambda_value, chunk, stats,
            rowmax_N=None):
  kh = int(np.around(k1 / 2.))  # The authors' rounding (half to even).
  if chunk is None:
    chunk = max(1, min(n, _tile_elements() // n))
  # The sparse steps touch O(k1^2 k1/2) words a row, not N: they take
  # bigger chunks so the host loop stays short.
  sparse_chunk = max(chunk, min(n, 1024))
  clock = _StageClock(stats)

  # 1. Nearest neighbours and row maxima, from distance tiles: k1+1 for the
  # reciprocal sets, k2 for query expansion.
  knn_NxK, rowmax_tile_N = _map_rows(
      lambda r: _knn_chunk(kind, src, r, k=max(k1 + 1, k2)), n, chunk)
  if rowmax_N is None:
    rowmax_N = rowmax_tile_N
  clock.mark('neighbours', knn_NxK)

  # 2. k-reciprocal sets, their expansion, and the sparse V.
  cand_NxW, count_N = _map_rows(
      lambda r: _sets_chunk(knn_NxK, r, k1=k1, kh=kh), n, sparse_chunk)
  m = int(jnp.max(count_N))  # One host sync: the realised width.
  idx_NxM = cand_NxW[:, :m]
  del cand_NxW
  val_NxM = _map_rows(
      lambda r: _weights_chunk(kind, src, rowmax_N, idx_NxM, r),
      n, sparse_chunk)
  clock.mark('sets', val_NxM)

  # 3. Query expansion over the k2 nearest (including the image itself).
  if k2 != 1:
    idx_NxW, val_NxW, count_N = _map_rows(
        lambda r: _query_expansion_chunk(knn_NxK, idx_NxM, val_NxM, r, k2=k2),
        n, sparse_chunk)
    m2 = int(jnp.max(count_N))  # Its realised width.
    idx_NxM, val_NxM = idx_NxW[:, :m2], val_NxW[:, :m2]
    del idx_NxW, val_NxW
  clock.mark('query_expansion', val_NxM)

  # 4. Inverted index of the gallery rows.
  row_E, val_E, start_N, count_N, visits_Q = _inverted_index(
      idx_NxM, val_NxM, num_q=num_q)
  visits_Q = np.asarray(visits_Q)
  clock.mark('inverted_index', val_E)
  if stats is not None:
    count_np = np.asarray(count_N)
    stats.update(set_width=m, expanded_width=int(idx_NxM.shape[1]),
                 index_entries=int(count_np.sum()),
                 longest_column=int(count_np.max()),
                 mean_column=float(count_np[count_np > 0].mean()),
                 visits=int(visits_Q.sum()))

  # 5. Jaccard + original term, query chunk by query chunk.
  g = n - num_q
  out_chunk = min(chunk, num_q)
  out_QxG = jnp.zeros((num_q, g), jnp.float32)
  for lo, hi, total in _visit_groups(visits_Q, out_chunk, _max_visits()):
    # Power-of-two visit buffers: a few compilations, at most 2x padding.
    visits = max(_MIN_VISITS, 1 << max(total - 1, 0).bit_length())
    out_QxG = _final_chunk(
        kind, src, rowmax_N, idx_NxM, val_NxM, start_N, count_N, row_E, val_E,
        out_QxG, jnp.int32(min(lo, num_q - out_chunk)), jnp.int32(lo),
        jnp.int32(hi), jnp.float32(lambda_value), chunk=out_chunk,
        num_q=num_q, visits=visits)
  clock.mark('jaccard', out_QxG)
  return out_QxG


# ----------------------------------------------------------------------------
# Public API.


def _check_int(value, name: str, low: int, high: Optional[int] = None) -> int:
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or
      value < low or (high is not None and value > high)):
    bound = f'in [{low}, {high}]' if high is not None else f'>= {low}'
    raise errors.ConfigError(f'{name} must be an int {bound}; got {value!r}.')
  return int(value)


def _check_options(k1, k2, lambda_value, n, chunk):
  k1 = _check_int(k1, 'k1', 1)
  if k1 + 1 > n:
    raise errors.ConfigError(
        f'k1 + 1 = {k1 + 1} neighbours requested but there are only {n} '
        'images (queries + gallery).')
  k2 = _check_int(k2, 'k2', 1, n)
  if (isinstance(lambda_value, bool) or
      not isinstance(lambda_value, numbers.Real) or
      not 0.0 <= float(lambda_value) <= 1.0):
    raise errors.ConfigError(
        f'lambda_value must be a number in [0, 1]; got {lambda_value!r}.')
  if chunk is not None:
    chunk = _check_int(chunk, 'chunk', 1)
  return k1, k2, float(lambda_value), chunk


def rerank_features(q_QxD, g_GxD, k1: int = 20, k2: int = 6,
                    lambda_value: float = 0.3, *, normalize: bool = False,
                    chunk: Optional[int] = None,
                    stats: Optional[dict] = None) -> jax.Array:
  """k-reciprocal re-ranked distances from features, without N x N arrays.

  Args:
    q_QxD: float [Q, D] query features.
    g_GxD: float [G, D] gallery features.
    k1: size of the k-reciprocal neighbourhood (the paper's 20).
    k2: neighbours averaged in query expansion (the image itself
      included); 1 turns it off. 1 <= k2 <= Q + G.
    lambda_value: weight of the original distance, in [0, 1].
    normalize: L2-normalise the features first (as
      metrics.pairwise_distances(normalize=True)); distances are then squared
      Euclidean between the normalised features.
    chunk: rows per distance tile and per output chunk (default: about 4M
      words a tile on CPU, 64M on accelerators).
    stats: if a dict, filled with the sizes of the sparse structures:
      set_width (M, the largest expansion set), expanded_width (after query
      expansion), index_entries (non-zeros of the gallery rows of V),
      longest_column / mean_column (of the inverted index; non-empty
      columns), visits (column entries the Jaccard step walks), and
      seconds: {stage: wall seconds} (asking for stats makes each stage
      wait for the previous one, which costs a little overlap).

  Returns:
    float32 [Q, G] re-ranked distances (smaller = closer), on JAX's default
    device.

  Raises:
    errors.ConfigError (options) / errors.DataError (inputs), both
    ValueErrors: bad feature shapes or options (the message names the
      argument).
  """
  q_shape, g_shape = np.shape(q_QxD), np.shape(g_GxD)
  if len(q_shape) != 2 or len(g_shape) != 2:
    raise errors.DataError(
        f'q_QxD and g_GxD must be 2-D [N, D]; got {q_shape} and {g_shape}.')
  if q_shape[1] != g_shape[1]:
    raise errors.DataError(
        f'q_QxD has D={q_shape[1]} but g_GxD has D={g_shape[1]}.')
  if q_shape[0] < 1 or g_shape[0] < 1:
    raise errors.DataError(
        f'q_QxD and g_GxD need at least one row; got {q_shape} and '
        f'{g_shape}.')
  num_q, n = q_shape[0], q_shape[0] + g_shape[0]
  k1, k2, lambda_value, chunk = _check_options(k1, k2, lambda_value, n, chunk)
  feats_NxD = jnp.concatenate([jnp.asarray(q_QxD, jnp.float32),
                               jnp.asarray(g_GxD, jnp.float32)])
  src = _prepare_features(feats_NxD, normalize=bool(normalize))
  del feats_NxD
  return _rerank('features', src, num_q, n, k1, k2, lambda_value, chunk,
                 stats)


def rerank_distances(dist_q_g, dist_q_q, dist_g_g, k1: int = 20, k2: int = 6,
                     lambda_value: float = 0.3, *,
                     chunk: Optional[int] = None,
                     stats: Optional[dict] = None) -> jax.Array:
  """The authors' re_ranking(q_g_dist, q_q_dist, g_g_dist, ...) signature.

  The inputs are (Euclidean) distances and are squared, as in the authors'
  code. They are dense, so this holds an (Q + G)^2 float32 matrix: O(N^2)
  memory. Prefer rerank_features when features are at hand.

  Args:
    dist_q_g: float [Q, G] query-gallery distances.
    dist_q_q: float [Q, Q] query-query distances.
    dist_g_g: float [G, G] gallery-gallery distances.
    k1, k2, lambda_value, chunk, stats: as rerank_features.

  Returns:
    float32 [Q, G] re-ranked distances.

  Raises:
    errors.ConfigError (options) / errors.DataError (inputs), both
    ValueErrors: shapes that do not agree, or bad options.
  """
  sqg, sqq, sgg = np.shape(dist_q_g), np.shape(dist_q_q), np.shape(dist_g_g)
  if len(sqg) != 2 or min(sqg) < 1:
    raise errors.DataError(
        f'dist_q_g must be [Q, G] with Q, G >= 1; got {sqg}.')
  num_q, num_g = sqg
  if sqq != (num_q, num_q):
    raise errors.DataError(f'dist_q_q must be [{num_q}, {num_q}]; got {sqq}.')
  if sgg != (num_g, num_g):
    raise errors.DataError(f'dist_g_g must be [{num_g}, {num_g}]; got {sgg}.')
  n = num_q + num_g
  k1, k2, lambda_value, chunk = _check_options(k1, k2, lambda_value, n, chunk)
  orig_NxN = _prepare_dense(jnp.asarray(dist_q_g), jnp.asarray(dist_q_q),
                            jnp.asarray(dist_g_g))
  return _rerank('dense', (orig_NxN,), num_q, n, k1, k2, lambda_value, chunk,
                 stats, rowmax_N=jnp.ones((n,), jnp.float32))
