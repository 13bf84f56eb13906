"""Benchmark: what JAX's persistent compilation cache saves a repeated tool run.

  python -m dare_jax.bench.compile_cache [--num_q=1000] [--num_g=5000]
      [--runs=2] [--keep=DIR]

Writes a clustered features file (dare_jax.bench.evaluation.make_dataset,
128-d) and runs `python -m dare_jax.tools.evaluate_features FILE --rerank`
as a user would, in fresh processes one after the other: --runs times with
--compilation_cache=off, then --runs times with one new, empty cache folder
(the first of these fills it, the rest read it). Prints each wall time, the
time `import dare_jax.tools.evaluate_features` alone takes, the cache's size
and entries, and checks that every run printed the same metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from dare_jax import console
from dare_jax.bench import evaluation as eval_bench

FLAGS = flags.FLAGS


def _timed(cmd, env):
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if proc.returncode:
    sys.exit(f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stderr}')
  return seconds, proc.stdout


def _folder_size(path):
  files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
  return len(files), sum(os.path.getsize(f) for f in files)


def define_flags() -> None:
  """The command's flags (defined when run as a program, so that importing
  this module next to another benchmark is harmless)."""
  flags.DEFINE_integer('num_q', 1000, 'Queries in the features file.',
                       lower_bound=1)
  flags.DEFINE_integer('num_g', 5000, 'Gallery entries in the features file.',
                       lower_bound=1)
  flags.DEFINE_integer('runs', 2, 'Runs with the cache off, then on.',
                       lower_bound=1)
  flags.DEFINE_string('keep', None, 'Folder for the features file and cache '
                      '(default: a temporary one, removed).')


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  with tempfile.TemporaryDirectory() as tmp:
    root = FLAGS.keep or tmp
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, 'features.npz')
    q, g, qp, qc, gp, gc = eval_bench.make_dataset(
        FLAGS.num_q, FLAGS.num_g, 128, max(FLAGS.num_q // 2, 1))
    np.savez(path, query_fused=q, gallery_fused=g, query_pids=qp,
             query_camids=qc, gallery_pids=gp, gallery_camids=gc)
    env = dict(os.environ)
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
    tool = [sys.executable, '-m', 'dare_jax.tools.evaluate_features', path,
            '--rerank']
    seconds, _ = _timed([sys.executable, '-c',
                         'import dare_jax.tools.evaluate_features'], env)
    print(f'import dare_jax.tools.evaluate_features: {seconds:.2f} s')
    outputs = set()
    for i in range(FLAGS.runs):
      seconds, out = _timed(tool + ['--compilation_cache=off'], env)
      outputs.add(out)
      print(f'cache off, run {i + 1}: {seconds:.2f} s')
    cache = os.path.join(root, 'jax_cache')
    for i in range(FLAGS.runs):
      seconds, out = _timed(tool + [f'--compilation_cache={cache}'], env)
      outputs.add(out)
      state = 'empty' if i == 0 else 'filled'
      print(f'cache on ({state} at start), run {i + 1}: {seconds:.2f} s')
    entries, size = _folder_size(cache)
    print(f'cache: {entries} files, {size / 1e3:.0f} kB')
    if len(outputs) != 1:
      sys.exit('the runs printed different metrics')
    print('metrics (all runs equal):',
          json.dumps(json.loads(outputs.pop())['fused']))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
