"""data.bad_images='skip': decode every image once and drop the bad ones.

The 'error' policy needs no code here: the pipelines decode through
augment.load_image, which raises errors.DataError naming the file that
cannot be decoded (tests/readers_image_test.py checks both pipelines' train
and eval batches).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image

from dare_jax import errors
from dare_jax.data.types import ReidDataset, Split

_SHOW_BAD = 10
_LOG_FRACTION = 0.05  # progress every ~5% ...
_LOG_MIN_IMAGES = 2000  # ... of lists at least this long


def decodes(path: str) -> bool:
  """Whether PIL can open and fully decode the file."""
  try:
    with Image.open(path) as img:
      img.load()
    return True
  except Exception:  # pylint: disable=broad-except
    # Missing files, UnidentifiedImageError, truncation (OSError),
    # SyntaxError / ValueError from broken headers, decompression bombs.
    return False


def find_bad_images(paths: Sequence[str],
                    num_threads: Optional[int] = None) -> list[str]:
  """The paths that fail to decode, in the order given (each tried once)."""
  unique = list(dict.fromkeys(paths))
  n = len(unique)
  workers = num_threads or min(32, 2 * (os.cpu_count() or 1))
  every = max(1, int(n * _LOG_FRACTION)) if n >= _LOG_MIN_IMAGES else 0
  ok = {}
  # PIL releases the GIL while decoding, so threads scale.
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for i, (path, good) in enumerate(zip(unique, pool.map(decodes, unique))):
      ok[path] = good
      if every and (i + 1) % every == 0 and i + 1 < n:
        logging.info('Checking images: %d / %d (%.0f%%).', i + 1, n,
                     100.0 * (i + 1) / n)
  return [p for p in unique if not ok[p]]


def _drop(split: Split, bad: set) -> Split:
  if split.paths is None:
    return split
  keep = np.array([p not in bad for p in split.paths], bool)
  if keep.all():
    return split
  tracklets = None
  if split.tracklets is not None:
    t = np.asarray(split.tracklets)[keep]
    # Kept frames stay in order, so renumbering runs of equal ids gives
    # 0..T-1 again; a tracklet left with no frame simply disappears.
    tracklets = np.r_[0, np.cumsum(np.diff(t) != 0)].astype(np.int64)[:len(t)]
  return dataclasses.replace(
      split, pids=np.asarray(split.pids)[keep],
      camids=np.asarray(split.camids)[keep],
      paths=[p for p, k in zip(split.paths, keep) if k], tracklets=tracklets)


def drop_bad_images(ds: ReidDataset, num_threads: Optional[int] = None
                    ) -> tuple[ReidDataset, list[str]]:
  """(ds without the images PIL cannot decode, those bad paths).

  Splits given as decoded `images` are kept as they are. Video splits keep
  valid `tracklets` (renumbered 0..T-1; an emptied tracklet is dropped).
  """
  paths = [p for s in (ds.train, ds.query, ds.gallery) if s.paths is not None
           for p in s.paths]
  bad = find_bad_images(paths, num_threads)
  if not bad:
    logging.info('%s: all %d images decode.', ds.name, len(set(paths)))
    return ds, []
  logging.warning('%s: dropping %d of %d images that cannot be decoded: %s%s',
                  ds.name, len(bad), len(set(paths)),
                  ', '.join(bad[:_SHOW_BAD]),
                  ' ...' if len(bad) > _SHOW_BAD else '')
  bad_set = set(bad)
  splits = {}
  for name in ('train', 'query', 'gallery'):
    splits[name] = _drop(getattr(ds, name), bad_set)
    if len(getattr(ds, name)) and not len(splits[name]):
      raise errors.DataError(
          f'{ds.name}: no image of the {name} split can be decoded (e.g. '
          f'{bad[0]}); check the dataset files.')
  return dataclasses.replace(ds, **splits), bad


def check_readable(ds: ReidDataset, splits: Sequence[str] = ('query',
                                                             'gallery'),
                   num_threads: Optional[int] = None) -> int:
  """data.bad_images='error' before training: DataError naming the images of
  `splits` that cannot be decoded, so that a corrupt gallery image stops
  the run at its start rather than at the evaluation after training.
  Returns how many images were checked (0 for in-memory splits)."""
  paths = [p for name in splits if getattr(ds, name).paths is not None
           for p in getattr(ds, name).paths]
  if not paths:
    return 0
  logging.info('%s: checking that the %d %s images decode before training '
               '(data.bad_images=\'error\').', ds.name, len(set(paths)),
               ' and '.join(splits))
  bad = find_bad_images(paths, num_threads)
  if bad:
    raise errors.DataError(
        f'{ds.name}: {len(bad)} {" / ".join(splits)} image(s) cannot be '
        f'decoded: {", ".join(bad[:_SHOW_BAD])}'
        f'{" ..." if len(bad) > _SHOW_BAD else ""}. Evaluation after '
        'training would fail on them. Replace them, or set '
        '--config.data.bad_images=skip to leave out the images that cannot '
        'be read (they are counted and logged).')
  return len(set(paths))
