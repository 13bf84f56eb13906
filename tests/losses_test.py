"""losses.py against a brute-force NumPy batch-hard soft-margin loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dare_jax import losses


def numpy_batch_hard(emb, pids, eps):
  """Loops over anchors, straight from Hermans et al.'s definition."""
  n = len(emb)
  total = 0.0
  for a in range(n):
    d = [np.sqrt(np.sum((emb[a] - emb[b])**2) + eps) for b in range(n)]
    pos = [d[p] for p in range(n) if pids[p] == pids[a] and p != a]
    neg = [d[q] for q in range(n) if pids[q] != pids[a]]
    total += np.log1p(np.exp(max(pos) - min(neg)))
  return total / n


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  pids = np.repeat(rng.permutation(50)[:6], 4)
  emb = rng.normal(size=(24, 16)).astype(np.float64)
  want = numpy_batch_hard(emb, pids, 1e-8)
  got = losses.batch_hard_soft_margin(jnp.asarray(emb, jnp.float32),
                                      jnp.asarray(pids), 1e-8)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_hand_computed_case():
  # Two ids on a line: a=0, a'=1 (id 7); b=3, b'=7 (id 9). eps=0.
  emb = jnp.array([[0.], [1.], [3.], [7.]])
  pids = jnp.array([7, 7, 9, 9])
  # anchor 0: pos 1, neg 3 -> -2; anchor 1: pos 1, neg 2 -> -1;
  # anchor 2: pos 4, neg 2 -> 2; anchor 3: pos 4, neg 6 -> -2.
  want = np.mean(np.log1p(np.exp([-2., -1., 2., -2.])))
  got = losses.batch_hard_soft_margin(emb, pids, 0.0)
  np.testing.assert_allclose(float(got), want, rtol=1e-6)


def test_gradient_pulls_positives_and_pushes_negatives():
  emb = jnp.array([[0.], [1.], [3.], [7.]])
  pids = jnp.array([7, 7, 9, 9])
  g = jax.grad(losses.batch_hard_soft_margin)(emb, pids, 1e-8)
  # Anchor 2's hardest positive is 3 (at +4) and hardest negative 1 (at -2):
  # descending the gradient moves 2 toward 3 (up) and away from 1.
  assert float(g[2, 0]) < 0  # gradient descent increases emb[2]
  assert float(g[3, 0]) > 0  # 3 moves toward 2
  np.testing.assert_allclose(float(jnp.sum(g)), 0.0, atol=1e-6)


def test_deep_supervision_sums_five_terms_or_keeps_fused():
  rng = np.random.default_rng(3)
  pids = jnp.asarray(np.repeat(np.arange(4), 2))
  embs = {k: jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
          for k in ('stage1', 'stage2', 'stage3', 'stage4', 'fused')}
  total, per = losses.deep_supervision_loss(embs, pids, 1e-8, True)
  singles = {k: numpy_batch_hard(np.asarray(v, np.float64), np.asarray(pids),
                                 1e-8) for k, v in embs.items()}
  np.testing.assert_allclose(float(total), sum(singles.values()), rtol=1e-5)
  for k in embs:
    np.testing.assert_allclose(float(per[k]), singles[k], rtol=1e-5)
  total_f, _ = losses.deep_supervision_loss(embs, pids, 1e-8, False)
  np.testing.assert_allclose(float(total_f), singles['fused'], rtol=1e-5)
