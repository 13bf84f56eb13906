"""Test-session setup: 8 forced CPU devices (before anything imports jax), so
the data-parallel tests can split a batch over devices on a 2-core machine."""

import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# `configs` is a top-level folder of the repository, importable from its root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
