"""The TensorFlow-free input pipeline: numpy on background threads.

Produces exactly the batches of tf_pipeline (tests/pipeline_test.py checks
bit-equality): both draw a step's randomness from the same pure functions,
TrainPlanner below, and crop with the same integer offsets. Both implement
spec.Pipeline and take their settings as a spec.TrainInput / spec.EvalInput.

  train_batches: {image uint8 [B, H, W, 3], pid int32 [B],
                  erase float32 [B, 4], step int}, B = P * K; with
                  rows=(lo, hi), only rows lo..hi-1 of every such batch
                  (a process's share in multi-host training: B = hi - lo).
  eval_batches:  {views uint8 [batch_size, V, H, W, 3], valid bool
                  [batch_size]}, V = 10 with TTA (TenCrop at the resize
                  size), else 1 (the whole image resized to H x W); the
                  last batch is zero-padded (valid False) so every batch
                  has one shape.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax.data import augment
from dare_jax.data import sampler
from dare_jax.data import spec as spec_lib
from dare_jax.data.types import Split

_POLL_S = 0.1  # how often a blocked producer checks for close()


class TrainPlanner:
  """step -> the step's indices and augmentation: the one source of truth.

  Returns dict(index int64 [B], crop_yx int32 [B, 2], flip bool [B],
  erase float32 [B, 4]); a pure function of (spec.seed, step), the pids and
  the spec (P, K, sampler, sizes, augmentation), which was checked when it
  was built.
  """

  def __init__(self, pids_N, spec: spec_lib.TrainInput):
    self.sampler = sampler.PKSampler(pids_N, spec.P, spec.K, spec.seed,
                                     spec.sampler)
    self.spec = spec

  @property
  def batch_size(self) -> int:
    return self.sampler.batch_size

  def __call__(self, step: int, rows: Optional[Sequence[int]] = None
               ) -> dict[str, np.ndarray]:
    """The step's plan; rows=(lo, hi) keeps rows lo..hi-1 of the GLOBAL
    batch, drawn exactly as for the whole batch."""
    s = self.spec
    plan = augment.train_plan(s.seed, step, self.batch_size, s.resize_hw,
                              s.input_hw, s)
    plan['index'] = self.sampler.indices(step)
    if rows is not None:
      lo, hi = rows
      plan = {k: v[lo:hi] for k, v in plan.items()}
    return plan


def check_rows(rows: Optional[Sequence[int]], batch_size: int
               ) -> tuple[int, int]:
  """(lo, hi) of the global batch this process reads; all when None."""
  if rows is None:
    return 0, batch_size
  lo, hi = (int(r) for r in rows)
  if not 0 <= lo < hi <= batch_size:
    raise ValueError(f'rows=({lo}, {hi}) must satisfy 0 <= lo < hi <= the '
                     f'global batch size {batch_size}.')
  return lo, hi


def check_images(split: Split, size: spec_lib.ImageSize) -> np.ndarray:
  """split.images, after checking they are stored at the resize size."""
  resize_hw, input_hw = size.resize_hw, size.input_hw
  resize_factor = size.resize_factor
  got = tuple(split.images.shape[1:3])
  if got != tuple(resize_hw):
    raise errors.DataError(
        f'The split holds {got[0]}x{got[1]} images, but the pipeline expects '
        f'them at the resize size {resize_hw[0]}x{resize_hw[1]} (input_size '
        f'{input_hw[0]}x{input_hw[1]} x resize_factor {resize_factor}). Store '
        'the images at that size (e.g. regenerate the cached dataset) or set '
        'data.input_size / data.resize_factor to match them.')
  return split.images


def num_eval_batches(n: int, batch_size: int) -> int:
  """ceil(n / batch_size): the number of batches eval_batches yields."""
  return -(-int(n) // int(batch_size))


def default_workers() -> int:
  """Threads preparing batches: numpy copies release the GIL, so a few
  threads scale, but leave most cores to the training process."""
  return max(1, min(4, (os.cpu_count() or 1) // 4))


# ----------------------------------------------------------------------------
# Background prefetching.

_END = object()


class _Failure:

  def __init__(self, exc: BaseException):
    self.exc = exc


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
  while not stop.is_set():
    try:
      q.put(item, timeout=_POLL_S)
      return True
    except queue.Full:
      pass
  return False


def _fill(source: Iterator, q: queue.Queue, stop: threading.Event) -> None:
  # Holds no reference to the Prefetcher, so dropping the consumer's last
  # reference runs Prefetcher.__del__, which stops this thread.
  try:
    for item in source:
      if not _put(q, item, stop):
        return
  except BaseException as e:  # pylint: disable=broad-except
    _put(q, _Failure(e), stop)
    return
  finally:
    if hasattr(source, 'close'):
      source.close()  # runs the source's cleanup (e.g. its worker pool) now
  _put(q, _END, stop)


def ordered_map(fn: Callable[[Any], Any], items: Iterable, workers: int,
                window: int) -> Iterator:
  """fn(item) for each item, in order, computed by `workers` threads.

  At most `window` results are in flight, which bounds the memory.
  """
  if workers <= 1:
    yield from map(fn, items)
    return
  pool = concurrent.futures.ThreadPoolExecutor(workers,
                                               thread_name_prefix='batch')
  pending = collections.deque()
  try:
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= window:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


class Prefetcher:
  """Iterates `source` on a daemon thread, `size` items ahead.

  An exception raised by `source` is re-raised by the consumer's next().
  close() (or garbage collection, or `with`) stops the thread; being a
  daemon, it never holds up interpreter exit either. size <= 0 iterates
  `source` synchronously in the consumer, which eases debugging.
  """

  def __init__(self, source: Iterator, size: int, name: str = 'prefetch'):
    self._done = False
    self._stop = threading.Event()
    self._source: Optional[Iterator] = None
    self._queue: Optional[queue.Queue] = None
    self._thread: Optional[threading.Thread] = None
    if size <= 0:
      self._source = source
      return
    self._queue = queue.Queue(maxsize=size)
    self._thread = threading.Thread(
        target=_fill, args=(source, self._queue, self._stop), name=name,
        daemon=True)
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    if self._queue is None:
      try:
        return next(self._source)
      except BaseException:
        self.close()
        raise
    item = self._queue.get()
    if item is _END:
      self.close()
      raise StopIteration
    if isinstance(item, _Failure):
      self.close()
      raise item.exc
    return item

  def close(self) -> None:
    self._done = True
    self._stop.set()
    self._source = None
    thread, self._thread = self._thread, None
    if thread is not None and thread is not threading.current_thread():
      # The producer notices `stop` within _POLL_S unless it is inside a
      # long item; it is a daemon either way, so do not wait for long.
      thread.join(timeout=1.0)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass


# ----------------------------------------------------------------------------
# The pipelines.


def train_batches(split: Split, spec: spec_lib.TrainInput, start_step: int,
                  rows: Optional[Sequence[int]] = None) -> Prefetcher:
  """Batches for steps start_step .. spec.num_steps - 1 (see the module doc).

  rows=(lo, hi): this process's rows of every global P x K batch; only
  those images are decoded and cropped.

  Everything that can be wrong with the arguments or the split raises here,
  before the first batch. Images come from split.images (which must already
  be at the resize size) or are decoded from split.paths: once, up front,
  when they fit in `spec.cache_limit_bytes` at the resize size (None:
  always), else batch by batch (MARS has about half a million training
  frames). `spec.prefetch` batches are prepared ahead (<= 0: synchronously).
  """
  resize_hw, input_hw = spec.resize_hw, spec.input_hw
  cache_limit_bytes = spec.cache_limit_bytes
  planner = TrainPlanner(split.pids, spec)
  rows = check_rows(rows, planner.batch_size)
  decoded_bytes = len(split) * resize_hw[0] * resize_hw[1] * 3
  lazy = split.images is None and (cache_limit_bytes is not None and
                                   decoded_bytes > cache_limit_bytes)
  if split.images is not None:
    images = check_images(split, spec)
  elif not lazy:
    images = augment.load_images(split.paths, resize_hw, what='train images',
                                 hint=augment.CONFIG_HINT)
  else:
    logging.info('Train images (%.1f GB decoded) exceed the cache limit '
                 '(%.1f GB): decoding them batch by batch.',
                 decoded_bytes / 1e9, cache_limit_bytes / 1e9)
    paths = list(split.paths)
  pids = np.asarray(split.pids)

  def source(idx):
    """(images to crop from, index into them) for the batch's indices."""
    if not lazy:
      return images, idx
    unique, inverse = np.unique(idx, return_inverse=True)
    return augment.load_images([paths[i] for i in unique], resize_hw,
                               num_threads=2, hint=augment.CONFIG_HINT), inverse

  def batch(step):
    plan = planner(step, rows)
    idx = plan['index']
    src, src_idx = source(idx)
    return {'image': augment.crop_flip(src, plan['crop_yx'], plan['flip'],
                                       input_hw, index=src_idx),
            'pid': pids[idx].astype(np.int32),
            'erase': plan['erase'],
            'step': step}

  workers = default_workers()
  steps = range(start_step, spec.num_steps)
  return Prefetcher(ordered_map(batch, steps, workers, workers + 1),
                    spec.prefetch, name='train_batches')


def eval_batches(split: Split, spec: spec_lib.EvalInput) -> Prefetcher:
  """Every image of the split once, in order, as padded batches of views
  (spec.batch_size images each).

  spec.tta: the 10 TenCrop views of the image at the resize size. Else one
  view, the WHOLE image resized to the input size (no crop, as the authors'
  single-view test transform): files are decoded straight to it, in-memory
  images (stored at the resize size) resized from there.

  Paths are decoded batch by batch (a gallery can be several GB at 288x144).
  """
  resize_hw, input_hw = spec.resize_hw, spec.input_hw
  batch_size, tta = spec.batch_size, spec.tta
  if split.images is not None:
    images = check_images(split, spec)
    load: Callable[[int, int], np.ndarray] = lambda lo, hi: images[lo:hi]
  else:
    paths = list(split.paths)
    load_hw = resize_hw if tta else input_hw
    load = lambda lo, hi: augment.load_images(paths[lo:hi], load_hw,
                                        hint=augment.CONFIG_HINT)
  v = 10 if tta else 1
  n = len(split)

  def batch(lo):
    hi = min(n, lo + batch_size)
    views = np.empty((batch_size, v) + input_hw + (3,), np.uint8)
    if tta:
      augment.ten_crop(load(lo, hi), input_hw, out=views[:hi - lo])
    else:
      augment.resize_images(load(lo, hi), input_hw, out=views[:hi - lo, 0])
    # Zero padding, so every batch has one shape (one compilation).
    views[hi - lo:] = 0
    return {'views': views, 'valid': np.arange(batch_size) < hi - lo}

  workers = default_workers()
  starts = range(0, n, batch_size)
  return Prefetcher(ordered_map(batch, starts, workers, workers + 1),
                    spec.prefetch, name='eval_batches')
