"""The lr / beta1 schedule and the Adam update against a hand-written Adam."""

import jax.numpy as jnp
import numpy as np

from configs import default
from dare_jax import optim


def _cfg(t0=10, t1=20):
  c = default.get_config().optim
  c.t0, c.t1 = t0, t1
  return c


def test_learning_rate_schedule():
  c = _cfg(30000, 60000)
  lr = optim.learning_rate_fn(c)
  np.testing.assert_allclose(float(lr(0)), 3e-4)
  np.testing.assert_allclose(float(lr(29999)), 3e-4)
  np.testing.assert_allclose(float(lr(30000)), 3e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(45000)), 3e-4 * 0.001**0.5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(60000)), 3e-7, rtol=1e-5)


def test_beta1_schedule():
  b1 = optim.beta1_fn(_cfg(30000, 60000))
  assert float(b1(29999)) == np.float32(0.9)
  assert float(b1(30000)) == 0.5


def test_update_matches_torch_style_adam_with_coupled_decay():
  """Hand-written torch.optim.Adam(weight_decay=1e-4) with beta1 switched."""
  c = _cfg(t0=3, t1=6)
  tx = optim.make_optimizer(c)
  rng = np.random.default_rng(0)
  w = rng.normal(size=5)
  params = {'w': jnp.asarray(w, jnp.float32)}
  state = tx.init(params)
  m = np.zeros(5)
  v = np.zeros(5)
  for t in range(8):
    g = rng.normal(size=5)
    # Reference (float64): torch's Adam step t+1.
    b1 = 0.9 if t < 3 else 0.5
    lr = 3e-4 if t < 3 else 3e-4 * 0.001**((t - 3) / 3)
    gd = g + 1e-4 * w
    m = b1 * m + (1 - b1) * gd
    v = 0.999 * v + 0.001 * gd**2
    mhat = m / (1 - b1**(t + 1))
    vhat = v / (1 - 0.999**(t + 1))
    w = w - lr * mhat / (np.sqrt(vhat) + 1e-8)
    updates, state = tx.update({'w': jnp.asarray(g, jnp.float32)}, state,
                               params)
    params = {'w': params['w'] + updates['w']}
    np.testing.assert_allclose(np.asarray(params['w']), w, rtol=1e-6,
                               atol=1e-9)
