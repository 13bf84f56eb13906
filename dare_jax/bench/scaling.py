r"""Benchmark: weak scaling of the train step at a fixed per-device batch.

  python -m dare_jax.bench.scaling --config=configs/smoke.py \
      [--per_device_batch=8] [--devices=1,2,4,8] [--processes=2] \
      [--dtype=float32] [--steps=10] [--warmup=2] [--timeout=1800] \
      [--json=PATH] [--config.FIELD=VALUE ...]

For every N in --devices, dare_jax.bench.train_step runs in a fresh
subprocess (input=device, one dtype, global batch N x --per_device_batch):
on CPU with N forced host devices (XLA_FLAGS
--xla_force_host_platform_device_count=N), on an accelerator host with
--num_devices=N. Then, with --processes=2 (CPU only), the same step on
max(devices) devices split over 2 processes on this machine
(jax.distributed over localhost), each with max(devices) / 2 forced devices,
beside the single-process run on as many devices.

Efficiency = images/s at N / (N x images/s at 1 device, 1 process).
--config and every --config.FIELD=VALUE given here go to the subprocesses.

On CPU the forced devices share this machine's physical cores: the
efficiency there measures the framework's overhead and the sharing of cores,
not interconnect scaling.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from dare_jax import bench
from dare_jax import console
from dare_jax import errors
from dare_jax import reporting

FLAGS = flags.FLAGS

_TAIL_CHARS = 3000  # of a failed subprocess's stderr


class RunError(RuntimeError):
  """A benchmark subprocess failed; the message holds its stderr's tail."""


def parse_devices(texts: Sequence[str]) -> list[int]:
  try:
    counts = sorted({int(t) for t in texts})
  except ValueError:
    counts = []
  if not counts or counts[0] < 1:
    raise errors.ConfigError(
        f'--devices={",".join(texts)}: give positive integers, e.g. '
        '--devices=1,2,4,8.')
  return counts


def config_args(config_flag) -> list[str]:
  """--config=PATH and every --config.FIELD=VALUE override, as given."""
  path = config_flags.get_config_filename(config_flag)
  overrides = [a for a in sys.argv[1:]
               if a.startswith(('--config.', '--noconfig.'))]
  return [f'--config={path}'] + overrides


def with_forced_devices(env: dict, count: int) -> dict:
  """`env` with --xla_force_host_platform_device_count=count appended to
  XLA_FLAGS (a later occurrence of the flag wins)."""
  env = dict(env)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={count}'
                      ).strip()
  return env


def efficiency(rows: Sequence[dict]) -> list[dict]:
  """Adds 'efficiency' = images/s / (devices x images/s of the 1-device,
  1-process row); None without such a row."""
  base = [r for r in rows if r['devices'] == 1 and r['processes'] == 1]
  per_device = base[0]['images_per_s'] if base else None
  return [dict(r, efficiency=None if per_device is None else
               r['images_per_s'] / (r['devices'] * per_device))
          for r in rows]


def multi_process_comparison(rows: Sequence[dict]) -> list[str]:
  """A line per multi-process row: its step time against the one-process
  row on as many devices."""
  single = {r['devices']: r for r in rows if r['processes'] == 1}
  lines = []
  for r in rows:
    s = single.get(r['devices'])
    if r['processes'] > 1 and s is not None:
      lines.append(
          f'{r["processes"]} processes x {r["devices"] // r["processes"]} '
          f'devices vs 1 process x {r["devices"]} devices: '
          f'{r["step_ms"]:.2f} vs {s["step_ms"]:.2f} ms per step '
          f'({r["step_ms"] / s["step_ms"]:.2f}x the time).')
  return lines


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def probe_platform(env: dict) -> dict:
  """{'backend', 'device_count', 'device_kind'} of this host, asked in a
  subprocess so that this process never holds the accelerator."""
  code = ('import json, jax; d = jax.devices(); print(json.dumps('
          '{"backend": jax.default_backend(), "device_count": len(d), '
          '"device_kind": d[0].device_kind}))')
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                       capture_output=True, text=True, timeout=600)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _tail(path: str) -> str:
  with open(path, errors='replace') as f:
    return f.read()[-_TAIL_CHARS:]


def run_processes(commands: Sequence[list[str]], envs: Sequence[dict],
                  logdir: str, timeout: float) -> None:
  """Runs the commands together; if one fails (or time runs out), kills the
  others and raises RunError with the failed one's stderr tail."""
  procs, errs = [], []
  try:
    for i, (cmd, env) in enumerate(zip(commands, envs)):
      err = os.path.join(logdir, f'stderr_{i}.txt')
      errs.append(err)
      with open(os.path.join(logdir, f'stdout_{i}.txt'), 'w') as o, \
          open(err, 'w') as e:
        procs.append(subprocess.Popen(cmd, env=env, stdout=o, stderr=e))
    deadline = time.monotonic() + timeout
    while True:
      codes = [p.poll() for p in procs]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i = failed[0]
        raise RunError(f'{" ".join(commands[i])}\nexited {codes[i]}; its '
                       f'stderr ends:\n{_tail(errs[i])}')
      if all(c == 0 for c in codes):
        return
      if time.monotonic() > deadline:
        raise RunError(f'{" ".join(commands[0])}\nran past --timeout='
                       f'{timeout:g} s; its stderr ends:\n{_tail(errs[0])}')
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def bench_command(config_argv: Sequence[str], batch: int, dtype: str,
                  steps: int, warmup: int, json_path: str,
                  extra: Sequence[str] = ()) -> list[str]:
  return [sys.executable, '-m', 'dare_jax.bench.train_step', *config_argv,
          f'--batches={batch}', f'--dtypes={dtype}', '--input=device',
          f'--steps={steps}', f'--warmup={warmup}', f'--json={json_path}',
          *extra]


def measure_run(config_argv: Sequence[str], devices: int, processes: int,
                per_device_batch: int, dtype: str, steps: int, warmup: int,
                on_cpu: bool, timeout: float, workdir: str) -> dict:
  """One train_step run on `devices` devices over `processes` processes:
  its table row plus devices, processes and the header facts."""
  batch = devices * per_device_batch
  name = f'n{devices}_p{processes}'
  logdir = os.path.join(workdir, name)
  os.makedirs(logdir)
  json_path = os.path.join(logdir, 'result.json')
  commands, envs = [], []
  if processes == 1:
    extra = ['--distributed=off']
    if on_cpu:
      envs.append(with_forced_devices(os.environ, devices))
    else:
      envs.append(dict(os.environ))
      extra.append(f'--num_devices={devices}')
    commands.append(bench_command(config_argv, batch, dtype, steps, warmup,
                                  json_path, extra))
  else:
    address = f'localhost:{free_port()}'
    for i in range(processes):
      envs.append(with_forced_devices(os.environ, devices // processes))
      commands.append(bench_command(
          config_argv, batch, dtype, steps, warmup, json_path,
          ['--distributed=on', f'--coordinator_address={address}',
           f'--num_processes={processes}', f'--process_id={i}']))
  run_processes(commands, envs, logdir, timeout)
  with open(json_path) as f:
    result = json.load(f)
  (row,) = result['rows']
  return dict(row, devices=devices, processes=processes,
              device_kind=result['device_kind'], backend=result['backend'],
              process_count=result['process_count'])


COLUMNS = (('devices', 'devices', '{:d}'), ('processes', 'processes', '{:d}'),
           ('global batch', 'global_batch', '{:d}'),
           ('step ms', 'step_ms', '{:.2f}'),
           ('images/s', 'images_per_s', '{:.1f}'),
           ('efficiency', 'efficiency', '{:.1%}'))


def format_table(rows: Sequence[dict]) -> str:
  return bench.format_columns(COLUMNS, rows)


def cpu_note(max_devices: int) -> str:
  cores = len(os.sched_getaffinity(0))
  return (f'note: CPU run. The forced host devices (up to {max_devices}) '
          f'share this machine\'s {cores} available cores '
          '(os.sched_getaffinity): the efficiency measures the framework\'s '
          'overhead and the sharing of cores, not interconnect scaling.')


def define_flags() -> None:
  """The command line's flags: defined when run as a program only, so
  that tests can import several benchmark modules side by side."""
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                  lock_config=True)
  flags.DEFINE_integer('per_device_batch', 8,
                       'Images per device (the global batch is N times it).')
  flags.DEFINE_list('devices', ['1', '2', '4', '8'], 'Device counts N.')
  flags.DEFINE_integer('processes', 2,
                       'Also run max(devices) devices over this many processes '
                       '(CPU only; 1 = skip).')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                    'Compute dtype (config.model.dtype).')
  flags.DEFINE_integer('steps', 10, 'Timed steps per run.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps per run after compiling.')
  flags.DEFINE_integer('timeout', 1800, 'Seconds allowed to one run.')
  flags.DEFINE_string('json', '', 'Also write the results here.')
  flags.mark_flags_as_required(['config'])


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    counts = parse_devices(FLAGS.devices)
    if FLAGS.per_device_batch < 1:
      raise errors.ConfigError(
          f'--per_device_batch={FLAGS.per_device_batch}: use >= 1.')
    if FLAGS.processes < 1 or counts[-1] % FLAGS.processes:
      raise errors.ConfigError(
          f'--processes={FLAGS.processes}: use >= 1 (1 = no multi-process '
          f'run), dividing max(--devices)={counts[-1]}.')
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  config_argv = config_args(FLAGS['config'])
  platform = probe_platform(dict(os.environ))
  on_cpu = platform['backend'] == 'cpu'
  if not on_cpu and counts[-1] > platform['device_count']:
    raise SystemExit(f'error: --devices={FLAGS.devices}: this host has '
                     f'{platform["device_count"]} {platform["backend"]} '
                     'devices.')
  runs = [(n, 1) for n in counts]
  if FLAGS.processes > 1:
    if on_cpu:
      runs.append((counts[-1], FLAGS.processes))
    else:
      print(f'note: --processes={FLAGS.processes} skipped: several '
            f'processes on one {platform["backend"]} host are not supported '
            'here (CPU only).')
  rows = []
  with tempfile.TemporaryDirectory(prefix='dare_jax_scaling_') as workdir:
    for n, procs in runs:
      print(f'running {n} device(s), {procs} process(es), global batch '
            f'{n * FLAGS.per_device_batch} ...', flush=True)
      try:
        rows.append(measure_run(config_argv, n, procs, FLAGS.per_device_batch,
                                FLAGS.dtype, FLAGS.steps, FLAGS.warmup,
                                on_cpu, FLAGS.timeout, workdir))
      except RunError as e:
        raise SystemExit(f'error: {e}') from None
  rows = efficiency(rows)
  print(f'device: {rows[0]["device_kind"]} ({rows[0]["backend"]}), dtype '
        f'{FLAGS.dtype}, {FLAGS.per_device_batch} images per device')
  print(format_table(rows))
  comparison = multi_process_comparison(rows)
  for line in comparison:
    print(line)
  if on_cpu:
    print(cpu_note(counts[-1]))
  if FLAGS.json:
    reporting.write_json(FLAGS.json, {
        'device_kind': rows[0]['device_kind'], 'backend': platform['backend'],
        'dtype': FLAGS.dtype, 'per_device_batch': FLAGS.per_device_batch,
        'cpu_cores': len(os.sched_getaffinity(0)),
        'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'multi_process_vs_single': comparison, 'rows': rows})
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
