"""The authors' k-reciprocal re-ranking (Zhong et al., CVPR 2017) in NumPy.

A faithful transcription of the public re_ranking.py (dense, loop-based,
float32), independent of dare_jax (see dare_jax/references/__init__.py).
Used by tests/rerank_test.py and tests/evaluate_features_test.py, and timed
by dare_jax/bench/evaluation.py. The additions, all keyword-only and inert
at their defaults: `stats` counts how often the expansion branch appends a
candidate's set (so tests can check that the branch is exercised; counted
only when asked, so the benchmark times the authors' code alone),
`progress` is called with a stage name as the benchmark's log, and
`argsort_kind` is their np.argsort's `kind` (None: their quicksort, no
defined order among equal distances; 'stable' breaks ties by index, as
jax.lax.top_k does).
"""

import numpy as np


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3,
               *, stats=None, progress=None, argsort_kind=None):
  """Re-ranked [Q, G] distances from Euclidean distance matrices."""
  report = progress or (lambda *_: None)
  original_dist = np.concatenate(
      [np.concatenate([q_q_dist, q_g_dist], axis=1),
       np.concatenate([q_g_dist.T, g_g_dist], axis=1)],
      axis=0)
  original_dist = np.power(original_dist, 2).astype(np.float32)
  original_dist = np.transpose(1. * original_dist /
                               np.max(original_dist, axis=0))
  V = np.zeros_like(original_dist).astype(np.float32)
  report('argsort')
  initial_rank = np.argsort(original_dist, kind=argsort_kind).astype(np.int32)

  query_num = q_g_dist.shape[0]
  gallery_num = q_g_dist.shape[0] + q_g_dist.shape[1]
  all_num = gallery_num
  expansions = 0
  step = max(1, all_num // 10)

  for i in range(all_num):
    if i % step == 0:
      report(f'k-reciprocal sets {i}/{all_num}')
    # k-reciprocal neighbors
    forward_k_neigh_index = initial_rank[i, :k1 + 1]
    backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
    fi = np.where(backward_k_neigh_index == i)[0]
    k_reciprocal_index = forward_k_neigh_index[fi]
    k_reciprocal_expansion_index = k_reciprocal_index
    for j in range(len(k_reciprocal_index)):
      candidate = k_reciprocal_index[j]
      candidate_forward_k_neigh_index = initial_rank[
          candidate, :int(np.around(k1 / 2.)) + 1]
      candidate_backward_k_neigh_index = initial_rank[
          candidate_forward_k_neigh_index, :int(np.around(k1 / 2.)) + 1]
      fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
      candidate_k_reciprocal_index = candidate_forward_k_neigh_index[
          fi_candidate]
      if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)
            ) > 2. / 3 * len(candidate_k_reciprocal_index):
        k_reciprocal_expansion_index = np.append(
            k_reciprocal_expansion_index, candidate_k_reciprocal_index)
        # Counts only appends that bring in a new member.
        if stats is not None and not np.all(
            np.isin(candidate_k_reciprocal_index, k_reciprocal_index)):
          expansions += 1

    k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
    weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
    V[i, k_reciprocal_expansion_index] = 1. * weight / np.sum(weight)
  original_dist = original_dist[:query_num,]
  if k2 != 1:
    report('query expansion')
    V_qe = np.zeros_like(V, dtype=np.float32)
    for i in range(all_num):
      V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
    V = V_qe
    del V_qe
  del initial_rank
  report('inverted index')
  invIndex = []
  for i in range(gallery_num):
    invIndex.append(np.where(V[:, i] != 0)[0])

  jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)

  report('jaccard')
  for i in range(query_num):
    temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
    indNonZero = np.where(V[i, :] != 0)[0]
    indImages = [invIndex[ind] for ind in indNonZero]
    for j in range(len(indNonZero)):
      temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
          V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
    jaccard_dist[i] = 1 - temp_min / (2. - temp_min)

  final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
  del original_dist
  del V
  del jaccard_dist
  final_dist = final_dist[:query_num, query_num:]
  if stats is not None:
    stats['expansions'] = expansions
  return final_dist
