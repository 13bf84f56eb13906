r"""Benchmark: wall-clock latency of each anytime exit against its Mul-Adds,
in JAX and, side by side, in onnxruntime.

  python -m dare_jax.bench.latency --config=configs/market.py \
      [--batch=1] [--repeats=20] [--runtime=jax,onnx] [--threads=0] \
      [--json=PATH]

For every exit s the num_exits=s forward (stages and heads 1..s; 'fused' =
the full forward) runs on one batch of random images in eval mode; the
median of --repeats timed runs (after warm-up and compilation) is its
latency. The paper says latency is roughly proportional to the cumulative
Mul-Add count; the table shows both and their ratio, normalised to the
full forward.

--runtime (comma list of jax, onnx; default jax):
  jax   the jitted Flax forward (XLA, on jax.devices()[0]), timed to
        jax.block_until_ready of its outputs; the batch is already on the
        device.
  onnx  the same forward exported once per exit with jax2onnx
        (inference/bundle.export_onnx: the variables folded in as
        constants, float32, dynamic batch), run by an onnxruntime CPU
        session (--threads intra-op threads, 0 = onnxruntime's default),
        timed to the numpy outputs of session.run.
Both time the same batch. Whenever onnx is measured its outputs are also
checked against the JAX forward's on that batch (computed even when jax is
not timed): onnx_vs_jax_maxrel is, over the exit's outputs, the largest
max|onnx - jax| / max|jax| (per output, scale-relative, so that
near-zero embedding entries do not dominate). A benchmark that times a
wrong model is worthless: look at that column first.

JSON rows: macs, cost_fraction; per runtime R latency_ms_R,
latency_ms_min_R, latency_fraction_R; latency_ms, latency_ms_min,
latency_fraction of the first runtime listed (the JAX ones by default, as
before --runtime existed); with both, onnx_over_jax (latency ratio); with
onnx, onnx_vs_jax_maxrel.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from dare_jax import bench
from dare_jax import console
from dare_jax import errors
from dare_jax import reporting
from dare_jax.budget import costs as costs_lib
from dare_jax.models import dare

RUNTIMES = ('jax', 'onnx', 'torch')
# A warning, not an error, above this: the row is still printed, flagged.
AGREEMENT_WARN = 1e-3


def parse_runtimes(spec: str | Sequence[str]) -> tuple[str, ...]:
  """'jax,onnx' (or a list) -> ('jax', 'onnx'); anything else refused."""
  raw = spec if isinstance(spec, str) else ','.join(spec)
  names = [n.strip() for n in raw.split(',') if n.strip()]
  bad = [n for n in names if n not in RUNTIMES]
  if bad or not names:
    raise errors.ConfigError(
        f'--runtime={raw}: {"unknown " + ", ".join(bad) if bad else "empty"};'
        f' use a comma list of {", ".join(RUNTIMES)} (e.g. '
        '--runtime=jax,onnx).')
  return tuple(dict.fromkeys(names))  # order kept, duplicates dropped


def _time(fn: Callable[[], object], repeats: int, warmup: int = 2):
  """(median, min) seconds of fn() over repeats runs, after warmup runs."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), float(np.min(times))


def max_relative_difference(got, ref) -> float:
  """Over the outputs of ref: max |got - ref| / max |ref| (per output)."""
  if set(got) != set(ref):
    raise errors.ConfigError(
        f'the ONNX model outputs {sorted(got)}, the JAX forward '
        f'{sorted(ref)}: not the same model.')
  worst = 0.0
  for k, r in ref.items():
    r = np.asarray(r, np.float64)
    g = np.asarray(got[k], np.float64)
    if g.shape != r.shape:
      raise errors.ConfigError(f'{k}: ONNX output {g.shape}, JAX {r.shape}.')
    scale = max(float(np.max(np.abs(r))), np.finfo(np.float32).tiny)
    worst = max(worst, float(np.max(np.abs(g - r))) / scale)
  return worst


def exit_latencies(config, batch: int, repeats: int,
                   runtimes: str | Sequence[str] = ('jax',),
                   threads: int = 0) -> list[dict]:
  runtimes = parse_runtimes(runtimes)
  if repeats < 1 or batch < 1:
    raise errors.ConfigError(f'--batch={batch}, --repeats={repeats}: both '
                             'must be at least 1.')
  if threads < 0:
    raise errors.ConfigError(f'--threads={threads}: 0 (onnxruntime default) '
                             'or a positive count.')
  model = dare.from_config(config.model)
  if 'onnx' in runtimes and model.dtype != jnp.float32:
    raise errors.ConfigError(
        f'--runtime=onnx with config.model.dtype={config.model.dtype}: the '
        'ONNX model is float32, so the two would not compute the same '
        'thing; add --config.model.dtype=float32.')
  h, w = config.data.input_size
  x = jax.random.normal(jax.random.key(1), (batch, h, w, 3), jnp.float32)
  x_host = np.asarray(x)
  variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1]))()
  exit_costs = costs_lib.exit_costs(model, (h, w))
  rows = []
  for s, name in enumerate(dare.EMBEDDINGS[:4], start=1):
    row = {'exit': name, 'macs': exit_costs[name]}
    fn = jax.jit(lambda v, x, s=s: model.apply(v, x, num_exits=s))
    ref = None
    if 'onnx' in runtimes:
      ref = jax.device_get(fn(variables, x))
    for rt in runtimes:
      if rt == 'torch':
        if s < 4:
          row['latency_ms_torch'] = row['latency_ms_min_torch'] = None
          continue
        med, low = _torch_time(config, x_host, repeats)
      elif rt == 'jax':
        med, low = _time(lambda: jax.block_until_ready(fn(variables, x)),
                         repeats)
      else:
        from dare_jax.inference import bundle  # pylint: disable=g-import-not-at-top
        logging.info('exit %s: exporting the num_exits=%d forward to ONNX '
                     '...', name, s)
        t0 = time.perf_counter()
        proto = bundle.export_onnx(model, variables, (h, w), num_exits=s)
        session = bundle.onnx_session(proto, threads=threads)
        run = bundle.onnx_forward(session)
        logging.info('exported (%.3g MB) and loaded in %.1f s; timing ...',
                     len(proto) / 1e6, time.perf_counter() - t0)
        del proto
        row['onnx_vs_jax_maxrel'] = max_relative_difference(run(x_host), ref)
        if row['onnx_vs_jax_maxrel'] > AGREEMENT_WARN:
          logging.warning('exit %s: ONNX and JAX differ by %.2e (relative) on '
                          'the timed batch: the ONNX timing is of a different '
                          'computation.', name, row['onnx_vs_jax_maxrel'])
        med, low = _time(lambda: run(x_host), repeats)
        del run, session
      row[f'latency_ms_{rt}'] = 1e3 * med
      row[f'latency_ms_min_{rt}'] = 1e3 * low
      logging.info('exit %s, %s: %.2f ms (median of %d)', name, rt, 1e3 * med,
                   repeats)
    first = runtimes[0]
    row['latency_ms'] = row[f'latency_ms_{first}']
    row['latency_ms_min'] = row[f'latency_ms_min_{first}']
    if 'jax' in runtimes and 'onnx' in runtimes:
      row['onnx_over_jax'] = row['latency_ms_onnx'] / row['latency_ms_jax']
    if 'torch' in runtimes:
      for rt in ('jax', 'onnx'):
        if rt in runtimes:
          row[f'{rt}_over_torch'] = (
              None if row['latency_ms_torch'] is None else
              row[f'latency_ms_{rt}'] / row['latency_ms_torch'])
    rows.append(row)
  full = rows[-1]
  for r in rows:
    r['cost_fraction'] = r['macs'] / full['macs']
    for rt in runtimes:
      r[f'latency_fraction_{rt}'] = (
          None if r[f'latency_ms_{rt}'] is None else
          r[f'latency_ms_{rt}'] / full[f'latency_ms_{rt}'])
    r['latency_fraction'] = r[f'latency_fraction_{runtimes[0]}']
  return rows


COLUMNS = (('exit', 'exit', '{}'), ('Mul-Adds/img', 'macs', '{:,d}'),
           ('latency ms', 'latency_ms', '{:.2f}'),
           ('cost frac', 'cost_fraction', '{:.3f}'),
           ('time frac', 'latency_fraction', '{:.3f}'))


def columns(runtimes: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
  """COLUMNS for --runtime=jax (unchanged); per-runtime ones otherwise."""
  runtimes = tuple(runtimes)
  if runtimes == ('jax',):
    return COLUMNS
  cols = [('exit', 'exit', '{}'), ('Mul-Adds/img', 'macs', '{:,d}')]
  cols += [(f'{rt} ms', f'latency_ms_{rt}', '{:.2f}') for rt in runtimes]
  if {'jax', 'onnx'} <= set(runtimes):
    cols.append(('onnx/jax', 'onnx_over_jax', '{:.2f}'))
  cols.append(('cost frac', 'cost_fraction', '{:.3f}'))
  cols += [(f'{rt} time frac', f'latency_fraction_{rt}', '{:.3f}')
           for rt in runtimes]
  if 'onnx' in runtimes:
    cols.append(('onnx_vs_jax_maxrel', 'onnx_vs_jax_maxrel', '{:.1e}'))
  if 'torch' in runtimes:
    cols += [(f'{rt}/torch', f'{rt}_over_torch', '{:.2f}')
             for rt in ('jax', 'onnx') if rt in runtimes]
  return tuple(cols)


def _torch_time(config, x_BxHxWx3: np.ndarray, repeats: int):
  """(median, min) seconds of PyTorch eager's eval forward of the same
  architecture (references/torch_dare: torchvision's ResNet, the same exit
  heads and fusion; its own random weights: time only, no agreement check),
  NCHW float32, torch.inference_mode, torch's default threads."""
  import torch  # pylint: disable=g-import-not-at-top
  from dare_jax.references import torch_dare  # pylint: disable=g-import-not-at-top
  m = config.model
  if m.backbone != 'resnet' or m.heads != 'dare':
    raise errors.ConfigError('--runtime=torch times ResNet DaRe configs only.')
  # depth 0: config.model.stage_sizes, the block picking 18 or 50's type.
  depth = m.depth or (18 if m.block == 'basic' else 50)
  net = torch_dare.build_model(
      depth, width=m.width, head_hidden=m.head_hidden,
      embedding_dim=m.embedding_dim,
      stage_sizes=None if m.depth else tuple(m.stage_sizes)).eval()
  x = torch.from_numpy(np.ascontiguousarray(x_BxHxWx3.transpose(0, 3, 1, 2)))
  with torch.inference_mode():
    return _time(lambda: net(x), repeats)


def header(config, batch: int, runtimes: Sequence[str], threads: int) -> dict:
  device = jax.devices()[0]
  head = {'device': str(device), 'device_kind': device.device_kind,
          'backend': jax.default_backend(), 'batch': batch,
          'input_size': list(config.data.input_size),
          'runtimes': list(runtimes),
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds')}
  if 'onnx' in runtimes:
    import onnxruntime  # pylint: disable=g-import-not-at-top
    head['onnxruntime'] = onnxruntime.__version__
    head['onnx_threads'] = threads
  return head


def define_flags() -> None:
  """The command's flags (defined when run as a program, so that importing
  this module next to another with a --config or --batch is harmless)."""
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                  lock_config=True)
  flags.DEFINE_integer('batch', 1, 'Images per forward.')
  flags.DEFINE_integer('repeats', 20, 'Timed runs per exit and runtime '
                       '(median taken).')
  flags.DEFINE_list('runtime', ['jax'], 'Comma list of runtimes to time: '
                    f'{", ".join(RUNTIMES)}.')
  flags.DEFINE_integer('threads', 0, 'onnxruntime intra-op threads (0 = its '
                       'default, one per core).')
  flags.DEFINE_string('json', '', 'Also write the results here.')
  flags.mark_flags_as_required(['config'])


FLAGS = flags.FLAGS


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    runtimes = parse_runtimes(FLAGS.runtime)
    rows = exit_latencies(FLAGS.config, FLAGS.batch, FLAGS.repeats, runtimes,
                          FLAGS.threads)
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  head = header(FLAGS.config, FLAGS.batch, runtimes, FLAGS.threads)
  line = (f'device: {head["device_kind"]} ({head["backend"]}), batch '
          f'{FLAGS.batch}, input {tuple(FLAGS.config.data.input_size)}')
  if 'onnx' in runtimes:
    line += (f'; onnxruntime {head["onnxruntime"]} CPU, threads '
             f'{FLAGS.threads or "default"}')
  print(line)
  print(bench.format_columns(columns(runtimes), rows))
  if FLAGS.json:
    reporting.write_json(FLAGS.json, dict(head, rows=rows))
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
