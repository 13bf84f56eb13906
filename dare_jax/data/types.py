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
  """
  pids: np.ndarray  # int64 [N]
  camids: np.ndarray  # int64 [N]
  images: Optional[np.ndarray] = None  # uint8 [N, H, W, 3]
  paths: Optional[Sequence[str]] = None

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
