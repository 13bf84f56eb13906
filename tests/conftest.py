"""Test-session setup, before anything imports jax.

- 8 forced CPU devices, so the data-parallel tests can split a batch over
  devices on a 2-core machine.
- A persistent compilation cache for this session only (a fresh temporary
  folder): the end-to-end tests build the same tiny programs several times,
  in this process and in subprocesses, and compiling dominates their time.
"""

import os
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      tempfile.mkdtemp(prefix='dare_jax_test_jit_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
