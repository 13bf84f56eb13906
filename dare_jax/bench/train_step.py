r"""Benchmark: the real train step -- time, throughput, FLOPs and MFU.

  python -m dare_jax.bench.train_step --config=configs/market.py \
      [--batches=72,144,288] [--dtypes=float32,bfloat16] \
      [--input=device|pipeline|both] [--steps=20] [--warmup=3] \
      [--num_devices=0] [--peak_tflops=0] [--json=PATH] \
      [--distributed=auto --coordinator_address=H:P --num_processes=N \
       --process_id=I]

The step is built exactly as training builds it (builder.build: the mesh,
the model and the optimiser; Built.init_state; train.make_train_step), for
every GLOBAL batch B = P x K in --batches (K = config.train.K) and compute dtype in
--dtypes (config.model.dtype). Inputs:

  device    one batch generated on the devices once (random uint8 images,
            each of the P ids K times, no erasing), fed to every step: the
            step alone, no host. The timed steps run under
            jax.transfer_guard_host_to_device('disallow') (column h2d_free),
            and the jitted step's cache must hold 1 program at the end
            (column compiles).
  pipeline  the real input pipeline (data.pipeline's train_batches on the
            config's dataset's train split, this process's rows,
            distributed.shard_batch):
            the step as training runs it, host included.

Compilation (lower + compile, which also fills the jitted step's cache) is
timed on its own; then --warmup steps, then --steps timed steps with one
jax.block_until_ready at the end of the window. step ms is the window's mean,
images/s = B / step time. FLOPs: XLA's cost analysis of the compiled step,
made global (see global_flops), beside the analytic 3 x forward x 2 FLOPs per
Mul-Add (budget/costs.py) x B. Model FLOP/s = XLA's global FLOPs per step /
step time; MFU = that / (dense peak per device x devices), n/a where the
device's peak is unknown (CPU) unless --peak_tflops gives it.
"""

from __future__ import annotations

import copy
import datetime
import sys
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from ml_collections import config_flags
import numpy as np

from dare_jax import bench
from dare_jax import builder
from dare_jax import console
from dare_jax import distributed
from dare_jax import errors
from dare_jax import reporting
from dare_jax import train
from dare_jax.budget import costs as costs_lib
from dare_jax.data import datasets
from dare_jax.data import spec as spec_lib
from dare_jax.models import dare

INPUTS = ('device', 'pipeline')
DTYPES = ('float32', 'bfloat16')

# Dense peak FLOP/s of ONE device by dtype, matched by substring of
# jax.devices()[0].device_kind (lower case), first match wins: the more
# specific names come first ('v5 lite' before 'v5'). H100 / H200 are the SXM
# parts (float32 = TF32 tensor cores); TPU v4 has one peak for both dtypes.
PEAK_FLOPS = (
    (('h100', 'h200'), {'bfloat16': 989.4e12, 'float32': 494.7e12}),
    (('a100',), {'bfloat16': 312e12, 'float32': 156e12}),
    (('v5 lite', 'v5e', 'v5litepod'), {'bfloat16': 197e12, 'float32': 197e12}),
    (('v6 lite', 'v6e'), {'bfloat16': 918e12, 'float32': 918e12}),
    (('v5p', 'tpu v5'), {'bfloat16': 459e12, 'float32': 459e12}),
    (('tpu v4',), {'bfloat16': 275e12, 'float32': 275e12}),
)

FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------
# Pure helpers.

def parse_batches(texts: Sequence[str]) -> list[int]:
  try:
    batches = [int(t) for t in texts]
  except ValueError:
    raise errors.ConfigError(
        f'--batches={",".join(texts)}: give integers, e.g. --batches=72,144'
    ) from None
  if not batches:
    raise errors.ConfigError('--batches is empty: give e.g. --batches=72.')
  return batches


def check_dtypes(dtypes: Sequence[str]) -> list[str]:
  bad = [d for d in dtypes if d not in DTYPES]
  if bad or not dtypes:
    raise errors.ConfigError(
        f'--dtypes={",".join(dtypes)}: use {" and/or ".join(DTYPES)}.')
  return list(dtypes)


def identities_per_batch(batch: int, K: int, num_devices: int) -> int:
  """P of a GLOBAL batch B = P x K that splits over `num_devices` devices."""
  if batch % K:
    raise errors.ConfigError(
        f'--batches: {batch} is not a multiple of config.train.K={K} '
        f'(B = P x K); use e.g. {max(2, -(-batch // K)) * K} or change K with '
        '--config.train.K.')
  if batch // K < 2:
    raise errors.ConfigError(
        f'--batches: {batch} = {batch // K} x {K} has fewer than 2 '
        f'identities; batch-hard mining needs B >= {2 * K}.')
  if batch % num_devices:
    raise errors.ConfigError(
        f'--batches: {batch} does not split evenly over {num_devices} '
        f'devices; use a multiple of {num_devices} (or set --num_devices).')
  return batch // K


def check_pipeline_batch(dataset, batch: int, K: int) -> None:
  """The train split has the B / K identities a batch draws."""
  pids = np.asarray(dataset.train.pids)
  num_ids = len(np.unique(pids[pids >= 1]))
  if batch // K > num_ids:
    raise errors.DataError(
        f'--batches={batch}: {batch // K} identities per batch (B / K), but '
        f'the train split of {dataset.name!r} has {num_ids}; use --batches '
        f'<= {num_ids * K} for --input=pipeline (or more data).')


def select_devices(num_devices: int) -> list:
  """jax.devices()[:num_devices] (0 = all), every process keeping some."""
  every = jax.devices()
  if num_devices < 0 or num_devices > len(every):
    raise errors.ConfigError(
        f'--num_devices={num_devices}: this job has {len(every)} devices; '
        f'use 1..{len(every)}, or 0 for all of them.')
  if num_devices and jax.process_count() > 1 and num_devices != len(every):
    raise errors.ConfigError(
        f'--num_devices={num_devices} with {jax.process_count()} processes: '
        'use every device (0); each process must feed some of the mesh.')
  return every[:num_devices] if num_devices else every


def xla_flops(compiled) -> float:
  """FLOPs of a compiled program from XLA's cost analysis.

  jax returns a dict (recent versions) or a list holding one dict per HLO
  module (older ones; a jit program is one module): the modules are summed.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, dict):
    analysis = [analysis]
  if not analysis or any('flops' not in a for a in analysis):
    raise RuntimeError(f'XLA cost analysis has no "flops": {analysis!r}')
  return float(sum(a['flops'] for a in analysis))


def global_flops(per_device_flops: float, num_devices: int) -> float:
  """The step's FLOPs over all devices, from XLA's figure for the program.

  A jit(shard_map) step compiles to ONE SPMD program that every device runs
  on its shard, and XLA's cost analysis describes that program: its FLOPs
  are PER DEVICE. Measured on CPU (configs/smoke.py, global batch 8, XLA's
  figure): 4.15M on 1 device, 2.43M on each of 2, 1.04M on each of 8
  (tests/bench_train_step_test.py checks the convention exactly on a
  shard_map matmul of known FLOPs). So global = figure x devices. The
  replicated part of the step (the optimiser update, the loss on the
  all-gathered embeddings) runs on every device and so counts once per
  device: that is the work the devices do. It is what makes the tiny
  model's global count grow with the devices (4.15M, 4.86M, 8.28M); at
  ResNet-50 size it is well under 1% (Adam on ~25M parameters against
  ~1e11 FLOPs of convolutions per device at 9 images per device).
  """
  return per_device_flops * num_devices


def analytic_flops(model, input_hw: Sequence[int], batch: int) -> float:
  """3 passes (forward, and backward ~ 2 forwards) x 2 FLOPs per Mul-Add x
  the full forward's Mul-Adds per image (convolutions and dense layers, as
  budget/costs.py counts them) x the batch."""
  macs = costs_lib.exit_costs(model, tuple(input_hw))
  return 3.0 * 2.0 * macs['fused' if 'fused' in macs else 'stage4'] * batch


def peak_flops_per_device(device_kind: str, dtype: str,
                          peak_tflops: float = 0.0) -> Optional[float]:
  """Dense peak FLOP/s of one device: the override, the table, or None."""
  if peak_tflops > 0:
    return peak_tflops * 1e12
  kind = device_kind.lower()
  for names, peaks in PEAK_FLOPS:
    if any(n in kind for n in names):
      return peaks[dtype]
  return None


def make_device_batch(mesh: Mesh, P: int, K: int, input_hw: Sequence[int]):
  """A jitted () -> batch made on the devices, split along 'data':
  image uint8 [B, H, W, 3], pid int32 [B] (each of P ids K times),
  erase float32 [B, 4] (zeros: no erasing), B = P x K."""
  h, w = (int(v) for v in input_hw)
  B = P * K

  def make():
    key = jax.random.key(0)
    image_BxHxWx3 = jax.random.randint(key, (B, h, w, 3), 0, 256,
                                       jnp.int32).astype(jnp.uint8)
    pid_B = jnp.repeat(jnp.arange(P, dtype=jnp.int32), K)
    return {'image': image_BxHxWx3, 'pid': pid_B,
            'erase': jnp.zeros((B, 4), jnp.float32)}
  make = jax.jit(make, out_shardings=distributed.batch_sharded(mesh))
  return make


def bench_config(config, P: int, dtype: str, num_steps: int,
                 num_devices: int):
  """A copy of `config` with train.P, model.dtype and train.num_steps set,
  and eval.batch_size (unused here) rounded up to a multiple of the devices
  so that configlib.validate checks only what the benchmark uses."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.train.P = P
    c.model.dtype = dtype
    c.train.num_steps = num_steps
    c.eval.batch_size = -(-c.eval.batch_size // num_devices) * num_devices
  return c


def _is_transfer_guard_error(e: Exception) -> bool:
  return 'isallowed host-to-device' in str(e)


# ----------------------------------------------------------------------------
# The measurement.

def measure(config, batch: int, dtype: str,
            input: str = 'device',  # pylint: disable=redefined-builtin
            steps: int = 20, warmup: int = 3, devices=None,
            dataset=None, peak_tflops: float = 0.0) -> dict:
  """Times config's real train step at GLOBAL batch `batch` and `dtype`.

  Args:
    config: a full config (configs/*.py); train.K, data.input_size and the
      model, loss, optimiser fields are used as training uses them.
    batch: the global batch B = P x K.
    dtype: the compute dtype, 'float32' or 'bfloat16'.
    input: 'device' (a batch made on the devices once) or 'pipeline' (the
      real input pipeline on the config's dataset's train split).
    steps, warmup: timed steps, and untimed ones after compiling.
    devices: the mesh's devices (None = jax.devices()).
    dataset: for input='pipeline', an already loaded dataset (None = load
      config.data's).
    peak_tflops: dense peak of one device for the MFU (0 = the table).

  Returns:
    A flat dict (one table row): input, dtype, global_batch,
    per_device_batch, P, K, num_devices, compile_s, step_ms, images_per_s,
    xla_flops_per_device, flops_per_step (global, XLA), analytic_flops,
    model_tflops_per_s, peak_tflops (total over the devices, or None), mfu
    (or None), compiles, h2d_free (None for the pipeline), loss, steps,
    warmup.
  """
  if input not in INPUTS:
    raise errors.ConfigError(f'--input={input!r}: use one of {INPUTS}.')
  if steps < 1 or warmup < 0:
    raise errors.ConfigError(
        f'--steps={steps} --warmup={warmup}: need steps >= 1, warmup >= 0.')
  check_dtypes([dtype])
  devices = list(devices if devices is not None else jax.devices())
  num_devices = len(devices)
  P = identities_per_batch(batch, config.train.K, num_devices)
  config = bench_config(config, P, dtype, warmup + steps, num_devices)
  built = builder.build(config, devices)  # validates for these devices
  if input == 'pipeline':
    if dataset is None:
      dataset = datasets.load_dataset(config.data)
    check_pipeline_batch(dataset, batch, config.train.K)

  mesh = built.mesh
  state = built.init_state()
  step = train.make_train_step(config, built.model, built.tx, mesh)

  batches = None
  if input == 'device':
    device_batch = make_device_batch(mesh, P, config.train.K,
                                     config.data.input_size)()
    next_batch = lambda: device_batch
  else:
    rows = distributed.process_rows(mesh, distributed.AXIS, batch)
    batches = datasets.pipeline_module(config.data.pipeline).train_batches(
        dataset.train, spec_lib.TrainInput.from_config(config), 0, rows=rows)
    next_batch = lambda: distributed.shard_batch(next(batches), mesh, batch)

  try:
    first = next_batch()
    jax.block_until_ready((state, first))
    logging.info('%s %s batch %d on %d devices: compiling ...', input,
                 dtype, batch, num_devices)
    t0 = time.perf_counter()
    # Lowering and compiling ahead of time also fills the jitted step's
    # cache: the first call below runs this executable, compiling nothing.
    compiled = step.lower(state, first).compile()
    compile_s = time.perf_counter() - t0
    logging.info('compiled in %.1f s; %d warm-up and %d timed steps ...',
                 compile_s, warmup, steps)
    per_device = xla_flops(compiled)

    pending = [first]
    take = lambda: pending.pop() if pending else next_batch()
    metrics = None
    for _ in range(warmup):
      state, metrics = step(state, take())
    jax.block_until_ready((state, metrics))

    def window(state):
      t0 = time.perf_counter()
      for _ in range(steps):
        state, metrics = step(state, take())
      jax.block_until_ready((state, metrics))
      return state, metrics, time.perf_counter() - t0

    h2d_free = None
    if input == 'device':
      try:
        with jax.transfer_guard_host_to_device('disallow'):
          state, metrics, seconds = window(state)
        h2d_free = True
      except Exception as e:  # pylint: disable=broad-except
        if not _is_transfer_guard_error(e):
          raise
        # The guard stops the call before it runs: the state is intact.
        h2d_free = False
        state, metrics, seconds = window(state)
    else:
      state, metrics, seconds = window(state)
    compiles = step._cache_size()  # pylint: disable=protected-access
    loss = float(metrics['loss'])
  finally:
    if batches is not None:
      batches.close()

  step_s = seconds / steps
  logging.info('%.1f ms per step, %.1f images/s.', 1e3 * step_s,
               batch / step_s)
  flops = global_flops(per_device, num_devices)
  peak = peak_flops_per_device(devices[0].device_kind, dtype, peak_tflops)
  peak_total = None if peak is None else peak * num_devices
  model_flops_per_s = flops / step_s
  return {
      'input': input, 'dtype': dtype, 'global_batch': batch,
      'per_device_batch': batch // num_devices, 'P': P, 'K': config.train.K,
      'num_devices': num_devices, 'compile_s': compile_s,
      'step_ms': 1e3 * step_s, 'images_per_s': batch / step_s,
      'xla_flops_per_device': per_device, 'flops_per_step': flops,
      'analytic_flops': analytic_flops(dare.from_config(config.model),
                                       config.data.input_size, batch),
      'model_tflops_per_s': model_flops_per_s / 1e12,
      'peak_tflops': None if peak_total is None else peak_total / 1e12,
      'mfu': None if peak_total is None else model_flops_per_s / peak_total,
      'compiles': compiles, 'h2d_free': h2d_free, 'loss': loss,
      'steps': steps, 'warmup': warmup,
  }


def header() -> dict:
  d = jax.devices()[0]
  return {'device_kind': d.device_kind, 'backend': jax.default_backend(),
          'device_count': jax.device_count(),
          'process_count': jax.process_count(),
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds')}


COLUMNS = (  # (title, row key, format); flops_per_step etc. in GFLOP
    ('input', 'input', '{}'), ('dtype', 'dtype', '{}'),
    ('batch', 'global_batch', '{:d}'), ('/dev', 'per_device_batch', '{:d}'),
    ('compile s', 'compile_s', '{:.1f}'), ('step ms', 'step_ms', '{:.2f}'),
    ('images/s', 'images_per_s', '{:.1f}'),
    ('XLA GFLOP', 'flops_per_step', '{:.4g}'),
    ('6MAC*B GFLOP', 'analytic_flops', '{:.4g}'),
    ('TFLOP/s', 'model_tflops_per_s', '{:.4g}'), ('MFU', 'mfu', '{:.1%}'),
    ('compiles', 'compiles', '{:d}'), ('h2d_free', 'h2d_free', '{}'))
_GIGA = ('flops_per_step', 'analytic_flops')


def format_table(head: dict, rows: Sequence[dict]) -> str:
  """The header line and one right-aligned line per row (None: n/a)."""
  return (f'device: {head["device_kind"]} ({head["backend"]}), '
          f'{head["num_devices"]} of {head["device_count"]} devices, '
          f'{head["process_count"]} process(es), {head["date"]}\n' +
          bench.format_columns(
              COLUMNS, rows, lambda k, v: v / 1e9 if k in _GIGA else v))


def define_flags() -> None:
  """The command line's flags: defined when run as a program only, so
  that tests can import several benchmark modules side by side."""
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                  lock_config=True)
  flags.DEFINE_list('batches', ['72', '144', '288'],
                    'GLOBAL batch sizes B = P x K (K = config.train.K).')
  flags.DEFINE_list('dtypes', ['float32', 'bfloat16'],
                    'Compute dtypes (config.model.dtype): float32, bfloat16.')
  flags.DEFINE_enum('input', 'device', list(INPUTS) + ['both'],
                    'device: one batch made on the devices, the step alone; '
                    'pipeline: the real input pipeline; both: each in turn.')
  flags.DEFINE_integer('steps', 20, 'Timed steps per measurement.')
  flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.')
  flags.DEFINE_integer('num_devices', 0,
                       'Use jax.devices()[:N]; 0 = every device.')
  flags.DEFINE_float('peak_tflops', 0.0,
                     'Dense peak TFLOP/s of ONE device for the MFU (0 = the '
                     'built-in table by device kind; unknown devices: n/a).')
  flags.DEFINE_string('json', '', 'Also write the results here.')
  distributed.define_flags()
  flags.mark_flags_as_required(['config'])


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    distributed.initialize_from_flags()
    config = FLAGS.config
    batches = parse_batches(FLAGS.batches)
    dtypes = check_dtypes(FLAGS.dtypes)
    inputs = INPUTS if FLAGS.input == 'both' else (FLAGS.input,)
    devices = select_devices(FLAGS.num_devices)
    for b in batches:  # every error before the first compilation
      identities_per_batch(b, config.train.K, len(devices))
    dataset = None
    if 'pipeline' in inputs:
      dataset = datasets.load_dataset(config.data)
      for b in batches:
        check_pipeline_batch(dataset, b, config.train.K)
    rows = [measure(config, b, dt, inp, FLAGS.steps, FLAGS.warmup, devices,
                    dataset, FLAGS.peak_tflops)
            for inp in inputs for dt in dtypes for b in batches]
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  if not distributed.is_main_process():
    return
  head = dict(header(), num_devices=len(devices))
  print(format_table(head, rows))
  if FLAGS.json:
    reporting.write_json(FLAGS.json, dict(head, rows=rows))
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
