"""Checkpoints and programs shared by the bundle and inference tests (not a
test module)."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import smoke
from dare_jax import checkpointing
from dare_jax.models import dare

H, W = smoke.get_config().data.input_size


def random_checkpoint(tmp_path, seed=3):
  """A workdir whose step-7 checkpoint holds variables made here (random
  weights and running statistics), and those variables."""
  config = smoke.get_config()
  model = dare.from_config(config.model)
  v = model.init(jax.random.key(seed), jnp.zeros((1, H, W, 3)), train=False)
  rng = np.random.default_rng(seed)

  def stat(path, x):  # non-trivial running statistics for eval-mode BN
    if jax.tree_util.keystr(path).endswith("['var']"):
      return np.abs(rng.normal(1, 0.3, x.shape)).astype(np.float32)
    return rng.normal(0, 0.2, x.shape).astype(np.float32)
  v = jax.device_get(v)
  v = {'params': v['params'],
       'batch_stats': jax.tree_util.tree_map_with_path(stat, v['batch_stats'])}
  from dare_jax import builder  # pylint: disable=g-import-not-at-top
  built = builder.build(config)
  state = built.init_state().replace(step=jnp.asarray(7, jnp.int32),
                                     params=v['params'],
                                     batch_stats=v['batch_stats'])
  workdir = str(tmp_path / 'run')
  mngr = checkpointing.manager(workdir, 1, 1)
  checkpointing.save(mngr, 7, state, {
      'model': checkpointing.model_fingerprint(config.model),
      'train_loss': {}}, force=True)
  mngr.wait_until_finished()
  mngr.close()
  return config, workdir, model, v


# The fresh process: numpy and jax only, so the artifact needs nothing of
# this repository.
FRESH_PROCESS = r'''
import sys, numpy as np, jax
from jax import export
path, x_path, out_path = sys.argv[1:]
flat = dict(np.load(path + '/params.npz'))
tree = {}
for k, v in flat.items():
  node = tree
  *parents, leaf = k.split('/')
  for p in parents:
    node = node.setdefault(p, {})
  node[leaf] = v
exp = export.deserialize(bytearray(open(path + '/dare.stablehlo', 'rb').read()))
out = exp.call(tree, np.load(x_path))
np.savez(out_path, **{k: np.asarray(v) for k, v in out.items()})
print(','.join(sorted(m.split('.')[0] for m in sys.modules
                      if m.startswith(('dare_jax', 'configs', 'tensorflow')))))
'''
