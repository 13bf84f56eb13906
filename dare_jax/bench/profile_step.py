r"""Where the train step's time goes: a jax.profiler trace grouped by op.

  python -m dare_jax.bench.profile_step --config=configs/market.py \
      [--batch=16] [--dtype=float32] [--steps=2] [--warmup=2] \
      [--trace_dir=runs/bench/profile] [--top=25] [--json=PATH]

The step is bench.train_step's (builder.build, train.make_train_step, one
batch made on the device, one device). After --warmup steps, --steps steps
run under jax.profiler.trace; every executed HLO instruction of the step is
looked up in the compiled step's optimised HLO text
(`.lower().compile().as_text()`) and its time is grouped by

  kind       the instruction's name without its number (XLA's fusion kind:
             `convolution`, `dot`, `copy_bitcast_fusion`, `ynn_fusion`, ...),
  pass       fwd, or bwd when the JAX op it came from is under transpose(...)
             in its op_name metadata (reverse mode),
  primitive  the JAX primitive of that op_name (conv_general_dilated,
             dot_general, mul, reduce_sum, ...),
  shape      conv/dot only: the output shape (a kernel gradient has the
             kernel's shape),

and printed as ms per step and share of the step's op time. On the CPU the
per-op events need XLA:CPU's traceme annotations, which this module turns on
(XLA_FLAGS --xla_cpu_enable_xprof_traceme=true) before JAX starts its
backend. Fusion names are XLA's and change between versions: read the groups
with the HLO text (written beside the trace as step_hlo.txt).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags
from dare_jax import console

FLAGS = flags.FLAGS

_INSTR = re.compile(r'\s*(?:ROOT )?%([\w.\-]+) = (\S+) [\w\-]+\(')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (output shape, op_name metadata)} of an HLO text."""
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTR.match(line)
    if m:
      op = _OP_NAME.search(line)
      out[m.group(1)] = (m.group(2), op.group(1) if op else '')
  return out


def group_of(name: str, shape: str, op_name: str) -> tuple[str, ...]:
  """(kind, pass, primitive, shape or '') of one executed instruction."""
  kind = re.sub(r'[.\d]+$', '', name)
  passe = 'bwd' if 'transpose(' in op_name else 'fwd'
  primitive = op_name.rsplit('/', 1)[-1] if op_name else '?'
  keep_shape = any(s in primitive for s in ('conv', 'dot'))
  shape = re.sub(r'\{[^}]*\}', '', shape)  # the layout
  return kind, passe, primitive, shape if keep_shape else ''


def group_trace(events, instructions, steps: int) -> list[dict]:
  """Rows {kind, pass, primitive, shape, ms, count} per step, largest first,
  of the trace's complete events that are instructions of the step."""
  ms, count = collections.defaultdict(float), collections.Counter()
  for e in events:
    if e.get('ph') != 'X' or e.get('name') not in instructions:
      continue
    g = group_of(e['name'], *instructions[e['name']])
    ms[g] += e.get('dur', 0) / 1e3 / steps
    count[g] += 1
  rows = [dict(zip(('kind', 'pass', 'primitive', 'shape'), g), ms=v,
               count=count[g] // steps) for g, v in ms.items()]
  return sorted(rows, key=lambda r: -r['ms'])


def _load_trace(trace_dir: str):
  files = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'),
                           recursive=True), key=os.path.getmtime)
  if not files:
    raise SystemExit(f'error: jax.profiler wrote no trace under {trace_dir}.')
  with gzip.open(files[-1]) as f:
    t = json.load(f)
  return t['traceEvents'] if isinstance(t, dict) else t


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_cpu_enable_xprof_traceme=true')
  console.start()  # imports jax: after XLA_FLAGS
  import jax  # pylint: disable=g-import-not-at-top
  from dare_jax import builder  # pylint: disable=g-import-not-at-top
  from dare_jax import reporting  # pylint: disable=g-import-not-at-top
  from dare_jax import train  # pylint: disable=g-import-not-at-top
  from dare_jax.bench import train_step as tsb  # pylint: disable=g-import-not-at-top

  devices = jax.devices()[:1]
  cfg = FLAGS.config
  P = tsb.identities_per_batch(FLAGS.batch, cfg.train.K, 1)
  cfg = tsb.bench_config(cfg, P, FLAGS.dtype, 10, 1)
  built = builder.build(cfg, devices)
  state = built.init_state()
  step = train.make_train_step(cfg, built.model, built.tx, built.mesh)
  batch = tsb.make_device_batch(built.mesh, P, cfg.train.K,
                                cfg.data.input_size)()
  hlo = step.lower(state, batch).compile().as_text()
  for _ in range(FLAGS.warmup):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  step_ms = (time.perf_counter() - t0) / FLAGS.steps * 1e3
  os.makedirs(FLAGS.trace_dir, exist_ok=True)
  with open(os.path.join(FLAGS.trace_dir, 'step_hlo.txt'), 'w') as f:
    f.write(hlo)
  with jax.profiler.trace(FLAGS.trace_dir, create_perfetto_trace=True):
    for _ in range(FLAGS.steps):
      state, m = step(state, batch)
    jax.block_until_ready(m)
  rows = group_trace(_load_trace(FLAGS.trace_dir), hlo_instructions(hlo),
                     FLAGS.steps)
  total = sum(r['ms'] for r in rows)
  print(f'device: {devices[0].platform} ({devices[0].device_kind}), batch '
        f'{FLAGS.batch}, {FLAGS.dtype}, conv1x1={cfg.model.conv1x1}; step '
        f'{step_ms:.1f} ms (untraced); op time {total:.1f} ms per step '
        '(ops on parallel threads add up)')
  print(f'{"ms":>9} {"share":>6} {"n":>4}  kind / pass / primitive / shape')
  for r in rows[:FLAGS.top]:
    print(f'{r["ms"]:9.1f} {100 * r["ms"] / total:5.1f}% {r["count"]:4d}  '
          f'{r["kind"]} / {r["pass"]} / {r["primitive"]} / {r["shape"]}')
  if FLAGS.json:
    reporting.write_json(FLAGS.json, {
        'batch': FLAGS.batch, 'dtype': FLAGS.dtype, 'step_ms': step_ms,
        'op_ms': total, 'rows': rows})
  sys.stdout.flush()


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                  lock_config=False)
  flags.DEFINE_integer('batch', 16, 'Global batch P x K (one device).')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                    'Compute dtype.')
  flags.DEFINE_integer('steps', 2, 'Traced (and timed) steps.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compiling.')
  flags.DEFINE_string('trace_dir', 'runs/bench/profile',
                      'The trace (TensorBoard/Perfetto) and step_hlo.txt.')
  flags.DEFINE_integer('top', 25, 'Groups printed.')
  flags.DEFINE_string('json', '', 'Also write all groups here.')
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=console.parse_flags)
