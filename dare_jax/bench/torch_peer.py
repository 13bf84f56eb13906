r"""Benchmark: the PyTorch peer of our train step, to run beside it on one GPU.

  python -m dare_jax.bench.torch_peer [--batches=72,144,288] \
      [--dtype=bfloat16|float32] [--input_size=256,128] [--steps=20] \
      [--warmup=5] [--no_compile] [--no_channels_last] [--device=cuda|cpu] \
      [--depth=50] [--json=PATH]

The same training step as dare_jax/train.py, written the way a PyTorch user
would write it fast: a torchvision-layout ResNet (torchvision's resnet50
when torchvision imports, else the equivalent ResNet of
dare_jax/references/torch_dare.py: v1.5, the stride in the 3x3 conv) with
DaRe's 4 exit heads (GAP -> Linear(C_s, 1024) ->
BatchNorm1d -> ReLU -> Linear(1024, 128)) and the fusion sum_s w_s phi_s
(4 scalars, init uniform[-0.5, 0.5]); the batch-hard soft-margin triplet
loss of dare_jax/losses.py on each of the 5 embeddings, summed; Adam(3e-4,
(0.9, 0.999), 1e-8) with coupled L2 weight decay 1e-4 (torch Adam's
weight_decay, as optim.py adds it to the gradients). The step runs under
AMP autocast (--dtype=bfloat16), in channels_last, with torch.compile of
normalisation + forward + loss (AOTAutograd compiles the backward; Adam is
torch's fused CUDA kernel; cudnn.benchmark on), on a synthetic P x K batch
(K = 4) of uint8 images that lives on the device and is normalised there
(/255, ImageNet mean/std), as ours is. Each batch size gets a fresh model,
optimiser and compilation (static shapes).

The lr schedule is left out: before optim.t0 it is the constant 3e-4, and
a step's cost does not depend on it.

Reported per batch size: compile + warm-up seconds, step ms (the mean over
--steps steps, torch.cuda.synchronize() around the window on CUDA), images/s
and the model TFLOP/s with our formula: FLOPs/image = 3 x forward Mul-Adds
x 2, forward Mul-Adds counted by dare_jax.budget.costs's definition (see
forward_macs: conv and linear layers, plus the fusion's 4 x 128).

Imports neither TensorFlow nor ml_collections, nor JAX (the model comes from
dare_jax/references/torch_dare.py, which imports torch only; the command
line is absl's, through dare_jax/console.py, which imports no JAX): it runs
on a machine that has only PyTorch and absl-py. Only --json imports JAX, and
only once the timing is over: the file is written by dare_jax.reporting,
which imports it.
"""

from __future__ import annotations

import datetime
import importlib.util
import sys
import time
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union

from absl import app
from absl import flags

# Neither imports JAX (console imports it only inside compilation_cache()).
from dare_jax import console
from dare_jax import errors

K = 4  # images per identity, as config.train.K
EPS = 1e-8  # D(a, b) = sqrt(||a - b||^2 + eps), as config.loss.eps
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def import_torch():
  """torch, or a clear error: this benchmark needs PyTorch, nothing else."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(
        'error: dare_jax.bench.torch_peer needs PyTorch, which is not installed '
        'here: pip install torch (torchvision optional).') from e
  return torch


# ----------------------------------------------------------------------------
# The model: dare_jax/references/torch_dare.py, imported inside the functions
# so that importing this module does not import torch.


def build_model(depth: int = 50, width: int = 64, head_hidden: int = 1024,
                embedding_dim: int = 128, use_torchvision: bool = True,
                stage_sizes: Optional[Sequence[int]] = None,
                backbone: str = 'resnet', width_multiplier: float = 1.0):
  """DaRe on a torchvision-layout ResNet (references.torch_dare.build_model)
  or on MobileNetV2 (references.torch_mobilenet, grouped Conv2d for the
  depthwise convolutions, as torchvision): x [B, 3, H, W] -> (stage1..4,
  fused), [B, embedding_dim] each."""
  import_torch()
  if backbone == 'mobilenet_v2':
    from dare_jax.references import torch_mobilenet  # pylint: disable=g-import-not-at-top
    return torch_mobilenet.MobileNetV2DaRe(width_multiplier, head_hidden,
                                           embedding_dim)
  from dare_jax.references import torch_dare  # pylint: disable=g-import-not-at-top
  return torch_dare.build_model(depth, width=width, head_hidden=head_hidden,
                                embedding_dim=embedding_dim,
                                use_torchvision=use_torchvision,
                                stage_sizes=stage_sizes)


def forward_macs(model, input_hw: Sequence[int], embedding_dim: int) -> int:
  """Mul-Adds of one image's forward, by dare_jax.budget.costs's definition.

  Forward hooks count every nn.Conv2d (output elements x kernel area x input
  channels per group) and nn.Linear (output elements x in_features) that
  runs; biases, BatchNorm, ReLU, pooling and additions are not counted, as
  costs.py counts only conv_general_dilated and dot_general. The fusion is
  elementwise, invisible to hooks (and to costs.py's trace), so its
  4 x embedding_dim Mul-Adds (one per exit and dimension) are added as
  costs.exit_costs adds them to
  'fused'. The result equals costs.exit_costs(...)['fused'] of the same
  architecture (tests/bench_input_torch_test.py checks).
  """
  torch = import_torch()
  nn = torch.nn
  total = [0]

  def conv_hook(m, inputs, out):
    kh, kw = m.kernel_size
    total[0] += out.numel() * kh * kw * (m.in_channels // m.groups)

  def linear_hook(m, inputs, out):
    total[0] += out.numel() * m.in_features

  handles = []
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      handles.append(m.register_forward_hook(conv_hook))
    elif isinstance(m, nn.Linear):
      handles.append(m.register_forward_hook(linear_hook))
  was_training = model.training
  model.eval()  # BatchNorm1d cannot take one image in training mode
  try:
    p = next(model.parameters())
    with torch.no_grad():
      model(torch.zeros((1, 3) + tuple(input_hw), device=p.device))
  finally:
    for h in handles:
      h.remove()
    model.train(was_training)
  return total[0] + model.fusion.numel() * int(embedding_dim)


# ----------------------------------------------------------------------------
# The loss: dare_jax/losses.py, line for line.


def batch_hard_soft_margin(emb_BxD, pids_B, eps: float = EPS):
  """Mean over anchors of softplus(hardest positive - hardest negative),
  D from explicit differences in float32 (losses.batch_hard_soft_margin)."""
  torch = import_torch()
  emb = emb_BxD.float()
  diff = emb[:, None, :] - emb[None, :, :]
  dist = torch.sqrt((diff * diff).sum(-1) + eps)
  same = pids_B[:, None] == pids_B[None, :]
  not_self = ~torch.eye(len(pids_B), dtype=torch.bool, device=emb.device)
  inf = torch.tensor(float('inf'), device=emb.device)
  hardest_pos = torch.where(same & not_self, dist, -inf).amax(dim=1)
  hardest_neg = torch.where(same, inf, dist).amin(dim=1)
  return torch.nn.functional.softplus(hardest_pos - hardest_neg).mean()


def deep_supervision_loss(embeddings: Union[Mapping[str, Any], Sequence[Any]],
                          pids_B, eps: float = EPS):
  """The sum over all embeddings (losses.deep_supervision_loss's total):
  a mapping name -> [B, D] or the model's tuple (stage1..4, fused)."""
  if isinstance(embeddings, Mapping):
    embeddings = embeddings.values()
  return sum(batch_hard_soft_margin(e, pids_B, eps) for e in embeddings)


# ----------------------------------------------------------------------------
# The step and its timing.


def normalise(images_BxHxWx3, channels_last: bool):
  """uint8 NHWC on the device -> float32 NCHW, /255, ImageNet mean/std."""
  torch = import_torch()
  dev = images_BxHxWx3.device
  mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1) * 255.0
  std = torch.tensor(STD, device=dev).view(1, 3, 1, 1) * 255.0
  x = (images_BxHxWx3.permute(0, 3, 1, 2).float() - mean) / std
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  return x.contiguous(memory_format=fmt)


def make_step(model, optimizer, *, amp_dtype, device_type: str,
              channels_last: bool, compile_: bool):
  """step(images uint8 [B, H, W, 3], pids int64 [B]) -> loss (a tensor)."""
  torch = import_torch()

  def loss_fn(images, pids):
    x = normalise(images, channels_last)
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
      embs = model(x)
    return deep_supervision_loss(embs, pids)

  if compile_:
    loss_fn = torch.compile(loss_fn, dynamic=False)

  def step(images, pids):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(images, pids)
    loss.backward()
    optimizer.step()
    return loss

  return step


def synthetic_batch(batch: int, input_hw: Sequence[int], device, seed: int = 0):
  """(uint8 [B, H, W, 3], int64 [B] = P ids x K) on the device."""
  torch = import_torch()
  if batch % K or batch < 2 * K:
    raise ValueError(f'--batches: {batch} must be a multiple of K={K} with '
                     f'at least 2 identities (>= {2 * K}), e.g. 72 = 18 x 4.')
  g = torch.Generator().manual_seed(seed)
  images = torch.randint(0, 256, (batch,) + tuple(input_hw) + (3,),
                         dtype=torch.uint8, generator=g)
  pids = torch.arange(batch // K).repeat_interleave(K)
  return images.to(device), pids.to(device)


def _sync(torch, device):
  if device.type == 'cuda':
    torch.cuda.synchronize(device)


def bench_batch(batch: int, *, depth: int, input_hw: Sequence[int],
                dtype: str, steps: int, warmup: int, compile_: bool,
                channels_last: bool, device: str, seed: int = 0,
                width: int = 64, backbone: str = 'resnet') -> dict:
  """One batch size: a fresh model, optimiser and compilation (width:
  the stem's channels, 64 = torchvision's; smaller only for tests)."""
  torch = import_torch()
  dev = torch.device(device)
  if dev.type == 'cuda':
    # What a PyTorch user sets for speed; TF32 for float32 matmuls matches
    # XLA's default precision on GPUs (convolutions use TF32 by default).
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision('high')
  if compile_:
    torch._dynamo.reset()  # pylint: disable=protected-access
  torch.manual_seed(seed)
  model = build_model(depth, width=width, backbone=backbone).to(dev)
  macs = forward_macs(model, input_hw, 128)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  model.train()
  optimizer = torch.optim.Adam(model.parameters(), lr=3e-4,
                               betas=(0.9, 0.999), eps=1e-8,
                               weight_decay=1e-4,
                               fused=dev.type == 'cuda' or None)
  amp = {'bfloat16': torch.bfloat16, 'float32': None}[dtype]
  step = make_step(model, optimizer, amp_dtype=amp, device_type=dev.type,
                   channels_last=channels_last, compile_=compile_)
  images, pids = synthetic_batch(batch, input_hw, dev, seed)
  _sync(torch, dev)
  t0 = time.perf_counter()
  for _ in range(max(1, warmup)):  # the first step compiles
    loss = step(images, pids)
  _sync(torch, dev)
  t1 = time.perf_counter()
  for _ in range(steps):
    loss = step(images, pids)
  _sync(torch, dev)
  t2 = time.perf_counter()
  step_s = (t2 - t1) / steps
  flops_per_image = 3 * macs * 2
  return {'framework': 'pytorch', 'dtype': dtype, 'global_batch': batch,
          'step_ms': 1e3 * step_s, 'images_per_s': batch / step_s,
          'model_tflops_per_s': flops_per_image * batch / step_s / 1e12,
          'compile_warmup_s': t1 - t0, 'forward_macs_per_image': macs,
          'model_flops_per_image': flops_per_image,
          'loss': float(loss.detach().float().cpu()),
          'torchvision': bool(getattr(model, 'torchvision', False))}


def bench_eval(batch: int, *, depth: int, input_hw: Sequence[int],
               repeats: int, device: str, backbone: str = 'resnet',
               seed: int = 0) -> dict:
  """The eval forward (all exits and the fusion) at one batch size, float32
  NCHW, torch.inference_mode, eager: the median and min of `repeats` timed
  runs after 3 warm-up runs."""
  torch = import_torch()
  dev = torch.device(device)
  torch.manual_seed(seed)
  model = build_model(depth, backbone=backbone).to(dev).eval()
  x = torch.randn((batch, 3) + tuple(input_hw), generator=torch.Generator(
      ).manual_seed(seed)).to(dev)
  times = []
  with torch.inference_mode():
    for i in range(3 + repeats):
      _sync(torch, dev)
      t0 = time.perf_counter()
      model(x)
      _sync(torch, dev)
      if i >= 3:
        times.append(time.perf_counter() - t0)
  times.sort()
  return {'framework': 'pytorch', 'mode': 'eval', 'batch': batch,
          'forward_ms': 1e3 * times[len(times) // 2],
          'forward_ms_min': 1e3 * times[0], 'repeats': repeats}


def parse_ints(text: str, flag: str) -> list[int]:
  try:
    return [int(v) for v in text.split(',') if v.strip()]
  except ValueError as e:
    raise errors.ConfigError(
        f'--{flag}={text!r}: expected comma-separated integers, e.g. '
        '72,144,288.') from e


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined when run as a program, so that importing
  this module next to another with a --batches or --json is harmless)."""
  flags.DEFINE_string('batches', '72,144,288', 'Global batch sizes, '
                      f'comma-separated: multiples of K={K}, at least {2 * K}.')
  flags.DEFINE_enum('dtype', 'bfloat16', ('bfloat16', 'float32'),
                    'The train step\'s autocast dtype.')
  flags.DEFINE_string('input_size', '256,128', 'H,W of the images.')
  flags.DEFINE_integer('steps', 20, 'Timed steps per batch size (and timed '
                       'runs per --eval_batches size).')
  flags.DEFINE_integer('warmup', 5, 'Untimed steps first (after compiling).')
  flags.DEFINE_bool('no_compile', False, 'Eager: no torch.compile.')
  flags.DEFINE_bool('no_channels_last', False, 'NCHW, not channels_last.')
  flags.DEFINE_enum('device', 'cuda', ('cuda', 'cpu'), 'Where to run.')
  flags.DEFINE_integer('depth', 50, 'ResNet depth, one of '
                       'references/torch_dare.DEPTHS (checked once torch '
                       'is imported).')
  flags.DEFINE_enum('backbone', 'resnet', ('resnet', 'mobilenet_v2'),
                    'The backbone.')
  flags.DEFINE_string('eval_batches', '', 'Also time the eval forward at '
                      'these batch sizes (comma-separated; --steps timed runs '
                      'each).')
  flags.DEFINE_integer('threads', 0, 'torch.set_num_threads (0: torch\'s '
                       'default).', lower_bound=0)
  flags.DEFINE_string('json', '', 'Also write the results here.')


def run(batches: str = '72,144,288', dtype: str = 'bfloat16',
        input_size: str = '256,128', steps: int = 20, warmup: int = 5,
        no_compile: bool = False, no_channels_last: bool = False,
        device: str = 'cuda', depth: int = 50, backbone: str = 'resnet',
        eval_batches: str = '', threads: int = 0) -> dict:
  """The benchmark with the command line's options: prints the table and
  returns the results; ConfigError on a bad option."""
  torch = import_torch()
  from dare_jax.references import torch_dare  # pylint: disable=g-import-not-at-top
  if depth not in torch_dare.DEPTHS:
    raise errors.ConfigError(
        f'--depth={depth}: one of '
        f'{", ".join(str(d) for d in sorted(torch_dare.DEPTHS))}.')
  if device == 'cuda' and not torch.cuda.is_available():
    raise errors.ConfigError(
        '--device=cuda but torch sees no CUDA device (torch '
        f'{torch.__version__}); run on the GPU machine or pass --device=cpu.')
  if steps < 1:
    raise errors.ConfigError(f'--steps={steps} must be >= 1.')
  input_hw = parse_ints(input_size, 'input_size')
  if len(input_hw) != 2:
    raise errors.ConfigError(f'--input_size={input_size!r}: expected H,W, '
                             'e.g. 256,128.')
  batch_sizes = parse_ints(batches, 'batches')
  for b in batch_sizes:
    if b % K or b < 2 * K:
      raise errors.ConfigError(
          f'--batches: {b} must be a multiple of K={K} with at least 2 '
          f'identities (>= {2 * K}), e.g. 72 = 18 x 4.')
  eval_sizes = parse_ints(eval_batches, 'eval_batches')
  if threads:
    torch.set_num_threads(threads)
  device_name = (torch.cuda.get_device_name(0) if device == 'cuda'
                 else 'cpu')
  header = {'device': device_name, 'torch_version': torch.__version__,
            'compile': not no_compile,
            'channels_last': not no_channels_last, 'depth': depth,
            'backbone': backbone,
            'input_size': input_hw, 'steps': steps,
            'warmup': warmup,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec='seconds')}
  rows = []
  for b in batch_sizes:
    rows.append(bench_batch(
        b, depth=depth, input_hw=input_hw, dtype=dtype,
        steps=steps, warmup=warmup, compile_=not no_compile,
        channels_last=not no_channels_last, device=device,
        backbone=backbone))
  eval_rows = [bench_eval(b, depth=depth, input_hw=input_hw,
                          repeats=steps, device=device,
                          backbone=backbone)
               for b in eval_sizes]
  impl = 'torchvision' if rows and rows[0]['torchvision'] else 'built-in'
  net = ('MobileNetV2' if backbone == 'mobilenet_v2' else
         f'ResNet-{depth}')
  print(f'device: {device_name}, torch {torch.__version__}, compile '
        f'{header["compile"]}, channels_last {header["channels_last"]}, '
        f'{net} ({impl}) at {input_hw[0]}x{input_hw[1]}, '
        f'{header["date"]}')
  if rows:
    print(f'forward Mul-Adds/image {rows[0]["forward_macs_per_image"]:,d}, '
          f'model FLOPs/image {rows[0]["model_flops_per_image"] / 1e9:.2f} G '
          '(3 x forward x 2)')
  print(f'{"framework":10s} {"dtype":9s} {"batch":>6s} {"compile+warm s":>15s}'
        f' {"step ms":>9s} {"images/s":>10s} {"TFLOP/s":>8s} {"loss":>8s}')
  for r in rows:
    print(f'{r["framework"]:10s} {r["dtype"]:9s} {r["global_batch"]:6d} '
          f'{r["compile_warmup_s"]:15.1f} {r["step_ms"]:9.1f} '
          f'{r["images_per_s"]:10.1f} {r["model_tflops_per_s"]:8.3f} '
          f'{r["loss"]:8.3f}')
  for r in eval_rows:
    print(f'pytorch    eval forward float32 batch {r["batch"]:4d}: '
          f'{r["forward_ms"]:.2f} ms (median of {r["repeats"]}, min '
          f'{r["forward_ms_min"]:.2f})')
  sys.stdout.flush()
  return dict(header, rows=rows, eval_rows=eval_rows)


def main(argv):
  # Not console.start(): it turns on JAX's compilation cache, which imports
  # JAX, and this process must stay JAX-free while it times PyTorch (and
  # run where JAX is not installed). quiet_logs() is the rest of start().
  console.quiet_logs()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    if FLAGS.json and importlib.util.find_spec('jax') is None:
      # Said before the benchmark runs, not after it (find_spec imports
      # nothing).
      raise errors.ConfigError(
          f'--json={FLAGS.json}: the file is written by dare_jax.reporting, '
          'which needs JAX, not installed here; leave --json out and keep '
          'the printed table.')
    result = run(
        batches=FLAGS.batches, dtype=FLAGS.dtype, input_size=FLAGS.input_size,
        steps=FLAGS.steps, warmup=FLAGS.warmup, no_compile=FLAGS.no_compile,
        no_channels_last=FLAGS.no_channels_last, device=FLAGS.device,
        depth=FLAGS.depth, backbone=FLAGS.backbone,
        eval_batches=FLAGS.eval_batches, threads=FLAGS.threads)
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  if FLAGS.json:
    # Only now, with PyTorch's timing done: reporting imports JAX (through
    # dare_jax.distributed).
    from dare_jax import reporting  # pylint: disable=g-import-not-at-top
    reporting.write_json(FLAGS.json, result)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
