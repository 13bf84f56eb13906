"""Host-side augmentation in numpy: plans, crops, flips, TTA views, decoding.

Training augmentation is split in two. `train_plan` draws every random number
of a step on the host as a pure function of (seed, step) — crop offsets,
flips and random-erasing boxes — so the numpy and tf.data pipelines produce
bit-identical batches and a resumed run repeats them. The erasing noise itself
is drawn on the device (device_ops.random_erase), after normalisation, as in
Zhong et al. whose erasing runs on the normalised tensor.

Both pipelines use these functions; nothing here imports TensorFlow or JAX.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from typing import Sequence, TYPE_CHECKING

from absl import logging
import numpy as np
from PIL import Image

from dare_jax import errors
from dare_jax.data import sampler

if TYPE_CHECKING:  # spec imports this module
  from dare_jax.data import spec as spec_lib

# Separates the plan's random stream from the sampler's (same seed, step).
_STREAM = 0x415547  # 'AUG'
_ERASING_ATTEMPTS = 100  # as in Zhong et al.'s RandomErasing


def resize_size(input_hw: Sequence[int], factor: float) -> tuple[int, int]:
  """(round(H * factor), round(W * factor)): 256x128 x 1.125 -> 288x144.

  Called by spec.ImageSize only; everything else reads its resize_hw.
  """
  h, w = input_hw
  return int(round(h * factor)), int(round(w * factor))


def _check_crop(resize_hw, input_hw) -> None:
  if input_hw[0] > resize_hw[0] or input_hw[1] > resize_hw[1]:
    raise errors.ConfigError(
        f'The crop data.input_size={tuple(input_hw)} is larger than the '
        f'resized image {tuple(resize_hw)}; use data.resize_factor >= 1.')


def train_plan(seed: int, step: int, batch_size: int,
               resize_hw: Sequence[int], input_hw: Sequence[int],
               aug: spec_lib.Augmentation) -> dict[str, np.ndarray]:
  """The random choices of one training step, a pure function of its args.

  `aug` (flips, random erasing) may be a spec.TrainInput, which extends
  spec.Augmentation.

  Returns:
    crop_yx: int32 [B, 2], top-left corner of the crop, uniform over every
      valid position: y in [0, Hr - H], x in [0, Wr - W].
    flip: bool [B], horizontal flip (probability 0.5 when hflip).
    erase: float32 [B, 4], (y0, x0, h, w) of the random-erasing box in the
      coordinates of the cropped H x W image; (0, 0, 0, 0) = no erasing.
  """
  _check_crop(resize_hw, input_hw)
  (hr, wr), (h, w) = resize_hw, input_hw
  rng = sampler.step_rng(seed, step, _STREAM)
  # Fixed draw order (crops, flips, erasing) so each quantity's stream does
  # not depend on whether the others are enabled.
  crop_yx = np.stack([rng.integers(0, hr - h + 1, size=batch_size),
                      rng.integers(0, wr - w + 1, size=batch_size)],
                     axis=1).astype(np.int32)
  flip = rng.random(batch_size) < 0.5
  if not aug.hflip:
    flip[:] = False
  erase = np.zeros((batch_size, 4), np.float32)
  if aug.random_erasing:
    lo, hi = aug.erasing_area
    for b in range(batch_size):
      erase[b] = _erasing_box(rng, h, w, aug.erasing_p, lo, hi,
                              aug.erasing_aspect)
  return {'crop_yx': crop_yx, 'flip': flip, 'erase': erase}


def _erasing_box(rng, h, w, p, area_lo, area_hi, aspect) -> tuple:
  """One image's box, following Zhong et al.'s RandomErasing.__call__."""
  if rng.random() >= p:
    return (0, 0, 0, 0)
  for _ in range(_ERASING_ATTEMPTS):
    target = rng.uniform(area_lo, area_hi) * h * w
    ratio = rng.uniform(aspect, 1 / aspect)
    eh = int(round(math.sqrt(target * ratio)))
    ew = int(round(math.sqrt(target / ratio)))
    if eh < h and ew < w:
      # The original's random.randint is inclusive at both ends.
      y0 = int(rng.integers(0, h - eh + 1))
      x0 = int(rng.integers(0, w - ew + 1))
      # A box rounded to zero size erases nothing; keep the "no erasing"
      # encoding canonical.
      return (y0, x0, eh, ew) if eh and ew else (0, 0, 0, 0)
  return (0, 0, 0, 0)


def _mirror_bytes(w: int, c: int) -> np.ndarray:
  """int64 [w * c]: byte positions of a mirrored row of w pixels.

  uint8 RGB cannot be flipped fast with [:, ::-1] (numpy copies 3-byte runs
  with a negative stride, ~2x slower than a gather); taking these byte
  positions from the row flattened to [W * c] does the same in one np.take.
  """
  return ((w - 1 - np.arange(w))[:, None] * c + np.arange(c)).reshape(-1)


def crop_flip(images_NxHrxWrx3: np.ndarray, crop_yx: np.ndarray,
              flip: np.ndarray, input_hw: Sequence[int],
              index: np.ndarray | None = None) -> np.ndarray:
  """uint8 [B, H, W, 3]: images cropped at crop_yx[b], mirrored if flip[b].

  Args:
    images_NxHrxWrx3: the source images.
    crop_yx: int [B, 2] top-left corners; flip: bool [B].
    input_hw: (H, W) of the crop.
    index: int [B], which source image each output row crops; default
      arange(B) (N == B). Cropping straight from the whole split saves the
      pipeline a gather of the full-size images.
  """
  h, w = input_hw
  _, hr, wr, c = images_NxHrxWrx3.shape
  _check_crop((hr, wr), input_hw)
  if index is None:
    index = np.arange(len(crop_yx))
  out = np.empty((len(index), h, w, c), images_NxHrxWrx3.dtype)
  mirror = _mirror_bytes(w, c)
  for b, (i, (y, x), f) in enumerate(zip(index, crop_yx, flip)):
    if f:
      rows = images_NxHrxWrx3[i, y:y + h].reshape(h, wr * c)
      # mode='clip' skips np.take's buffered bounds check; the positions
      # are in range by construction.
      np.take(rows, mirror + x * c, axis=1, out=out[b].reshape(h, w * c),
              mode='clip')
    else:
      out[b] = images_NxHrxWrx3[i, y:y + h, x:x + w]
  return out


def hflip(images_BxHxWx3: np.ndarray) -> np.ndarray:
  """Horizontal mirror, == images[:, :, ::-1] but faster (see _mirror_bytes)."""
  b, h, w, c = images_BxHxWx3.shape
  flat = np.ascontiguousarray(images_BxHxWx3).reshape(b, h, w * c)
  return np.take(flat, _mirror_bytes(w, c), axis=2,
                 mode='clip').reshape(b, h, w, c)


def five_crop_offsets(resize_hw: Sequence[int],
                      input_hw: Sequence[int]) -> np.ndarray:
  """int64 [5, 2] (y, x): torchvision FiveCrop's tl, tr, bl, br, center.

  The centre offset is torchvision center_crop's int(round(d / 2.0)); Python
  rounds halves to even, so an odd margin d = 2k + 1 gives k when k is even
  and k + 1 when k is odd.
  """
  _check_crop(resize_hw, input_hw)
  (hr, wr), (h, w) = resize_hw, input_hw
  dy, dx = hr - h, wr - w
  return np.array([[0, 0], [0, dx], [dy, 0], [dy, dx],
                   [int(round(dy / 2.0)), int(round(dx / 2.0))]], np.int64)


def _views_out(images, input_hw, num_views, out):
  shape = (len(images), num_views) + tuple(input_hw) + (images.shape[-1],)
  if out is None:
    return np.empty(shape, images.dtype)
  if out.shape != shape:
    raise ValueError(f'out has shape {out.shape}; expected {shape}.')
  return out


def ten_crop(images_BxHrxWrx3: np.ndarray, input_hw: Sequence[int],
             out: np.ndarray | None = None) -> np.ndarray:
  """uint8 [B, 10, H, W, 3]: torchvision TenCrop's views, in its order.

  Views 0-4 are FiveCrop of the image; views 5-9 are FiveCrop of the
  horizontally flipped IMAGE (torchvision flips first, then crops). So view 5
  (top-left of the flipped image) is the mirror of view 1 (top-right), view 6
  mirrors view 0, 7 mirrors 3, 8 mirrors 2, and view 9 is the flipped image's
  centre crop, which is the mirror of view 4 only when Wr - W is even.

  `out`, when given, receives the views (e.g. the rows of a padded batch).
  """
  h, w = input_hw
  offsets = five_crop_offsets(images_BxHrxWrx3.shape[1:3], input_hw)
  out = _views_out(images_BxHrxWrx3, input_hw, 10, out)
  flipped = hflip(images_BxHrxWrx3)
  for v, (y, x) in enumerate(offsets):
    out[:, v] = images_BxHrxWrx3[:, y:y + h, x:x + w]
    out[:, 5 + v] = flipped[:, y:y + h, x:x + w]
  return out


def center_crop(images_BxHrxWrx3: np.ndarray, input_hw: Sequence[int],
                out: np.ndarray | None = None) -> np.ndarray:
  """uint8 [B, 1, H, W, 3]: the centre crop (TenCrop's view 4).

  Not the evaluation's single view any more (that is resize_images: the
  whole image at H x W, as the authors); kept for its callers outside the
  pipelines.
  """
  h, w = input_hw
  y, x = five_crop_offsets(images_BxHrxWrx3.shape[1:3], input_hw)[4]
  out = _views_out(images_BxHrxWrx3, input_hw, 1, out)
  out[:, 0] = images_BxHrxWrx3[:, y:y + h, x:x + w]
  return out


def resize_images(images_NxHsxWsx3: np.ndarray, hw: Sequence[int],
                  out: np.ndarray | None = None) -> np.ndarray:
  """uint8 [N, H, W, 3]: each WHOLE image resized to hw = (H, W), no crop.

  PIL bilinear, as load_image resizes a file (images already at hw are
  copied unchanged). This is single-view evaluation's view (eval.tta=False):
  the authors' test transform is transforms.Resize((H, W)) of the whole
  image (extract_features.py). `out`, when given, receives the images (e.g.
  view 0 of a padded batch's rows).
  """
  h, w = (int(v) for v in hw)
  shape = (len(images_NxHsxWsx3), h, w, images_NxHsxWsx3.shape[-1])
  if out is None:
    out = np.empty(shape, np.uint8)
  elif out.shape != shape:
    raise ValueError(f'out has shape {out.shape}; expected {shape}.')
  if tuple(images_NxHsxWsx3.shape[1:3]) == (h, w):
    out[...] = images_NxHsxWsx3
    return out
  for i, img in enumerate(images_NxHsxWsx3):
    out[i] = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR),
                        np.uint8)
  return out


# What the training and evaluation pipelines add to a decode error.
CONFIG_HINT = (' Set --config.data.bad_images=skip to leave out the images '
               'that cannot be read (they are counted and logged).')


def load_image(path: str, resize_hw: Sequence[int],
               hint: str = '') -> np.ndarray:
  """uint8 [Hr, Wr, 3]; raises errors.DataError naming an unreadable file
  (with `hint` appended: what the caller's user can do about it)."""
  hr, wr = resize_hw
  try:
    with Image.open(path) as img:
      img = img.convert('RGB')
      # PIL returns a copy when the size already matches, so images stored
      # at the resize size pass through unchanged (as in tf_pipeline).
      img = img.resize((wr, hr), Image.BILINEAR)
      return np.asarray(img, np.uint8)
  except FileNotFoundError as e:
    raise errors.DataNotFoundError(
        f'Image file not found: {path}.{hint}') from e
  except (OSError, ValueError, SyntaxError) as e:
    # PIL raises UnidentifiedImageError (an OSError) or a truncation OSError.
    raise errors.DataError(f'Cannot decode image {path}: {e}.{hint}') from e


def load_images(paths: Sequence[str], resize_hw: Sequence[int],
                num_threads: int | None = None,
                what: str = 'images', hint: str = '') -> np.ndarray:
  """uint8 [N, Hr, Wr, 3]: decoded, RGB, bilinear-resized (PIL).

  PIL releases the GIL while decoding and resizing, so a thread pool scales
  with cores. Long lists log their progress every ~5%.
  """
  n = len(paths)
  hr, wr = resize_hw
  out = np.empty((n, hr, wr, 3), np.uint8)
  if not n:
    return out
  num_threads = num_threads or min(16, os.cpu_count() or 1)
  report = n >= 2000
  every = max(1, n // 20)
  pool = concurrent.futures.ThreadPoolExecutor(num_threads)
  try:
    for i, img in enumerate(pool.map(
        lambda p: load_image(p, resize_hw, hint), paths)):
      out[i] = img
      if report and ((i + 1) % every == 0 or i + 1 == n):
        logging.info('Loading %s: %d/%d (%d%%)', what, i + 1, n,
                     100 * (i + 1) // n)
  finally:
    # A bad file should fail fast, not after decoding the rest of the list.
    pool.shutdown(wait=True, cancel_futures=True)
  return out
