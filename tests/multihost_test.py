"""Multi-process JAX: when to join a cluster, and 2 processes == 1 process.

The end-to-end test starts two `python -m dare_jax.main` processes on this
machine, joined by jax.distributed through a localhost coordinator, each
with 4 forced CPU devices: the same 8 devices the test process has. They
resume the single-process run's step-2 checkpoint (restored by both through
Orbax), train to step 4 with each process reading only its half of every
P x K batch, save, and evaluate with the batches split over processes.
Everything must match the uninterrupted single-process run.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import smoke
from dare_jax import builder
from dare_jax import distributed
from dare_jax import errors
from dare_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('env, expected', [
    ({}, 1),
    ({'SLURM_NTASKS': '1'}, 1),
    ({'SLURM_NTASKS': '16'}, 16),
    ({'OMPI_COMM_WORLD_SIZE': '4'}, 4),
    ({'TPU_WORKER_HOSTNAMES': 'w0'}, 1),
    ({'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3'}, 4),
    ({'SLURM_NTASKS': 'x'}, 1),
])
def test_cluster_size_from_the_environment(env, expected):
  assert distributed.cluster_size_from_env(env) == expected


def test_when_to_initialize():
  auto = lambda addr='', n=0, env=None: distributed.should_initialize(
      'auto', addr, n, env or {})
  assert not auto()
  assert not auto(env={'SLURM_NTASKS': '1'})
  assert auto(env={'SLURM_NTASKS': '2'})
  assert auto(env={'JAX_COORDINATOR_ADDRESS': 'h:1234'})
  assert auto('localhost:1234', 2)
  assert distributed.should_initialize('on', '', 0, {})
  assert not distributed.should_initialize('off', '', 0, {'SLURM_NTASKS': '8'})
  with pytest.raises(errors.ConfigError, match='contradicts'):
    distributed.should_initialize('off', 'localhost:1234', 2, {})
  with pytest.raises(errors.ConfigError, match='use one of'):
    distributed.should_initialize('sometimes', '', 0, {})


def test_half_the_explicit_arguments_are_refused_before_connecting():
  with pytest.raises(errors.ConfigError, match='--process_id'):
    distributed.initialize('auto', 'localhost:1234', 2, -1, env={})


def test_each_process_holds_one_contiguous_block_of_rows():
  mesh = distributed.make_mesh()
  assert distributed.process_rows(mesh, distributed.AXIS, 16) == (0, 16)
  # On a real 2-process job the two blocks are the halves: checked end to
  # end below, where each process's batch is half of the global one.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _load(workdir):
  with open(os.path.join(workdir, 'metrics.json')) as f:
    metrics = json.load(f)
  return metrics, dict(np.load(os.path.join(workdir, 'features.npz')))


@pytest.mark.slow
def test_two_processes_resume_train_and_evaluate_like_one(tmp_path):
  config = smoke.get_config()
  cache = str(tmp_path / 'cache')
  config.data.cache_dir = cache
  assert jax.device_count() == 8, 'conftest.py forces 8 CPU devices'
  one = str(tmp_path / 'one')
  train.train_and_evaluate(config, one)  # checkpoints at steps 2 and 4

  two = tmp_path / 'two'
  shutil.copytree(os.path.join(one, 'checkpoints', '2'),
                  two / 'checkpoints' / '2')
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
      os.environ.get('XLA_FLAGS', '') +
      ' --xla_force_host_platform_device_count=4'))
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'dare_jax.main', '--config=configs/smoke.py',
       f'--workdir={two}', f'--config.data.cache_dir={cache}',
       f'--coordinator_address=localhost:{port}', '--num_processes=2',
       f'--process_id={i}'], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=400)[0])
  finally:
    for p in procs:
      p.kill()
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f'process {i} failed:\n{out[-3000:]}'
  assert 'process 0 of 2, 4 local / 8 global devices' in outs[0]
  assert 'Resuming from' in outs[0]
  # Process 1 logs warnings only; process 0 logs the progress.
  assert 'step 4/4' in outs[0] and 'step 4/4' not in outs[1]

  # Identical up to float summation order (gloo's all-reduce against the
  # in-process one)...
  m1, f1 = _load(one)
  m2, f2 = _load(str(two))
  assert set(m2) == set(m1)
  for name, v in m1['train_loss'].items():
    np.testing.assert_allclose(m2['train_loss'][name], v, rtol=1e-5)
  params = [jax.device_get(builder.restore_for_eval(builder.build(config),
                                                    w)[0].params)
            for w in (one, str(two))]  # both processes' checkpoint, restored
  flat = jax.tree_util.tree_flatten_with_path(params[0])[0]
  zero_grad = 0
  for (path, a), b in zip(flat, jax.tree.leaves(params[1])):
    name = jax.tree_util.keystr(path)
    if re.fullmatch(r"\['exit\d'\]\['fc\d'\]\['bias'\]", name):
      # ...except the exit heads' Dense biases, whose true gradient is 0
      # (fc1 feeds a BatchNorm, and fc2 shifts every embedding alike, which
      # no distance sees): Adam divides their rounding-noise gradients by
      # their own size, so each step moves them by up to +-lr either way.
      zero_grad += 1
      assert np.abs(b - a).max() <= 2 * 2 * config.optim.eps0, name
    else:
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=name)
  assert zero_grad == 8
  # Those biases reach the eval-mode embeddings through BatchNorm's running
  # means, by ~0.1% (measured 0.04-0.14%); the ranking sees ~0.1% of mAP.
  for k in f1:
    if f1[k].dtype == np.float32:
      assert np.linalg.norm(f2[k] - f1[k]) < 5e-3 * np.linalg.norm(f1[k]), k
    else:
      np.testing.assert_array_equal(f2[k], f1[k], err_msg=k)
  for name in m1:
    if name != 'train_loss':
      np.testing.assert_allclose(m2[name]['rank1'], m1[name]['rank1'],
                                 atol=0.05)
      np.testing.assert_allclose(m2[name]['mAP'], m1[name]['mAP'], atol=5e-3)
