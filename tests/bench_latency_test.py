"""dare_jax.bench.latency: JAX and onnxruntime side by side, their agreement,
and the --runtime checks. No timing thresholds: only that each runtime was
timed and that both computed the same thing on the timed batch."""

import numpy as np
import pytest

from configs import smoke
from dare_jax import bench
from dare_jax import errors
from dare_jax.bench import latency
from dare_jax.models import dare

# Its module-scoped fixtures are built once: all its tests on one xdist
# worker (.ci/run: --dist loadgroup).
pytestmark = pytest.mark.xdist_group('bench_latency')

pytest.importorskip('jax2onnx')
pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def both_rows():
  return latency.exit_latencies(smoke.get_config(), batch=2, repeats=2,
                                runtimes='jax,onnx')


@pytest.mark.slow
def test_both_runtimes_are_timed_and_agree(both_rows):
  assert [r['exit'] for r in both_rows] == list(dare.EMBEDDINGS[:4])
  for r in both_rows:
    assert r['latency_ms_jax'] > 0 and r['latency_ms_onnx'] > 0
    assert r['onnx_vs_jax_maxrel'] < 1e-4, r
    assert r['onnx_over_jax'] == pytest.approx(
        r['latency_ms_onnx'] / r['latency_ms_jax'])
    # The pre---runtime keys stay, of the first runtime listed (jax).
    assert r['latency_ms'] == r['latency_ms_jax']
    assert r['latency_fraction'] == r['latency_fraction_jax']
  assert both_rows[-1]['cost_fraction'] == 1.0
  assert both_rows[-1]['latency_fraction_onnx'] == 1.0


def test_table_has_per_runtime_columns_and_the_check(both_rows):
  table = bench.format_columns(latency.columns(('jax', 'onnx')), both_rows)
  title = table.splitlines()[0].split()
  for col in ('jax', 'onnx', 'onnx/jax', 'onnx_vs_jax_maxrel', 'Mul-Adds/img'):
    assert col in title
  assert len(table.splitlines()) == 5


def test_default_runtime_keeps_the_original_columns():
  assert latency.columns(('jax',)) == latency.COLUMNS
  assert latency.parse_runtimes(['jax']) == ('jax',)
  assert latency.parse_runtimes('onnx, jax,onnx') == ('onnx', 'jax')


@pytest.mark.parametrize('spec', ['jax,tensorrt', 'tf', '', ','])
def test_unknown_runtime_is_refused(spec):
  with pytest.raises(errors.ConfigError, match=r'--runtime=.*jax, onnx, torch'):
    latency.parse_runtimes(spec)
  with pytest.raises(errors.ConfigError, match='--runtime'):
    latency.exit_latencies(smoke.get_config(), 1, 1, runtimes=spec)


def test_bfloat16_model_against_onnx_is_refused():
  config = smoke.get_config()
  config.model.dtype = 'bfloat16'
  with pytest.raises(errors.ConfigError, match='float32'):
    latency.exit_latencies(config, 1, 1, runtimes=('jax', 'onnx'))


def test_max_relative_difference():
  ref = {'a': np.array([[1.0, -4.0]]), 'b': np.array([[0.0, 2.0]])}
  got = {'a': np.array([[1.0, -3.0]]), 'b': np.array([[0.1, 2.0]])}
  assert latency.max_relative_difference(got, ref) == pytest.approx(0.25)
  with pytest.raises(errors.ConfigError, match='not the same model'):
    latency.max_relative_difference({'a': ref['a']}, ref)


def test_torch_runtime_times_the_full_forward():
  """--runtime=torch: PyTorch eager's full forward beside JAX's (the other
  exits have no torch figure), ratios consistent."""
  pytest.importorskip('torch')
  rows = latency.exit_latencies(smoke.get_config(), batch=2, repeats=2,
                                runtimes=('jax', 'torch'))
  assert [r['latency_ms_torch'] is None for r in rows] == [True] * 3 + [False]
  last = rows[-1]
  assert last['latency_ms_torch'] > 0
  np.testing.assert_allclose(last['jax_over_torch'],
                             last['latency_ms_jax'] / last['latency_ms_torch'])
