"""Plain containers that every reader, generator and pipeline agrees on.

Person-id conventions follow Market-1501: ids >= 1 are people, 0 is a
distractor (kept in the gallery as a negative), -1 is junk (ignored by the
evaluation). Camera ids are >= 0; -1 means unknown.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a re-ID dataset: N images with their person and camera ids.

  Exactly one of `images` and `paths` is set:
    images: uint8 [N, H, W, 3], already at the pipeline's resize size.
    paths: N image files, decoded and resized by the pipeline.

  Video datasets (MARS) list frames: `tracklets` then maps each frame to its
  tracklet, numbered 0..T-1 in order of first appearance, each tracklet's
  frames contiguous and sharing one pid and camid. The evaluation embeds the
  frames and mean-pools them per tracklet, so query and gallery items are
  tracklets, in that order.
  """
  pids: np.ndarray  # int64 [N]
  camids: np.ndarray  # int64 [N]
  images: Optional[np.ndarray] = None  # uint8 [N, H, W, 3]
  paths: Optional[Sequence[str]] = None
  tracklets: Optional[np.ndarray] = None  # int64 [N], frame -> tracklet

  def __post_init__(self):
    n = len(self.pids)
    if (self.images is None) == (self.paths is None):
      raise ValueError('Split needs exactly one of `images` and `paths`.')
    if len(self.camids) != n:
      raise ValueError(f'Split has {n} pids but {len(self.camids)} camids.')
    if self.images is not None:
      if self.images.dtype != np.uint8 or self.images.ndim != 4 or (
          self.images.shape[-1] != 3) or len(self.images) != n:
        raise ValueError(
            f'Split.images must be uint8 [N={n}, H, W, 3]; got '
            f'{self.images.dtype} {self.images.shape}.')
    if self.paths is not None and len(self.paths) != n:
      raise ValueError(f'Split has {n} pids but {len(self.paths)} paths.')
    if self.tracklets is not None:
      t = np.asarray(self.tracklets)
      if t.shape != (n,):
        raise ValueError(f'Split has {n} frames but tracklets of shape '
                         f'{t.shape}.')
      if n and (t[0] != 0 or np.any(np.diff(t) < 0) or
                np.any(np.diff(t) > 1)):
        raise ValueError('Split.tracklets must number the tracklets 0..T-1 '
                         'with each tracklet\'s frames contiguous.')
      if n:
        starts = np.flatnonzero(np.r_[True, np.diff(t) != 0])
        for ids in (np.asarray(self.pids), np.asarray(self.camids)):
          if np.any(ids != np.repeat(ids[starts], np.diff(np.r_[starts, n]))):
            raise ValueError('The frames of a tracklet must share one pid '
                             'and one camid.')

  def take(self, index) -> 'Split':
    """The frames/images at `index` (int [M], increasing); tracklets are
    renumbered 0..T'-1 and a tracklet left with no frame disappears."""
    index = np.asarray(index, np.int64)
    if index.size and np.any(np.diff(index) <= 0):
      raise ValueError('Split.take needs strictly increasing indices.')
    tracklets = None
    if self.tracklets is not None:
      t = np.asarray(self.tracklets)[index]
      tracklets = np.cumsum(np.r_[False, np.diff(t) != 0]).astype(np.int64)
    return Split(
        pids=np.asarray(self.pids)[index], camids=np.asarray(self.camids)[index],
        images=None if self.images is None else self.images[index],
        paths=None if self.paths is None else [self.paths[i] for i in index],
        tracklets=tracklets)

  @property
  def num_items(self) -> int:
    """Evaluation items: tracklets for video data, else images."""
    if self.tracklets is None:
      return len(self)
    return int(self.tracklets[-1]) + 1 if len(self) else 0

  def item_ids(self) -> tuple[np.ndarray, np.ndarray]:
    """(pids, camids) int64 [num_items]: per tracklet for video data."""
    pids, camids = np.asarray(self.pids), np.asarray(self.camids)
    if self.tracklets is None:
      return pids.astype(np.int64), camids.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(self.tracklets) != 0])
    return (pids[starts].astype(np.int64), camids[starts].astype(np.int64))

  def __len__(self) -> int:
    return len(self.pids)


@dataclasses.dataclass(frozen=True)
class ReidDataset:
  """Train identities are disjoint from test (query/gallery) identities."""
  name: str
  train: Split
  query: Split
  gallery: Split
  # Anything a reader or generator knows beyond the splits, e.g. the
  # synthetic dataset's per-identity difficulty: {'hard_pids': int64 [M]}.
  extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
