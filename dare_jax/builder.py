"""What every mode builds before it touches data: the mesh, the model, the
optimiser and the train state, and where the state comes from.

One path for training, evaluation, the benchmarks, the tools and the tests:

  built = builder.build(config)            # validated config, mesh, model, tx
  state = built.init_state()                # fresh, replicated over the mesh
  state, meta = builder.restore_or_init(built, mngr, workdir)

Resume order (restore_or_init): the latest checkpoint in the workdir >
model.pretrained (a torchvision backbone file, .pth or its .npz; the whole
DaRe network when model.pretrained_heads is on; see models/weights.py) >
fresh initialisation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import optax

from dare_jax import checkpointing
from dare_jax import configlib
from dare_jax import distributed
from dare_jax import errors
from dare_jax import fileio
from dare_jax import optim
from dare_jax.models import dare


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def variables(state: TrainState) -> dict:
  """The model's variables ({'params', 'batch_stats'}) of a train state."""
  return {'params': state.params, 'batch_stats': state.batch_stats}


def init_fn(config, model, tx, mesh: Mesh) -> Callable[[], TrainState]:
  """A jitted () -> fresh TrainState (eval-mode init: no cross-device BN)."""
  h, w = config.data.input_size

  # The non-partitionable threefry lowering compiles ~3x faster on CPU (the
  # parameters are replicated, so partitionability buys nothing here).
  @jax.threefry_partitionable(False)
  @functools.partial(jax.jit, out_shardings=distributed.replicated(mesh))
  def init():
    key = jax.random.fold_in(jax.random.key(config.seed), 0)
    v = model.init(key, jnp.zeros((1, h, w, 3), jnp.float32), train=False)
    params = v['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=v['batch_stats'],
                      opt_state=tx.init(params))
  return init


def init_state(config, model, tx, mesh: Mesh) -> TrainState:
  """Fresh parameters, replicated over the mesh."""
  return init_fn(config, model, tx, mesh)()


@dataclasses.dataclass(frozen=True)
class Built:
  """A validated config with its mesh, model (BatchNorm synchronised over
  the mesh axis) and optimiser. Nothing here has read data or a file."""
  config: Any
  mesh: Mesh
  model: dare.DaRe
  tx: optax.GradientTransformation

  def init_state(self) -> TrainState:
    return init_state(self.config, self.model, self.tx, self.mesh)

  def abstract_state(self) -> TrainState:
    """The state's shapes, dtypes and (replicated) shardings; nothing is
    initialised or compiled for it."""
    abstract = jax.eval_shape(init_fn(self.config, self.model, self.tx,
                                      self.mesh))
    return checkpointing.abstract_like(abstract,
                                       distributed.replicated(self.mesh))


def build(config, devices=None,
          tx: Optional[optax.GradientTransformation] = None,
          training: bool = True) -> Built:
  """Validates config for the devices (all of them by default) and builds
  the mesh, the model and the optimiser (optim.make_optimizer unless `tx`).
  training=False (evaluation, export) skips the checks that only training
  needs, e.g. that P x K splits over the devices."""
  mesh = distributed.make_mesh(devices)
  configlib.validate(config, mesh.size, training=training)
  model = dare.from_config(config.model, bn_axis_name=distributed.AXIS)
  tx = tx if tx is not None else optim.make_optimizer(config.optim)
  return Built(config=config, mesh=mesh, model=model, tx=tx)


def checkpoint_manager(config, workdir: str, read_only: bool = False):
  t = config.train
  return checkpointing.manager(workdir, t.checkpoint_every,
                               t.keep_checkpoints, read_only=read_only)


def restore_latest(built: Built, mngr, workdir: str,
                   step: Optional[int] = None):
  """(state, meta) of the latest checkpoint in workdir (or of `step`), or
  None when there is none."""
  return checkpointing.restore_latest(mngr, built.abstract_state(),
                                      built.config.model, workdir, step)


def pretrained_variables(host: dict, path: str, heads: bool,
                         state_dict=None) -> dict:
  """host {'params', 'batch_stats'} with the weights of file `path` loaded:
  the backbone only, or the whole DaRe network when `heads`."""
  from dare_jax.models import weights  # pylint: disable=g-import-not-at-top
  if heads:
    return weights.load_dare_checkpoint(path, host, state_dict=state_dict)
  return dict(zip(('params', 'batch_stats'), weights.load_backbone(
      path, host['params'], host['batch_stats'], state_dict=state_dict)))


def with_pretrained(built: Built, state: TrainState, path: str, heads: bool,
                    state_dict=None) -> tuple[TrainState, dict]:
  """(state with the file's weights, the loaded host variables). Adam's
  moments start at zero whatever the parameters: opt_state stays."""
  loaded = pretrained_variables(jax.device_get(variables(state)), path, heads,
                                state_dict)
  placed = jax.device_put(loaded, distributed.replicated(built.mesh))
  return state.replace(params=placed['params'],
                       batch_stats=placed['batch_stats']), loaded


def check_pretrained(model_cfg) -> None:
  """ConfigError when a fresh run of a config that starts from ImageNet
  weights (model.require_pretrained) has no model.pretrained, or when
  model.pretrained names a local file that is not there."""
  m = model_cfg
  if m.pretrained == 'none':
    return  # from scratch on purpose
  if m.pretrained:
    if '://' not in m.pretrained and not fileio.isfile(m.pretrained):
      raise errors.ConfigError(
          f'model.pretrained={m.pretrained!r}: no such file. Point '
          '--config.model.pretrained at the ImageNet weights file, or pass '
          '--config.model.pretrained=none to train from scratch on purpose.')
    return
  if not m.get('require_pretrained', False):
    return
  from dare_jax.models import weights  # pylint: disable=g-import-not-at-top
  name = weights.imagenet_file(m.backbone, m.depth)
  raise errors.ConfigError(
      f'This config trains from ImageNet weights, as the paper does, but '
      f'model.pretrained is empty. Download {name} '
      f'(https://download.pytorch.org/models/{name}) and pass '
      f'--config.model.pretrained=PATH/{name} (without PyTorch on this host: '
      'convert it once with `python -m dare_jax.tools.convert_weights '
      f'{name} OUT_DIR --config=...` and pass OUT_DIR/weights.npz), or '
      'pass --config.model.pretrained=none to train from scratch on '
      'purpose.')


def restore_or_init(built: Built, mngr, workdir: str):
  """(state, meta) in the resume order of the module docstring."""
  restored = restore_latest(built, mngr, workdir)
  if restored is not None:
    logging.info('Resuming from %s at step %d.', mngr.directory,
                 int(restored[0].step))
    return restored
  m = built.config.model
  check_pretrained(m)  # before init_state compiles anything
  state = built.init_state()
  if m.pretrained and m.pretrained != 'none':
    state, _ = with_pretrained(built, state, m.pretrained, m.pretrained_heads)
    what = ('backbone, exit heads and fusion' if m.pretrained_heads else
            'backbone')
    logging.info('Initialised the %s from %s.', what, m.pretrained)
  return state, {}


def restore_for_eval(built: Built, workdir: str, step: Optional[int] = None):
  """(state, meta) of the latest checkpoint (or of `step`); CheckpointError
  if none."""
  mngr = checkpoint_manager(built.config, workdir, read_only=True)
  restored = restore_latest(built, mngr, workdir, step)
  mngr.close()
  if restored is None:
    raise errors.CheckpointError(
        f'No checkpoint in {fileio.join(workdir, "checkpoints")}: train '
        'first (--mode=train) or point --workdir at a trained run.')
  logging.info('Restored step %d from %s.', int(restored[0].step), workdir)
  return restored
