"""Multi-process (multi-host) JAX: when and how to join the cluster.

JAX's own runtime is the engine (jax.distributed.initialize); this module
only decides whether to call it and with what:

  mode 'off'   never: a single process, whatever the environment says.
  mode 'on'    always, letting JAX fill in what it can detect (Cloud TPU VM,
               SLURM, Open MPI, ...) from the environment and the explicit
               arguments below the rest.
  mode 'auto'  (the default) explicit arguments if given, else only where the
               environment names more than one process: SLURM_NTASKS > 1,
               OMPI_COMM_WORLD_SIZE > 1, or several hosts in
               TPU_WORKER_HOSTNAMES; otherwise a plain single process.

Explicit arguments (e.g. two processes on one machine, or hosts without a
scheduler): coordinator_address 'host:port' (process 0's host; it listens on
that port), num_processes and process_id, or the environment variables JAX
itself reads (JAX_COORDINATOR_ADDRESS ...).

Afterwards jax.devices() lists the devices of every process, the train step's
mesh spans all of them, and each process feeds only its own devices.

The mesh and sharding helpers live here too, with the package's one mesh axis
name (AXIS): training, evaluation and the benchmarks all split batches along it.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from absl import flags
from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from dare_jax.errors import ConfigError

MODES = ('auto', 'on', 'off')
AXIS = 'data'  # the one mesh axis: batches are split along it


def cluster_size_from_env(env: Mapping[str, str]) -> int:
  """How many processes the environment says this job has (1 = none said)."""
  for var in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    if env.get(var, '').strip().isdigit():
      n = int(env[var])
      if n > 1:
        return n
  hosts = [h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]
  return max(1, len(hosts))


def should_initialize(mode: str, coordinator_address: str,
                      num_processes: int, env: Mapping[str, str]) -> bool:
  if mode not in MODES:
    raise ConfigError(f'--distributed={mode!r}: use one of {MODES}.')
  if mode == 'off':
    if coordinator_address or num_processes > 1:
      raise ConfigError(
          '--distributed=off contradicts --coordinator_address / '
          '--num_processes: drop one or the other.')
    return False
  if mode == 'on':
    return True
  return bool(coordinator_address or num_processes > 1 or
              env.get('JAX_COORDINATOR_ADDRESS') or
              cluster_size_from_env(env) > 1)


def initialize(mode: str = 'auto', coordinator_address: str = '',
               num_processes: int = 0, process_id: int = -1,
               env: Optional[Mapping[str, str]] = None) -> bool:
  """Joins the cluster when `mode` and the environment call for it.

  Returns whether jax.distributed was initialised. Call it before anything
  else touches JAX's devices.
  """
  env = os.environ if env is None else env
  if not should_initialize(mode, coordinator_address, num_processes, env):
    return False
  explicit = [bool(coordinator_address), num_processes > 0, process_id >= 0]
  if any(explicit) and not all(explicit) and mode == 'auto' and not (
      cluster_size_from_env(env) > 1):
    raise ConfigError(
        'Give all three of --coordinator_address=HOST:PORT, '
        '--num_processes=N and --process_id=I (this process, 0..N-1) to '
        f'start {num_processes or "N"} processes without a scheduler; got '
        f'coordinator_address={coordinator_address!r}, '
        f'num_processes={num_processes}, process_id={process_id}.')
  kwargs = {}
  if coordinator_address:
    kwargs['coordinator_address'] = coordinator_address
  if num_processes > 0:
    kwargs['num_processes'] = num_processes
  if process_id >= 0:
    kwargs['process_id'] = process_id
  jax.distributed.initialize(**kwargs)
  logging.info('jax.distributed: process %d of %d, %d local / %d global '
               'devices.', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def define_flags() -> None:
  """--distributed, --coordinator_address, --num_processes, --process_id:
  the same four flags for every entry point that may run multi-process."""
  flags.DEFINE_enum('distributed', 'auto', list(MODES),
                    'Multi-process JAX (dare_jax/distributed.py): auto joins '
                    'a cluster when the flags below or the environment '
                    '(SLURM, Open MPI, a multi-host Cloud TPU) name more than '
                    'one process; on always calls jax.distributed.initialize; '
                    'off never does.')
  flags.DEFINE_string('coordinator_address', '',
                      'HOST:PORT of process 0, for processes started by hand.')
  flags.DEFINE_integer('num_processes', 0, 'Processes in the job (explicit).')
  flags.DEFINE_integer('process_id', -1, 'This process, 0..num_processes-1.')


def initialize_from_flags() -> bool:
  """initialize() with the flags of define_flags()."""
  f = flags.FLAGS
  return initialize(f.distributed, f.coordinator_address, f.num_processes,
                    f.process_id)


def is_main_process() -> bool:
  """Process 0 writes logs, metrics, figures and features."""
  return jax.process_index() == 0


def make_mesh(devices=None) -> Mesh:
  """A 1-D AXIS mesh, devices in process order: each process's devices are
  one contiguous block, so each reads one contiguous share of a batch."""
  devices = devices if devices is not None else jax.devices()
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split along AXIS."""
  return NamedSharding(mesh, PartitionSpec(AXIS))


def shard_batch(batch, mesh: Mesh, batch_size: Optional[int] = None):
  """This process's rows of a train batch -> global arrays split along AXIS.

  batch: host arrays holding rows process_rows(mesh, AXIS, batch_size) of
  the global batch of `batch_size` rows (the whole batch on one process;
  None = the rows given times the process count).
  """
  sharding = batch_sharded(mesh)
  batch_size = batch_size or len(batch['pid']) * jax.process_count()
  return {k: jax.make_array_from_process_local_data(
      sharding, batch[k], (batch_size,) + batch[k].shape[1:])
          for k in ('image', 'pid', 'erase')}


def process_rows(mesh: Mesh, axis: str, batch_size: int) -> tuple[int, int]:
  """(lo, hi): the rows of a global batch, split along mesh axis `axis`,
  that this process's devices hold.

  In training each process reads and decodes only these rows of every
  P x K batch (the step all-gathers the embeddings, so mining still sees
  the global batch); in evaluation each embeds only these rows.
  """
  sharding = NamedSharding(mesh, PartitionSpec(axis))
  spans = sorted({(s[0].start or 0,
                   batch_size if s[0].stop is None else s[0].stop)
                  for s in sharding.addressable_devices_indices_map(
                      (batch_size,)).values()})
  for (_, stop), (start, _) in zip(spans, spans[1:]):
    if stop != start:
      raise ValueError(
          f'Process {jax.process_index()} holds rows {spans} of the batch: '
          'not one contiguous block. Build the mesh with the devices in '
          'process order (distributed.make_mesh does).')
  return spans[0][0], spans[-1][1]
