"""The data-parallel train step: 8 devices == 1 device == a global reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import smoke
from dare_jax import builder
from dare_jax import configlib
from dare_jax import distributed
from dare_jax import errors
from dare_jax import losses
from dare_jax import train
from dare_jax.data import device_ops
from dare_jax.models import dare


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  t, (h, w) = config.train, config.data.input_size
  b = t.P * t.K
  erase = np.zeros((b, 4), np.float32)
  erase[::3] = (3, 2, 9, 5)  # some images erased, some not
  return {'image': rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
          'pid': np.repeat(rng.permutation(100)[:t.P] + 1, t.K).astype(
              np.int32),
          'erase': erase}


def _rel(a, b):
  """||a - b|| / ||b|| over whole pytrees."""
  a = np.concatenate([np.ravel(x).astype(np.float64)
                      for x in jax.tree.leaves(a)])
  b = np.concatenate([np.ravel(x).astype(np.float64)
                      for x in jax.tree.leaves(b)])
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _config():
  c = smoke.get_config()
  c.data.random_erasing = True
  return c


# An "optimiser" whose state is the gradient it was last given, so the test
# reads the step's gradient exactly.
KEEP_GRADS = optax.GradientTransformation(
    init=lambda params: jax.tree.map(jnp.zeros_like, params),
    update=lambda grads, state, params=None: (grads, grads))


def _grad_step(config, n_devices):
  built = builder.build(config, jax.devices()[:n_devices], tx=KEEP_GRADS)
  state = built.init_state()
  step = train.make_train_step(config, built.model, KEEP_GRADS, built.mesh)
  new_state, metrics = step(state, distributed.shard_batch(_batch(config),
                                                           built.mesh))
  return (jax.device_get(new_state.opt_state),
          jax.device_get(new_state.batch_stats), jax.device_get(metrics))


def _reference(config):
  """The global step written without shard_map: one device, whole batch."""
  model = dare.from_config(config.model, bn_axis_name=None)
  mesh = distributed.make_mesh(jax.devices()[:1])
  state = builder.init_state(config, model, KEEP_GRADS, mesh)
  batch = _batch(config)
  x = device_ops.normalize(jnp.asarray(batch['image']), config.data.mean,
                           config.data.std)
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 1),
                           0)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(len(x)))
  x = device_ops.random_erase(x, jnp.asarray(batch['erase']), keys)

  def loss_fn(params):
    out, new = model.apply({'params': params,
                            'batch_stats': state.batch_stats}, x, train=True,
                           mutable=['batch_stats'])
    total, per = losses.deep_supervision_loss(out, jnp.asarray(batch['pid']),
                                              config.loss.eps)
    return total, (per, new['batch_stats'])
  (loss, (_, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  return jax.device_get(grads), jax.device_get(stats), float(loss)


@pytest.mark.slow
def test_eight_devices_equal_one_device_and_the_global_reference():
  config = _config()
  assert len(jax.devices()) == 8, 'conftest.py forces 8 CPU devices'
  g1, s1, m1 = _grad_step(config, 1)
  g8, s8, m8 = _grad_step(config, 8)
  g_ref, s_ref, loss_ref = _reference(config)
  np.testing.assert_allclose(m8['loss'], m1['loss'], rtol=1e-5)
  np.testing.assert_allclose(m1['loss'], loss_ref, rtol=1e-5)
  for name, grads, stats in (('1 device', g1, s1), ('8 devices', g8, s8)):
    assert _rel(grads, g_ref) < 1e-5, name
    assert _rel(stats, s_ref) < 1e-5, name
    # Leaf by leaf too, where the true gradient is not rounding noise (the
    # biases of Dense layers followed by BatchNorm have zero gradient).
    scale = max(np.linalg.norm(b) for b in jax.tree.leaves(g_ref))
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g_ref)):
      if np.linalg.norm(b) > 1e-3 * scale:
        assert _rel(a, b) < 1e-4, name
  # The gradient is not trivially zero (the comparison means something).
  assert max(np.abs(x).max() for x in jax.tree.leaves(g_ref)) > 1e-4


def test_batch_not_divisible_by_devices_is_refused():
  config = smoke.get_config()
  config.train.P, config.train.K = 3, 3  # 9 images over 8 devices
  config.eval.batch_size = 9
  with pytest.raises(errors.ConfigError, match='does not split evenly over 8'):
    configlib.validate(config, num_devices=8)
  configlib.validate(config, num_devices=3)


@pytest.mark.slow
def test_train_step_compiles_once_and_copies_nothing_but_the_batch():
  """No retracing after the first step (the state the step returns has the
  shardings and types of the one it was given), and, once the batch is on
  the devices, the step moves nothing from the host: the learning rate, the
  erasing keys and the step counter are all computed on device."""
  config = _config()
  built = builder.build(config)
  state = built.init_state()
  step = train.make_train_step(config, built.model, built.tx, built.mesh)
  for i in range(3):
    batch = distributed.shard_batch(_batch(config, seed=i), built.mesh)
    with jax.transfer_guard_host_to_device('disallow'):
      state, metrics = step(state, batch)
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 3
  # The guard is live: a host value passed to the step would be refused.
  with jax.transfer_guard_host_to_device('disallow'):
    with pytest.raises(Exception, match='[Dd]isallowed host-to-device'):
      step(state, _batch(config))
  assert np.isfinite(float(metrics['loss']))
