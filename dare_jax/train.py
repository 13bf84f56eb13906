"""Training: the train state, the data-parallel train step, and the loop.

The step is one pure function, jit-compiled over a 1-D device mesh ('data')
with shard_map: every device embeds its share of the P x K batch, BatchNorm
averages its batch statistics over all devices, the embeddings are
all-gathered so batch-hard mining sees the GLOBAL batch, and the gradients
are reduced so one step on N devices equals one step on 1 device up to float
rounding.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax

from dare_jax import checkpointing
from dare_jax import configlib
from dare_jax import distributed
from dare_jax import errors
from dare_jax import losses
from dare_jax import optim
from dare_jax import plots
from dare_jax import reporting
from dare_jax.data import datasets
from dare_jax.data import device_ops
from dare_jax.evaluation import embed as embed_lib
from dare_jax.evaluation import features as features_lib
from dare_jax.models import dare

AXIS = 'data'


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def make_mesh(devices=None) -> Mesh:
  """A 1-D 'data' mesh, devices in process order: each process's devices are
  one contiguous block, so each reads one contiguous share of a batch."""
  devices = devices if devices is not None else jax.devices()
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _init_fn(config, model, tx, mesh: Mesh) -> Callable[[], TrainState]:
  """A jitted () -> fresh TrainState (eval-mode init: no cross-device BN)."""
  h, w = config.data.input_size

  # The non-partitionable threefry lowering compiles ~3x faster on CPU (the
  # parameters are replicated, so partitionability buys nothing here).
  @jax.threefry_partitionable(False)
  @functools.partial(jax.jit, out_shardings=replicated(mesh))
  def init():
    key = jax.random.fold_in(jax.random.key(config.seed), 0)
    variables = model.init(key, jnp.zeros((1, h, w, 3), jnp.float32),
                           train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables['batch_stats'],
                      opt_state=tx.init(params))
  return init


def init_state(config, model, tx, mesh: Mesh) -> TrainState:
  """Fresh parameters, replicated over the mesh."""
  return _init_fn(config, model, tx, mesh)()


def make_train_step(config, model, tx, mesh: Mesh) -> Callable:
  """(state, batch) -> (state, metrics); batch sharded along 'data'.

  batch: image uint8 [B, H, W, 3], pid int32 [B], erase float32 [B, 4].
  """
  num_devices = mesh.shape[AXIS]
  mean, std = config.data.mean, config.data.std
  erasing = config.data.random_erasing
  erase_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  lr_fn = optim.learning_rate_fn(config.optim)

  def per_device(state: TrainState, batch):
    local_b = batch['image'].shape[0]
    x = device_ops.normalize(batch['image'], mean, std)
    if erasing:
      # One key per image from its GLOBAL position, so the noise does not
      # depend on how the batch is split over devices.
      first = jax.lax.axis_index(AXIS) * local_b
      keys = jax.vmap(jax.random.fold_in, (None, 0))(
          jax.random.fold_in(erase_key, state.step),
          first + jnp.arange(local_b))
      x = device_ops.random_erase(x, batch['erase'], keys)
    pids = jax.lax.all_gather(batch['pid'], AXIS, tiled=True)

    def loss_fn(params):
      out, new_vars = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x,
          train=True, mutable=['batch_stats'])
      embs = {k: jax.lax.all_gather(v, AXIS, tiled=True)
              for k, v in out.items()}
      total, per_exit = losses.deep_supervision_loss(
          embs, pids, config.loss.eps, config.loss.deep_supervision)
      return total, (per_exit, new_vars['batch_stats'])

    (total, (per_exit, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    # Every device holds an identical copy of the global loss. Reverse-mode
    # through all_gather sums the N copies' cotangents, and the replicated
    # params are implicitly psum-ed across devices, so `grads` arrives as N
    # times the global gradient (tests/train_test.py checks against 1 device).
    grads = jax.tree.map(lambda g: g / num_devices, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1,
                           params=optax.apply_updates(state.params, updates),
                           batch_stats=batch_stats, opt_state=opt_state)
    # The loss copies are equal; pmean makes that visible to shard_map.
    metrics = {'loss': total, **{f'loss_{k}': v for k, v in per_exit.items()}}
    metrics = jax.lax.pmean(metrics, AXIS)
    metrics['lr'] = lr_fn(state.step)
    return new_state, metrics

  step = jax.shard_map(per_device, mesh=mesh,
                       in_specs=(P(), P(AXIS)), out_specs=(P(), P()))
  return jax.jit(step, donate_argnums=(0,))


def shard_batch(batch, mesh: Mesh, batch_size: Optional[int] = None):
  """This process's rows of a batch -> global arrays split along 'data'.

  batch: host arrays holding rows distributed.process_rows(mesh, AXIS,
  batch_size) of the global batch of `batch_size` rows (the whole batch on
  one process; None = the rows given times the process count).
  """
  sharding = NamedSharding(mesh, P(AXIS))
  batch_size = batch_size or len(batch['pid']) * jax.process_count()
  return {k: jax.make_array_from_process_local_data(
      sharding, batch[k], (batch_size,) + batch[k].shape[1:])
          for k in ('image', 'pid', 'erase')}


def _pipeline_kwargs(config) -> dict:
  d = config.data
  return dict(input_hw=tuple(d.input_size), resize_factor=d.resize_factor)


def train_batches(config, split, start_step: int,
                  rows: Optional[tuple[int, int]] = None):
  """The input pipeline of data.pipeline; rows = this process's share."""
  d, t = config.data, config.train
  return datasets.pipeline_module(d.pipeline).train_batches(
      split, P=t.P, K=t.K, seed=config.seed, start_step=start_step,
      num_steps=t.num_steps, hflip=d.hflip, random_erasing=d.random_erasing,
      erasing_p=d.erasing_p, erasing_area=tuple(d.erasing_area),
      erasing_aspect=d.erasing_aspect, prefetch=d.prefetch,
      cache_limit_bytes=int(d.cache_limit_gb * 1e9), rows=rows,
      **_pipeline_kwargs(config))


def embed_dataset(config, model, variables, dataset, mesh: Mesh) -> dict:
  """Query and gallery embeddings with TTA, in the features.npz schema.

  Video splits (MARS) are embedded frame by frame (at most
  eval.max_tracklet_frames per tracklet) and mean-pooled per tracklet.
  """
  e = config.eval
  pipe = datasets.pipeline_module(config.data.pipeline)
  embed_fn = embed_lib.make_embed_fn(model, config.data.mean, config.data.std,
                                     mesh)
  feats = {}
  for what in ('query', 'gallery'):
    split = getattr(dataset, what)
    frames = split
    if split.tracklets is not None:
      frames = split.take(embed_lib.select_tracklet_frames(
          split.tracklets, e.max_tracklet_frames))
      logging.info('%s: %d tracklets, embedding %d of their %d frames.',
                   what, split.num_items, len(frames), len(split))
    batches = pipe.eval_batches(frames, batch_size=e.batch_size, tta=e.tta,
                                **_pipeline_kwargs(config))
    n_batches = pipe.num_eval_batches(len(frames), e.batch_size)
    for k, v in embed_lib.embed_batches(embed_fn, variables, batches,
                                        n_batches, what).items():
      if frames.tracklets is not None:
        v = embed_lib.pool_tracklets(v, frames.tracklets)
      feats[f'{what}_{k}'] = v
    feats[f'{what}_pids'], feats[f'{what}_camids'] = split.item_ids()
  return feats


def score_features(feats, eval_cfg) -> dict:
  """{embedding name: {rank1, rank5, rank10, mAP, num_valid_queries, ...}},
  plus {'rerank': {...}} when eval.rerank is on."""
  return features_lib.evaluate_with_config(
      feats, eval_cfg, names=features_lib.embedding_names(feats))


def write_features(path: str, feats) -> None:
  tmp = path + '.tmp.npz'
  np.savez(tmp, **feats)
  os.replace(tmp, path)


class Setup:
  """What every mode needs: validated config, mesh, model, optimiser, data."""

  def __init__(self, config, workdir: str):
    configlib.validate(config, jax.device_count())
    self.config, self.workdir = config, workdir
    self.mesh = make_mesh()
    self.model = dare.from_config(config.model, bn_axis_name=AXIS)
    self.tx = optim.make_optimizer(config.optim)
    self.dataset = datasets.load_dataset(config.data)
    for what in ('train', 'query', 'gallery'):
      if not len(getattr(self.dataset, what)):
        raise errors.DataError(f'The {what} split of dataset '
                               f'{self.dataset.name!r} is empty.')
    os.makedirs(workdir, exist_ok=True)

  def checkpoint_manager(self, read_only=False):
    t = self.config.train
    return checkpointing.manager(self.workdir, t.checkpoint_every,
                                 t.keep_checkpoints, read_only=read_only)

  def restore_latest(self, mngr):
    """(state, meta) of the latest checkpoint in workdir, or None.

    The target tree comes from eval_shape: nothing is initialised for it.
    """
    abstract = jax.eval_shape(_init_fn(self.config, self.model, self.tx,
                                       self.mesh))
    return checkpointing.restore_latest(
        mngr, checkpointing.abstract_like(abstract, replicated(self.mesh)),
        self.config.model, self.workdir)

  def restore_or_init(self, mngr):
    """Resume order: the latest checkpoint in workdir > model.pretrained
    (a torchvision backbone file, .pth or its .npz; the whole DaRe network
    when model.pretrained_heads is on; see models/weights.py) > fresh
    initialisation."""
    restored = self.restore_latest(mngr)
    if restored is not None:
      logging.info('Resuming from %s at step %d.', mngr.directory,
                   int(restored[0].step))
      return restored
    state = init_state(self.config, self.model, self.tx, self.mesh)
    path = self.config.model.pretrained
    if path:
      from dare_jax.models import weights  # pylint: disable=g-import-not-at-top
      host = jax.device_get({'params': state.params,
                             'batch_stats': state.batch_stats})
      if self.config.model.pretrained_heads:
        loaded = weights.load_dare_checkpoint(path, host)
        what = 'backbone, exit heads and fusion'
      else:
        loaded = dict(zip(('params', 'batch_stats'), weights.load_backbone(
            path, host['params'], host['batch_stats'])))
        what = 'backbone'
      loaded = jax.device_put(loaded, replicated(self.mesh))
      # Adam's moments start at zero whatever the parameters: opt_state stays.
      state = state.replace(params=loaded['params'],
                            batch_stats=loaded['batch_stats'])
      logging.info('Initialised the %s from %s.', what, path)
    return state, {}

  def variables(self, state):
    return {'params': state.params, 'batch_stats': state.batch_stats}


def run_evaluation(setup: Setup, state, train_loss) -> dict:
  feats = embed_dataset(setup.config, setup.model, setup.variables(state),
                        setup.dataset, setup.mesh)
  results = score_features(feats, setup.config.eval)
  results['train_loss'] = train_loss
  if distributed.is_main_process():
    reporting.write_json(os.path.join(setup.workdir, 'metrics.json'),
                         results)
    write_features(os.path.join(setup.workdir, 'features.npz'), feats)
    logging.info('Wrote metrics.json, features.npz and %s',
                 ', '.join(os.path.basename(p) for p in
                           plots.write_run_figures(setup.workdir, results)))
  return results


def train_and_evaluate(config, workdir: str) -> dict:
  setup = Setup(config, workdir)
  t = config.train
  mngr = setup.checkpoint_manager()
  state, meta = setup.restore_or_init(mngr)
  start = int(state.step)
  train_loss = meta.get('train_loss', {})
  fingerprint = checkpointing.model_fingerprint(config.model)
  logging.info('%d devices, %d processes; global batch %d x %d = %d; '
               'steps %d -> %d', jax.device_count(), jax.process_count(),
               t.P, t.K, t.P * t.K, start, t.num_steps)

  if start < t.num_steps:
    train_step = make_train_step(config, setup.model, setup.tx, setup.mesh)
    global_batch = t.P * t.K
    reporter = reporting.Reporter(workdir, start, t.num_steps, global_batch)
    rows = distributed.process_rows(setup.mesh, AXIS, global_batch)
    batches = train_batches(config, setup.dataset.train, start, rows)
    for batch in batches:
      state, metrics = train_step(
          state, shard_batch(batch, setup.mesh, global_batch))
      done = int(batch['step']) + 1
      last = done == t.num_steps
      log, ckpt = (done % t.log_every == 0 or last,
                   done % t.checkpoint_every == 0 or last)
      if log or ckpt:
        host = jax.device_get(metrics)
        train_loss = {k[len('loss_'):]: float(v) for k, v in host.items()
                      if k.startswith('loss_')}
        if log:
          reporter.log(done, host)
        if ckpt:
          checkpointing.save(mngr, done, state,
                             {'model': fingerprint, 'train_loss': train_loss},
                             force=last)
    mngr.wait_until_finished()
    reporter.close()
  mngr.close()
  return run_evaluation(setup, state, train_loss)


def _restore_for_eval(config, workdir: str):
  setup = Setup(config, workdir)
  mngr = setup.checkpoint_manager(read_only=True)
  restored = setup.restore_latest(mngr)
  mngr.close()
  if restored is None:
    raise errors.CheckpointError(
        f'No checkpoint in {os.path.join(workdir, "checkpoints")}: train '
        'first (--mode=train) or point --workdir at a trained run.')
  logging.info('Restored step %d from %s.', int(restored[0].step), workdir)
  return setup, restored[0], restored[1]


def evaluate_checkpoint(config, workdir: str) -> dict:
  setup, state, meta = _restore_for_eval(config, workdir)
  return run_evaluation(setup, state, meta.get('train_loss', {}))


def export_features(config, workdir: str) -> str:
  setup, state, _ = _restore_for_eval(config, workdir)
  feats = embed_dataset(config, setup.model, setup.variables(state),
                        setup.dataset, setup.mesh)
  path = os.path.join(workdir, 'features.npz')
  if distributed.is_main_process():
    write_features(path, feats)
  logging.info('Wrote %s', path)
  return path
