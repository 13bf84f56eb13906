r"""Benchmark: wall-clock latency of each anytime exit against its Mul-Adds.

  python -m dare_jax.bench.latency --config=configs/market.py \
      [--batch=1] [--repeats=20] [--json=PATH]

For every exit s the jitted num_exits=s forward (stages and heads 1..s;
'fused' = the full forward) runs on a batch of random images in eval mode;
the median of --repeats timed runs (after warm-up and compilation) is its
latency. The paper says latency is roughly proportional to the cumulative
Mul-Add count; the table shows both and their ratio, normalised to the
full forward.
"""

from __future__ import annotations

import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from dare_jax import bench
from dare_jax import reporting
from dare_jax.budget import costs as costs_lib
from dare_jax.models import dare

config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                lock_config=True)
flags.DEFINE_integer('batch', 1, 'Images per forward.')
flags.DEFINE_integer('repeats', 20, 'Timed runs per exit (median taken).')
flags.DEFINE_string('json', '', 'Also write the results here.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def exit_latencies(config, batch: int, repeats: int) -> list[dict]:
  model = dare.from_config(config.model)
  h, w = config.data.input_size
  x = jax.random.normal(jax.random.key(1), (batch, h, w, 3), jnp.float32)
  variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1]))()
  exit_costs = costs_lib.exit_costs(model, (h, w))
  rows = []
  for s, name in enumerate(dare.EMBEDDINGS[:4], start=1):
    fn = jax.jit(lambda v, x, s=s: model.apply(v, x, num_exits=s))
    jax.block_until_ready(fn(variables, x))  # compile + warm up
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(variables, x))
      times.append(time.perf_counter() - t0)
    rows.append({'exit': name, 'macs': exit_costs[name],
                 'latency_ms': 1e3 * float(np.median(times)),
                 'latency_ms_min': 1e3 * float(np.min(times))})
  full = rows[-1]
  for r in rows:
    r['cost_fraction'] = r['macs'] / full['macs']
    r['latency_fraction'] = r['latency_ms'] / full['latency_ms']
  return rows


COLUMNS = (('exit', 'exit', '{}'), ('Mul-Adds/img', 'macs', '{:,d}'),
           ('latency ms', 'latency_ms', '{:.2f}'),
           ('cost frac', 'cost_fraction', '{:.3f}'),
           ('time frac', 'latency_fraction', '{:.3f}'))


def main(argv):
  del argv
  rows = exit_latencies(FLAGS.config, FLAGS.batch, FLAGS.repeats)
  device = jax.devices()[0]
  print(f'device: {device.device_kind} ({jax.default_backend()}), batch '
        f'{FLAGS.batch}, input {tuple(FLAGS.config.data.input_size)}')
  print(bench.format_columns(COLUMNS, rows))
  if FLAGS.json:
    reporting.write_json(FLAGS.json, {'device': str(device),
                                      'batch': FLAGS.batch, 'rows': rows})
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
