"""What every figure shares: matplotlib on demand, the PNG writer, and an
item's image loaded one way."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from dare_jax import fileio


def pyplot():
  """matplotlib.pyplot with the Agg backend (no display), imported on use."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save(fig, out_png: str, dpi: int) -> str:
  """Writes fig atomically (fileio.save_figure) and closes it."""
  try:
    fileio.save_figure(fig, out_png, dpi=dpi)
  finally:
    pyplot().close(fig)
  return out_png


def item_image(split, i: int, hw: Sequence[int]) -> np.ndarray:
  """uint8 [H, W, 3]: evaluation item i of a data split (types.Split; a
  video split's tracklet i shows its first frame), from the split's image
  array when it holds one, else its file read at hw (eval resizing)."""
  j = i
  if split.tracklets is not None:
    j = int(np.searchsorted(split.tracklets, i))
  if split.images is not None:
    return np.asarray(split.images[j])
  return file_image(split.paths[j], hw)


def file_image(path: str, hw: Sequence[int],
               cache: Optional[dict] = None) -> np.ndarray:
  """uint8 [H, W, 3]: an image file resized to hw as the eval pipeline
  resizes (data/augment.load_image); memoised in `cache` when given."""
  from dare_jax.data import augment  # pylint: disable=g-import-not-at-top
  key = (path, tuple(hw))
  if cache is not None and key in cache:
    return cache[key]
  img = augment.load_image(path, tuple(hw))
  if cache is not None:
    cache[key] = img
  return img
