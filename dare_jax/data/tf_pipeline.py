"""The tf.data input pipeline: the only module that imports TensorFlow.

Same functions, signatures and outputs as pipeline.py (both implement
spec.Pipeline; bit-identical batches for in-memory images;
tests/pipeline_test.py checks): the randomness of a
step comes from the same pure numpy function (pipeline.TrainPlanner, via
tf.numpy_function), and images are cropped and flipped with TF ops at the
same integer offsets. tf.data supplies the parallelism and prefetching.

In-memory images are gathered with tf.numpy_function rather than embedded in
the graph, which would hit the 2 GB GraphDef limit for real datasets.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from dare_jax import errors
from dare_jax.data import augment
from dare_jax.data import numpy_pipeline as pipeline
from dare_jax.data import spec as spec_lib
from dare_jax.data.types import Split


def _hide_gpus() -> None:
  # TF would otherwise reserve the accelerator's memory that JAX needs.
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # devices were initialised before this import
    logging.warning('TensorFlow was initialised before dare_jax.data.'
                    'tf_pipeline was imported; it may hold GPU memory.')


_hide_gpus()

# Both pipeline modules offer the same functions (spec.Pipeline).
num_eval_batches = pipeline.num_eval_batches


# ----------------------------------------------------------------------------
# Graph pieces.


def _decode(path: tf.Tensor, resize_hw: Sequence[int]) -> tf.Tensor:
  """uint8 [Hr, Wr, 3] from an image file, like augment.load_image
  (resize_hw: the resize size, or the input size for a single eval view)."""
  hr, wr = resize_hw
  img = tf.io.decode_image(tf.io.read_file(path), channels=3,
                           dtype=tf.uint8, expand_animations=False)

  def resize():
    # antialias=True makes downscaling average like PIL's bilinear filter;
    # for upscaling (Market's 128x64 -> 288x144) it changes nothing.
    x = tf.image.resize(img, (hr, wr), method='bilinear', antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)

  # Images already at that size pass through untouched, as with PIL.
  same = tf.reduce_all(tf.equal(tf.shape(img)[:2], (hr, wr)))
  out = tf.cond(same, lambda: img, resize)
  out.set_shape((hr, wr, 3))
  return out


def _crop_flip(images_BxHrxWrx3: tf.Tensor, crop_yx_Bx2: tf.Tensor,
               flip_B: tf.Tensor, input_hw: Sequence[int]) -> tf.Tensor:
  """uint8 [B, H, W, 3]; augment.crop_flip with per-image slicing.

  A map_fn of slice + tf.reverse is ~3x faster on CPU than folding the
  crops and flips into batched tf.gather indices (which gathers 3-byte
  pixels one by one).
  """
  h, w = input_hw

  def one(args):
    image, crop_yx, flip = args
    y, x = crop_yx[0], crop_yx[1]
    view = image[y:y + h, x:x + w]
    return tf.cond(flip, lambda: tf.reverse(view, axis=[1]), lambda: view)

  return tf.map_fn(one, (images_BxHrxWrx3, crop_yx_Bx2, flip_B),
                   fn_output_signature=tf.TensorSpec((h, w, 3), tf.uint8),
                   parallel_iterations=16)


def _views(images_BxHsxWsx3: tf.Tensor, resize_hw: Sequence[int],
           input_hw: Sequence[int], tta: bool) -> tf.Tensor:
  """uint8 [B, V, H, W, 3]: augment.ten_crop of images at the resize size
  (V=10), or (V=1) images already resized whole to the input size."""
  if not tta:
    return images_BxHsxWsx3[:, None]
  h, w = input_hw
  offsets = augment.five_crop_offsets(resize_hw, input_hw)
  # TenCrop: five-crop the image, then five-crop the flipped image.
  sources = (images_BxHsxWsx3, tf.reverse(images_BxHsxWsx3, axis=[2]))
  return tf.stack([src[:, y:y + h, x:x + w]
                   for src in sources for y, x in offsets], axis=1)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True  # batches in step order, whatever finishes 1st
  return options


# ----------------------------------------------------------------------------
# Error reporting: a graph op cannot say which file broke, so find it here.


def _check_files(paths: Sequence[str], error: tf.errors.OpError) -> None:
  """Raises a DataError naming the first of `paths` that TF cannot decode."""
  for path in dict.fromkeys(paths):
    try:
      tf.io.decode_image(tf.io.read_file(path), channels=3,
                         expand_animations=False)
    except tf.errors.NotFoundError:
      raise errors.DataNotFoundError(
          f'Image file not found: {path}') from error
    except (tf.errors.OpError, ValueError) as e:
      raise errors.DataError(
          f'Cannot decode image {path}: {getattr(e, "message", e)}'
      ) from error


class _NumpyIterator:
  """as_numpy_iterator() with close() and errors that name the bad file."""

  def __init__(self, ds: tf.data.Dataset, finish: Callable[[dict], dict],
               culprits: Optional[Callable[[int], Sequence[str]]]):
    self._it = ds.as_numpy_iterator()
    self._finish = finish
    self._culprits = culprits  # position -> the files that batch reads
    self._position = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      raise StopIteration
    try:
      item = next(self._it)
    except StopIteration:
      self.close()
      raise
    except tf.errors.OpError as e:
      self.close()
      if self._culprits is not None:
        _check_files(self._culprits(self._position), e)
      raise
    self._position += 1
    return self._finish(item)

  def close(self) -> None:
    self._it = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# ----------------------------------------------------------------------------
# The pipelines.


def train_batches(split: Split, spec: spec_lib.TrainInput, start_step: int,
                  rows: Optional[Sequence[int]] = None) -> _NumpyIterator:
  """pipeline.train_batches with tf.data; the same batches (and the same
  rows=(lo, hi) share of each for a process in multi-host training).

  `spec.cache_limit_bytes` is ignored: here paths are always decoded per
  batch.

  `spec.prefetch` batches are buffered (tf.data.AUTOTUNE when <= 0). Paths
  are decoded inside the graph, for every batch (no cache: a real training
  set at the resize size fits in memory, so pass split.images when that
  matters).
  """
  planner = pipeline.TrainPlanner(split.pids, spec)
  rows = pipeline.check_rows(rows, planner.batch_size)
  b = rows[1] - rows[0]
  resize_hw, input_hw, prefetch = spec.resize_hw, spec.input_hw, spec.prefetch
  hr, wr = resize_hw
  pids = np.asarray(split.pids)

  def plan_np(step):
    plan = planner(int(step), rows)
    idx = plan['index']
    return (idx, plan['crop_yx'], plan['flip'], plan['erase'],
            pids[idx].astype(np.int32))

  if split.images is not None:
    images = pipeline.check_images(split, spec)
    load = lambda idx: tf.numpy_function(lambda i: images[i], [idx],
                                         tf.uint8, stateful=False)
    culprits = None
  else:
    paths = [os.fspath(p) for p in split.paths]
    paths_t = tf.constant(paths)
    load = lambda idx: tf.map_fn(
        lambda p: _decode(p, resize_hw), tf.gather(paths_t, idx),
        fn_output_signature=tf.TensorSpec((hr, wr, 3), tf.uint8),
        parallel_iterations=8)
    culprits = lambda pos: [paths[i] for i in planner(start_step + pos,
                                                      rows)['index']]

  def make(step):
    idx, crop_yx, flip, erase, pid = tf.numpy_function(
        plan_np, [step], [tf.int64, tf.int32, tf.bool, tf.float32, tf.int32],
        stateful=False)
    for t, shape in ((idx, (b,)), (crop_yx, (b, 2)), (flip, (b,)),
                     (erase, (b, 4)), (pid, (b,))):
      t.set_shape(shape)
    raw = load(idx)
    raw.set_shape((b, hr, wr, 3))
    return {'image': _crop_flip(raw, crop_yx, flip, input_hw), 'pid': pid,
            'erase': erase, 'step': step}

  ds = (tf.data.Dataset.range(start_step, spec.num_steps)
        .map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(prefetch if prefetch > 0 else tf.data.AUTOTUNE)
        .with_options(_options()))

  def finish(item):
    item['step'] = int(item['step'])
    return item

  return _NumpyIterator(ds, finish, culprits)


def eval_batches(split: Split, spec: spec_lib.EvalInput) -> _NumpyIterator:
  """pipeline.eval_batches with tf.data; the same batches.

  Without TTA the one view is the whole image resized to the input size:
  in-memory images with augment.resize_images (PIL, as pipeline.py, so
  bit-identical), files decoded straight to it by _decode.
  """
  resize_hw, input_hw = spec.resize_hw, spec.input_hw
  batch_size, tta, prefetch = spec.batch_size, spec.tta, spec.prefetch
  # The size the views are cut from (TTA) or are (single view).
  lh, lw = load_hw = resize_hw if tta else input_hw
  n = len(split)
  culprits = None
  if split.images is not None:
    images = pipeline.check_images(split, spec)

    def gather_np(j):
      lo = int(j) * batch_size
      x = images[lo:lo + batch_size]
      return x if tta else augment.resize_images(x, input_hw)

    def load(j):
      x = tf.numpy_function(gather_np, [j], tf.uint8, stateful=False)
      x.set_shape((None, lh, lw, 3))
      return x

    ds = tf.data.Dataset.range(num_eval_batches(n, batch_size)).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    paths = [os.fspath(p) for p in split.paths]
    culprits = lambda pos: paths[pos * batch_size:(pos + 1) * batch_size]
    ds = (tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
          .map(lambda p: _decode(p, load_hw),
               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(batch_size))

  def pad_and_crop(x):
    k = tf.shape(x)[0]
    x = tf.pad(x, [[0, batch_size - k], [0, 0], [0, 0], [0, 0]])
    x.set_shape((batch_size, lh, lw, 3))
    return {'views': _views(x, resize_hw, input_hw, tta),
            'valid': tf.range(batch_size) < k}

  ds = (ds.map(pad_and_crop, num_parallel_calls=tf.data.AUTOTUNE,
               deterministic=True)
        .prefetch(prefetch if prefetch > 0 else tf.data.AUTOTUNE)
        .with_options(_options()))
  return _NumpyIterator(ds, lambda item: item, culprits)
