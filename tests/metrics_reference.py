"""Brute-force NumPy reference for the re-ID metrics (a test helper).

Deliberately simple and loop-based, written from the protocol's definition
rather than from dare_jax.evaluation.metrics (which it must not import), so
that the two can check each other:
  * per query, rank the gallery with a stable argsort of the distances;
  * remove junk (pid -1) and the query's own camera (same pid and camid;
    camid -1 is unknown and never the same camera);
  * good = same pid, different camid; distractors (pid 0) stay as negatives;
  * queries with no good image are left out of every average.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pairwise_distances(q_QxD, g_GxD, metric: str = 'euclidean',
                       normalize: bool = False) -> np.ndarray:
  """float64 [Q, G] distances computed from differences, not dot products."""
  q_QxD = np.asarray(q_QxD, np.float64)
  g_GxD = np.asarray(g_GxD, np.float64)
  if normalize or metric == 'cosine':
    q_QxD = q_QxD / np.maximum(
        np.linalg.norm(q_QxD, axis=1, keepdims=True), 1e-12)
    g_GxD = g_GxD / np.maximum(
        np.linalg.norm(g_GxD, axis=1, keepdims=True), 1e-12)
  if metric == 'cosine':
    return 1.0 - q_QxD @ g_GxD.T
  diff_QxGxD = q_QxD[:, None, :] - g_GxD[None, :, :]
  sq_QxG = np.sum(diff_QxGxD * diff_QxGxD, axis=-1)
  if metric == 'sqeuclidean':
    return sq_QxG
  if metric == 'euclidean':
    return np.sqrt(sq_QxG)
  raise ValueError(f'Unknown metric {metric!r}.')


def _average_precision(hit_ranks: Sequence[int], ap: str) -> float:
  """AP from the 1-based ranks (among the remaining gallery) of the hits."""
  n_good = len(hit_ranks)
  total = 0.0
  for k, r in enumerate(hit_ranks, start=1):
    if ap == 'market':
      previous_precision = 1.0 if r == 1 else (k - 1) / (r - 1)
      total += (1.0 / n_good) * (previous_precision + k / r) / 2.0
    elif ap == 'standard':
      total += (1.0 / n_good) * (k / r)
    else:
      raise ValueError(f'Unknown ap {ap!r}.')
  return total


def _inverse_negative_penalty(hit_ranks: Sequence[int]) -> float:
  """INP (Ye et al. 2020): the number of hits over the 1-based rank (among
  the remaining gallery) of the last, hardest, hit."""
  hardest = 0
  for r in hit_ranks:
    if r > hardest:
      hardest = r
  return len(hit_ranks) / hardest


def _same_camera(a, b) -> bool:
  """Camera -1 is unknown: it is never the same camera as anything."""
  if a == -1 or b == -1:
    return False
  return a == b


def evaluate_per_query(dist_QxG, q_pids, q_camids, g_pids, g_camids, *,
                       ap: str = 'market') -> dict:
  """Per-query results, one query at a time.

  Returns:
    {'first_hit_rank': int [Q] (0-based among the remaining gallery, -1 when
     invalid), 'ap': float64 [Q] (0 when invalid), 'inp': float64 [Q] (0 when
     invalid), 'num_good': int [Q], 'valid': bool [Q]}.
  """
  dist_QxG = np.asarray(dist_QxG)
  num_q = dist_QxG.shape[0]
  first = np.full((num_q,), -1, np.int64)
  aps = np.zeros((num_q,), np.float64)
  inps = np.zeros((num_q,), np.float64)
  num_good = np.zeros((num_q,), np.int64)
  for i in range(num_q):
    order = np.argsort(dist_QxG[i], kind='stable')
    remaining = []
    for j in order:
      if g_pids[j] == -1:
        continue
      if g_pids[j] == q_pids[i] and _same_camera(g_camids[j], q_camids[i]):
        continue
      remaining.append(j)
    hit_ranks = [r for r, j in enumerate(remaining, start=1)
                 if g_pids[j] == q_pids[i] and
                 not _same_camera(g_camids[j], q_camids[i])]
    num_good[i] = len(hit_ranks)
    if hit_ranks:
      first[i] = hit_ranks[0] - 1
      aps[i] = _average_precision(hit_ranks, ap)
      inps[i] = _inverse_negative_penalty(hit_ranks)
  return {'first_hit_rank': first, 'ap': aps, 'inp': inps,
          'num_good': num_good, 'valid': num_good > 0}


def evaluate(dist_QxG, q_pids, q_camids, g_pids, g_camids, *,
             ranks: Sequence[int] = (1, 5, 10), ap: str = 'market') -> dict:
  """CMC rank-k, mAP and mINP over the valid queries, as evaluate_ranking."""
  per_query = evaluate_per_query(dist_QxG, q_pids, q_camids, g_pids, g_camids,
                                 ap=ap)
  valid = per_query['valid']
  num_valid = int(valid.sum())
  if num_valid == 0:
    raise ValueError('No valid query.')
  out = {}
  for k in ranks:
    hits = 0
    for i in range(len(valid)):
      if valid[i] and per_query['first_hit_rank'][i] < k:
        hits += 1
    out[f'rank{k}'] = hits / num_valid
  out['mAP'] = float(sum(a for a, v in zip(per_query['ap'], valid) if v) /
                     num_valid)
  out['mINP'] = float(sum(x for x, v in zip(per_query['inp'], valid) if v) /
                      num_valid)
  out['num_valid_queries'] = num_valid
  out['num_queries'] = len(valid)
  return out
