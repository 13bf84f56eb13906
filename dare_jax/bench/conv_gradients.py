r"""Benchmark: one ResNet-50 convolution's forward and gradients, JAX vs PyTorch.

  python -m dare_jax.bench.conv_gradients [--batch=72] [--repeats=3] \
      [--json=PATH]

Why the train step is slower than PyTorch's on a CPU: times, for the 1x1
and the 3x3 convolution of a ResNet-50 stage-2 bottleneck at 256x128 input
(NHWC, float32), the forward, the input gradient (dx) and the kernel
gradient (dw) under jax.jit; the 1x1 convolution also written as the matmul
it is (einsum 'bhwc,cd->bhwd'); and PyTorch's conv2d (channels_last) when
torch imports. Each figure is the mean of --repeats runs after one warm-up.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from dare_jax import bench
from dare_jax import console
from dare_jax import reporting

# (H, W, C_in, C_out, kernel): stage 2 (layer2) of ResNet-50 at 256x128,
# its bottleneck's 1x1 reduction (512 -> 128) and its 3x3 (128 -> 128).
SHAPES = ((32, 16, 512, 128, 1), (32, 16, 128, 128, 3))


def _time(fn, repeats: int) -> float:
  fn()
  t0 = time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.perf_counter() - t0) / repeats


def jax_times(x, w, repeats: int, as_matmul: bool) -> dict:
  if as_matmul:
    op = lambda x, w: jnp.einsum('bhwc,cd->bhwd', x, w[0, 0])
  else:
    op = lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  loss = lambda x, w: jnp.sum(op(x, w)**2)
  fns = {'forward': jax.jit(op), 'dx': jax.jit(jax.grad(loss, 0)),
         'dw': jax.jit(jax.grad(loss, 1))}
  return {k: _time(lambda f=f: jax.block_until_ready(f(x, w)), repeats)
          for k, f in fns.items()}


def torch_times(x, w, repeats: int):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(
      memory_format=torch.channels_last)
  wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
  pad = w.shape[0] // 2
  conv = lambda a, b: torch.nn.functional.conv2d(a, b, padding=pad)

  def grad(wrt):
    a, b = xt.clone().requires_grad_(wrt == 'x'), wt.clone().requires_grad_(
        wrt == 'w')
    (conv(a, b)**2).sum().backward()

  with torch.no_grad():
    forward = _time(lambda: conv(xt, wt), repeats)
  return {'forward': forward, 'dx': _time(lambda: grad('x'), repeats),
          'dw': _time(lambda: grad('w'), repeats)}


def run(batch: int, repeats: int) -> list[dict]:
  rng = np.random.default_rng(0)
  rows = []
  for h, w, c, d, k in SHAPES:
    x = rng.random((batch, h, w, c), np.float32)
    kernel = (rng.random((k, k, c, d), np.float32) - 0.5) * 0.02
    gflop = 2 * batch * h * w * c * d * k * k / 1e9
    impls = [('jax conv', jax_times(jnp.asarray(x), jnp.asarray(kernel),
                                    repeats, False))]
    if k == 1:
      impls.append(('jax matmul', jax_times(jnp.asarray(x),
                                            jnp.asarray(kernel), repeats,
                                            True)))
    t = torch_times(x, kernel, repeats)
    if t is not None:
      impls.append(('torch conv2d', t))
    for name, times in impls:
      rows.append({'shape': f'{batch}x{h}x{w}x{c}->{d}', 'kernel': k,
                   'impl': name, 'gflop': gflop,
                   **{f'{p}_ms': 1e3 * s for p, s in times.items()}})
  return rows


COLUMNS = (('input', 'shape', '{}'), ('k', 'kernel', '{:d}'),
           ('impl', 'impl', '{}'), ('forward ms', 'forward_ms', '{:.1f}'),
           ('dx ms', 'dx_ms', '{:.1f}'), ('dw ms', 'dw_ms', '{:.1f}'))


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined when run as a program, so that importing
  this module next to another with a --batch or --json is harmless)."""
  flags.DEFINE_integer('batch', 72, 'Images per convolution.', lower_bound=1)
  flags.DEFINE_integer('repeats', 3, 'Timed runs per figure (mean taken).',
                       lower_bound=1)
  flags.DEFINE_string('json', '', 'Also write the results here.')


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  rows = run(FLAGS.batch, FLAGS.repeats)
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        'float32, NHWC')
  print(bench.format_columns(COLUMNS, rows))
  if FLAGS.json:
    reporting.write_json(FLAGS.json, {'device': str(jax.devices()[0]),
                                      'rows': rows})


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
