"""Training: the data-parallel train step and the loop.

The step is one pure function, jit-compiled over the 1-D device mesh
(distributed.AXIS) with shard_map: every device embeds its share of the
P x K batch, BatchNorm averages its batch statistics over all devices, the
embeddings are all-gathered so batch-hard mining sees the GLOBAL batch, and
the gradients are reduced so one step on N devices equals one step on 1
device up to float rounding. (shard_map under jit is what pmap was: pmap is
in maintenance mode since JAX 0.8.)
"""

from __future__ import annotations

from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P
import optax

from dare_jax import builder
from dare_jax import checkpointing
from dare_jax import distributed
from dare_jax import eval_mode
from dare_jax import fileio
from dare_jax import health
from dare_jax import losses
from dare_jax import optim
from dare_jax import reporting
from dare_jax.data import datasets
from dare_jax.data import device_ops
from dare_jax.data import spec as spec_lib

AXIS = distributed.AXIS  # the step's collectives run over the mesh axis


def make_train_step(config, model, tx, mesh: Mesh) -> Callable:
  """(state, batch) -> (state, metrics); batch sharded along AXIS.

  batch: image uint8 [B, H, W, 3], pid int32 [B], erase float32 [B, 4].
  """
  num_devices = mesh.shape[AXIS]
  mean, std = config.data.mean, config.data.std
  erasing = config.data.random_erasing
  erase_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  lr_fn = optim.learning_rate_fn(config.optim)

  def per_device(state: builder.TrainState, batch):
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
    new_state = builder.TrainState(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats, opt_state=opt_state)
    # The loss copies are equal; pmean makes that visible to shard_map.
    metrics = {'loss': total, **{f'loss_{k}': v for k, v in per_exit.items()}}
    metrics = jax.lax.pmean(metrics, AXIS)
    metrics['lr'] = lr_fn(state.step)
    # Replicated after the implicit psum above, so these need no collective.
    metrics['grad_norm'] = optax.global_norm(grads)
    metrics['param_norm'] = optax.global_norm(new_state.params)
    return new_state, metrics

  step = jax.shard_map(per_device, mesh=mesh,
                       in_specs=(P(), P(AXIS)), out_specs=(P(), P()))
  return jax.jit(step, donate_argnums=(0,))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains from workdir's latest checkpoint (or the resume order of
  builder.restore_or_init) up to train.num_steps, then evaluates.

  Raises health.Interrupted after saving a checkpoint on Ctrl-C / SIGTERM,
  and health.NonFiniteError (saving nothing more) when a step's loss or
  gradient is NaN or infinite.
  """
  built = builder.build(config)
  fileio.makedirs(workdir)
  t = config.train
  mngr = builder.checkpoint_manager(config, workdir)
  # Before the dataset is read: a config that needs pretrained weights
  # fails in a second, not after minutes of decoding.
  state, meta = builder.restore_or_init(built, mngr, workdir)
  dataset = datasets.load_dataset(
      config.data, nonempty=('train', 'query', 'gallery'))
  if config.data.bad_images == 'error' and int(state.step) < t.num_steps:
    from dare_jax.data.readers import bad_images  # pylint: disable=g-import-not-at-top
    bad_images.check_readable(dataset)
  start = int(state.step)
  train_loss = meta.get('train_loss', {})
  fingerprint = checkpointing.model_fingerprint(config.model)
  logging.info('%d devices, %d processes; global batch %d x %d = %d; '
               'steps %d -> %d', jax.device_count(), jax.process_count(),
               t.P, t.K, t.P * t.K, start, t.num_steps)
  warning = health.schedule_warning(config)
  if warning and start < t.num_steps:
    logging.warning('%s', warning)

  if start < t.num_steps:
    train_step = make_train_step(config, built.model, built.tx, built.mesh)
    train_input = spec_lib.TrainInput.from_config(config)
    global_batch = train_input.batch_size
    reporter = reporting.Reporter(workdir, start, t.num_steps, global_batch)
    rows = distributed.process_rows(built.mesh, AXIS, global_batch)
    batches = datasets.pipeline_module(config.data.pipeline).train_batches(
        dataset.train, train_input, start, rows=rows)
    collapse = health.CollapseWatch()
    profile = _Profiler(fileio.join(workdir, 'profile'), start + 1,
                        t.profile_steps)
    previous = None  # (step, metrics) of the step before, checked one late
    try:
      with health.Interrupt(enabled=jax.process_count() == 1) as stop:
        for batch in batches:
          state, metrics = train_step(
              state, distributed.shard_batch(batch, built.mesh, global_batch))
          done = int(batch['step']) + 1
          # The previous step has finished (or nearly) while this one is
          # queued: checking it now names the first bad step without
          # waiting for the device every step.
          if previous is not None:
            health.check_finite(previous[0], jax.device_get(
                {k: previous[1][k] for k in health.WATCHED}))
          previous = (done, metrics)
          profile.after_step(done, metrics)
          last = done == t.num_steps
          # Multi-process: the JAX preemption service (jax.distributed; a
          # scheduler's SIGTERM to any process) names a step every process
          # reaches, Orbax says when it is here; False on one process.
          preempted = mngr.reached_preemption(done)
          leave = stop.requested or preempted
          log, ckpt = (done % t.log_every == 0 or last,
                       done % t.checkpoint_every == 0 or last or leave)
          if log or ckpt:
            host = jax.device_get(metrics)
            health.check_finite(done, host)  # before anything is saved
            train_loss = {k[len('loss_'):]: float(v) for k, v in host.items()
                          if k.startswith('loss_')}
            if log:
              reporter.log(done, host)
              collapse.update(done, host)
            if ckpt:
              checkpointing.save(mngr, done, state,
                                 {'model': fingerprint,
                                  'train_loss': train_loss,
                                  'dataset': config.data.dataset,
                                  'eval': eval_mode.eval_fields(config)},
                                 force=last or leave)
              reporter.flush()
          if leave and not last:
            mngr.wait_until_finished()
            raise health.Interrupted(
                f'{stop.signal_name or "Preemption"} at step {done}: saved a '
                f'checkpoint at step {done} in {mngr.directory}; run the same '
                'command again to resume.')
    finally:
      profile.close()
      mngr.wait_until_finished()
      reporter.close()
      mngr.close()
  else:
    mngr.close()
  return eval_mode.run_evaluation(built, dataset, state, workdir, train_loss)


class _Profiler:
  """A jax.profiler trace of `num_steps` steps after step `first` (so the
  compilation is not in it); nothing when num_steps is 0."""

  def __init__(self, trace_dir: str, first: int, num_steps: int):
    self._dir, self._first, self._n = trace_dir, first, num_steps
    self._on = False

  def after_step(self, step: int, metrics) -> None:
    if not self._n or not distributed.is_main_process():
      return
    if step == self._first:
      jax.block_until_ready(metrics)
      jax.profiler.start_trace(self._dir)
      self._on = True
    elif self._on and step >= self._first + self._n:
      jax.block_until_ready(metrics)
      self.close()
      logging.info('Wrote a profile of steps %d-%d to %s (open it with '
                   'TensorBoard\'s profile plugin or ui.perfetto.dev).',
                   self._first + 1, step, self._dir)

  def close(self) -> None:
    if self._on:
      jax.profiler.stop_trace()
      self._on = False
