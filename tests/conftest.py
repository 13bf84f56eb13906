"""Test-session setup, before anything imports jax.

- 8 forced CPU devices, so the data-parallel tests can split a batch over
  devices on a 2-core machine.
- A persistent compilation cache for this session only (a fresh temporary
  folder, one for both pytest-xdist workers): the end-to-end tests build the
  same tiny programs several times, in this process and in subprocesses,
  and compiling dominates their time.
"""

import os
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Under pytest-xdist every worker imports this file: they share one folder,
# named by the run's id, so a program compiled by one is read by the other.
_RUN = os.environ.get('PYTEST_XDIST_TESTRUNUID')
if _RUN:
  _CACHE = os.path.join(tempfile.gettempdir(),
                        f'dare_jax_test_jit_cache_{_RUN[:16]}')
  os.makedirs(_CACHE, exist_ok=True)
else:
  _CACHE = tempfile.mkdtemp(prefix='dare_jax_test_jit_cache_')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


import types  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='session', name='smoke_run')
def smoke_run_fixture(tmp_path_factory):
  """One trained smoke run (configs/smoke.py as it is: 4 steps) per test
  process, for the tests that need *a* trained model and not training
  itself: .config() (a fresh ConfigDict of the run), .workdir and .results
  (what train_and_evaluate returned). Read it; a test that writes into a
  run copies it first (shutil.copytree)."""
  from configs import smoke  # pylint: disable=g-import-not-at-top
  from dare_jax import train  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp('smoke_run')

  def config():
    c = smoke.get_config()
    c.data.cache_dir = str(tmp / 'cache')
    return c
  workdir = str(tmp / 'run')
  results = train.train_and_evaluate(config(), workdir)
  return types.SimpleNamespace(config=config, workdir=workdir,
                               results=results)
