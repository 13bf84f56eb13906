"""Progress you can see: a log line with ETA, TensorBoard, and a JSONL log.

Only process 0 writes. TensorBoard events are written with tensorboardX, so
nothing outside dare_jax/data imports TensorFlow.
"""

from __future__ import annotations

import json
import math
import time

from absl import logging

from dare_jax import fileio


def strict(obj):
  """obj with every NaN or infinite float as None (JSON's null): the files
  we write are strict JSON, which `NaN` is not. numpy scalars become the
  Python numbers they hold; tuples become lists."""
  if isinstance(obj, dict):
    return {k: strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict(v) for v in obj]
  if hasattr(obj, 'item') and getattr(obj, 'ndim', 1) == 0:
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def dumps(obj, **kwargs) -> str:
  """Strict JSON text of obj (see strict)."""
  return json.dumps(strict(obj), allow_nan=False,
                    default=lambda x: x.item() if hasattr(x, 'item') else
                    str(x), **kwargs)


def write_json(path: str, obj) -> None:
  """Atomic (a crash never leaves half a file behind), strict JSON (NaN and
  infinities as null); numpy scalars are written as the Python numbers they
  hold."""
  fileio.write_text(path, dumps(obj, indent=2, sort_keys=True))


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def _tensorboard_writer(tb_dir: str):
  """A tensorboardX SummaryWriter in tb_dir, or None (and why, logged):
  train_log.jsonl has every logged step either way."""
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning('tensorboardX is not installed: no TensorBoard logs.')
    return None
  if tb_dir.startswith('gs://') and not getattr(record_writer, 'GCS_ENABLED',
                                                 True):
    logging.warning('No TensorBoard logs in %s: tensorboardX writes gs:// '
                    'with google-cloud-storage (pip install '
                    'google-cloud-storage); train_log.jsonl has every logged '
                    'step.', tb_dir)
    return None
  try:
    return tensorboardX.SummaryWriter(tb_dir)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('No TensorBoard logs in %s (%s: %s); train_log.jsonl has '
                    'every logged step.', tb_dir, type(e).__name__, e)
    return None


class Reporter:
  """Call log(step, metrics) with host floats; close() at the end."""

  def __init__(self, workdir: str, start_step: int, num_steps: int,
               batch_size: int):
    self._start, self._num_steps, self._batch = start_step, num_steps, batch_size
    # Imported here (it imports JAX): write_json stays JAX-free for the
    # PyTorch peer (bench/torch_peer).
    from dare_jax import distributed  # pylint: disable=g-import-not-at-top
    self._main = distributed.is_main_process()
    self._t_first = None  # after the first logged step: excludes compilation
    self._step_first = start_step
    self._tb = self._jsonl = None
    if self._main:
      self._tb = _tensorboard_writer(fileio.join(workdir, 'tb'))
      self._jsonl = fileio.AppendLog(fileio.join(workdir, 'train_log.jsonl'))

  def log(self, step: int, metrics: dict) -> None:
    if not self._main:
      return
    now = time.time()
    if self._t_first is None:
      self._t_first, self._step_first = now, step
      rate, eta = None, ''  # no rate yet: the first step compiles
    else:
      steps_per_s = (step - self._step_first) / max(now - self._t_first, 1e-9)
      rate = steps_per_s * self._batch
      eta = ' ETA ' + _duration((self._num_steps - step) / max(steps_per_s,
                                                               1e-9))
    metrics = {k: float(v) for k, v in metrics.items()}
    exits = ' '.join(f'{k[len("loss_"):]} {v:.3f}' for k, v in metrics.items()
                     if k.startswith('loss_'))
    speed = '' if rate is None else f' {rate:.0f} img/s'
    logging.info('step %d/%d (%.1f%%) loss %.4f [%s] lr %.2e%s%s',
                 step, self._num_steps, 100.0 * step / self._num_steps,
                 metrics['loss'], exits, metrics['lr'], speed, eta)
    record = dict(metrics, step=step, images_per_s=rate, time=now)
    self._jsonl.write_line(dumps(record))
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f'train/{k}', v, step)
      if rate is not None:
        self._tb.add_scalar('train/images_per_s', rate, step)
      self._tb.flush()

  def flush(self) -> None:
    """Writes out what a remote train_log.jsonl holds in memory."""
    if self._jsonl is not None:
      self._jsonl.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
