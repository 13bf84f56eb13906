"""dare_jax.bench.train_step: the FLOPs convention, the checks, the errors.

One real measurement (configs/smoke.py, the real train step on 2 of the 8
forced CPU devices) is shared by the tests that need it. It is compiled
with jax_disable_most_optimizations: that halves the compile time on a 2-core
machine and changes nothing these tests read (XLA's FLOP count of the step is
the same with and without: 2,428,360 per device on 2 devices, measured on
CPU).
"""

import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from configs import smoke
from dare_jax import distributed
from dare_jax import errors
from dare_jax.bench import train_step
from dare_jax.budget import costs
from dare_jax.models import dare

# Its module-scoped fixtures are built once: all its tests on one xdist
# worker (.ci/run: --dist loadgroup).
pytestmark = pytest.mark.xdist_group('bench_train_step')


@pytest.fixture(scope='module')
def smoke_row():
  config = smoke.get_config()
  before = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    row = train_step.measure(config, batch=8, dtype='float32',
                             input='device', steps=2, warmup=1,
                             devices=jax.devices()[:2])
  finally:
    jax.config.update('jax_disable_most_optimizations', before)
  return config, row


def _shard_map_matmul_flops(num_devices, m=64, k=32, n=16):
  """(XLA's figure for the compiled program, global_flops of it) for a
  jit(shard_map) of x [m, k] (rows split) @ w [k, n] (replicated)."""
  mesh = distributed.make_mesh(jax.devices()[:num_devices])
  fn = jax.jit(jax.shard_map(lambda x, w: x @ w, mesh=mesh,
                             in_specs=(P(distributed.AXIS), P()),
                             out_specs=P(distributed.AXIS)))
  x = jax.ShapeDtypeStruct((m, k), jnp.float32,
                           sharding=NamedSharding(mesh, P(distributed.AXIS)))
  w = jax.ShapeDtypeStruct((k, n), jnp.float32,
                           sharding=NamedSharding(mesh, P()))
  reported = train_step.xla_flops(fn.lower(x, w).compile())
  return reported, train_step.global_flops(reported, num_devices)


def test_xla_flops_of_a_shard_map_step_are_per_device():
  """The convention global_flops relies on, against an exact reference: a
  matmul is 2 m k n FLOPs in all, whatever the device count."""
  m, k, n = 64, 32, 16
  for num_devices in (1, 2, 4):
    reported, total = _shard_map_matmul_flops(num_devices, m, k, n)
    assert reported == pytest.approx(2 * m * k * n / num_devices)
    assert total == pytest.approx(2 * m * k * n)


def test_xla_flops_reads_a_dict_or_a_list_of_dicts():
  class Compiled:

    def __init__(self, analysis):
      self.analysis = analysis

    def cost_analysis(self):
      return self.analysis

  assert train_step.xla_flops(Compiled({'flops': 5.0})) == 5.0
  assert train_step.xla_flops(Compiled([{'flops': 5.0}, {'flops': 2.0}])) == 7
  with pytest.raises(RuntimeError, match='flops'):
    train_step.xla_flops(Compiled([{'bytes accessed': 1.0}]))


def test_batch_validation_names_the_flag_and_the_fix():
  assert train_step.identities_per_batch(72, 4, 8) == 18
  with pytest.raises(errors.ConfigError, match=r'--batches: 9 is not a '
                     r'multiple of config.train.K=2'):
    train_step.identities_per_batch(9, 2, 1)
  with pytest.raises(errors.ConfigError,
                     match='does not split evenly over 3 devices'):
    train_step.identities_per_batch(8, 2, 3)
  with pytest.raises(errors.ConfigError, match='fewer than 2 identities'):
    train_step.identities_per_batch(4, 4, 1)
  with pytest.raises(errors.ConfigError, match='--batches=72,x'):
    train_step.parse_batches(['72', 'x'])
  with pytest.raises(errors.ConfigError, match='--dtypes=float16'):
    train_step.check_dtypes(['float16'])
  with pytest.raises(errors.ConfigError, match='--num_devices=9'):
    train_step.select_devices(9)
  # Refused before anything is built or compiled.
  with pytest.raises(errors.ConfigError, match='split evenly over 8'):
    train_step.measure(smoke.get_config(), batch=12, dtype='float32')
  with pytest.raises(errors.ConfigError, match="--input='disk'"):
    train_step.measure(smoke.get_config(), batch=8, dtype='float32',
                       input='disk')


def test_peak_table():
  peak = train_step.peak_flops_per_device
  assert peak('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.4e12
  assert peak('NVIDIA H200', 'float32') == 494.7e12
  assert peak('NVIDIA A100-SXM4-80GB', 'float32') == 156e12
  assert peak('TPU v5 lite', 'bfloat16') == 197e12
  assert peak('TPU v5', 'bfloat16') == 459e12
  assert peak('TPU v6 lite', 'float32') == 918e12
  assert peak('TPU v4', 'float32') == 275e12
  assert peak('cpu', 'float32') is None
  assert peak('cpu', 'float32', peak_tflops=2.5) == 2.5e12


@pytest.mark.slow
def test_device_input_compiles_once_and_copies_nothing(smoke_row):
  _, row = smoke_row
  assert row['compiles'] == 1
  assert row['h2d_free'] is True
  assert (row['global_batch'], row['per_device_batch'], row['P'],
          row['K'], row['num_devices']) == (8, 4, 4, 2, 2)
  assert np.isfinite(row['loss'])
  assert row['images_per_s'] == pytest.approx(8e3 / row['step_ms'])
  assert row['mfu'] is None and row['peak_tflops'] is None  # CPU: unknown


def test_step_flops_are_global_and_near_the_analytic_count(smoke_row):
  """XLA's global FLOPs of the tiny step against 6 x Mul-Adds x B.

  The bounds: XLA counts 2 FLOPs per Mul-Add of every convolution and dot;
  the backward pass costs 2 forwards except the stem's input gradient,
  which is not needed (so >= ~2/3 of 6 x Mul-Adds x B), and BatchNorm, the
  activations, the loss, Adam and the work every device repeats add a
  little on top (measured: 0.74x on 1 device, 0.86x on 2). 0.5x-2x leaves
  room for both; reporting the per-device figure as global would give
  0.43x here.
  """
  config, row = smoke_row
  # The full forward's Mul-Adds of one image, counted here directly, plus
  # the fusion's 4 x embedding_dim.
  model = dare.from_config(config.model)
  x = jax.ShapeDtypeStruct((1, *config.data.input_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  macs = (costs.count_macs(model.apply, variables, x) +
          4 * config.model.embedding_dim)
  assert row['analytic_flops'] == 6 * macs * 8
  assert row['flops_per_step'] == 2 * row['xla_flops_per_device']
  ratio = row['flops_per_step'] / row['analytic_flops']
  assert 0.5 <= ratio <= 2, ratio
  assert row['model_tflops_per_s'] == pytest.approx(
      row['flops_per_step'] / (row['step_ms'] / 1e3) / 1e12)


def test_table_prints_every_row_and_na():
  row = {k: 1 for _, k, _ in train_step.COLUMNS}
  row.update(input='device', dtype='float32', mfu=None, h2d_free=True,
             flops_per_step=2e9, analytic_flops=3e9)
  head = {'device_kind': 'cpu', 'backend': 'cpu', 'num_devices': 2,
          'device_count': 8, 'process_count': 1, 'date': 'today'}
  lines = train_step.format_table(head, [row]).splitlines()
  assert lines[0].startswith('device: cpu (cpu), 2 of 8 devices')
  assert lines[1].split()[:3] == ['input', 'dtype', 'batch']
  cells = lines[2].split()
  assert cells[:2] == ['device', 'float32'] and 'n/a' in cells
  assert '2' in cells and '3' in cells and math.isfinite(float(cells[4]))


def test_profile_groups_trace_events_by_the_hlo_they_ran():
  from dare_jax.bench import profile_step  # pylint: disable=g-import-not-at-top
  hlo = '\n'.join([
      '  %dot.3 = f32[64,128]{1,0} dot(%a, %b), metadata={op_name="jit(f)/'
      'transpose(jvp(Conv1x1))/dot_general"}',
      '  %dot.4 = f32[64,128]{1,0} dot(%a, %b), metadata={op_name="jit(f)/'
      'transpose(jvp(Conv1x1))/dot_general"}',
      '  ROOT %add_fusion.12 = f32[8]{0} fusion(%x), kind=kLoop, '
      'metadata={op_name="jit(f)/add"}'])
  ins = profile_step.hlo_instructions(hlo)
  assert set(ins) == {'dot.3', 'dot.4', 'add_fusion.12'}
  events = [{'ph': 'X', 'name': 'dot.3', 'dur': 3000},
            {'ph': 'X', 'name': 'dot.4', 'dur': 1000},
            {'ph': 'X', 'name': 'add_fusion.12', 'dur': 500},
            {'ph': 'X', 'name': 'ThunkExecutor', 'dur': 9e9},  # not HLO
            {'ph': 'i', 'name': 'dot.3', 'dur': 9e9}]  # not a complete event
  rows = profile_step.group_trace(events, ins, steps=2)
  assert rows == [
      dict(kind='dot', **{'pass': 'bwd'}, primitive='dot_general',
           shape='f32[64,128]', ms=2.0, count=1),
      dict(kind='add_fusion', **{'pass': 'fwd'}, primitive='add', shape='',
           ms=0.25, count=0)]
