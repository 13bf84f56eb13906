"""What several readers share: file-name parsing, folder checks, splits."""

from __future__ import annotations

import os
import re
from typing import Iterable, Optional, Sequence

import numpy as np

from dare_jax import errors
from dare_jax.data.types import Split

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')

# Market-1501 / DukeMTMC-reID: PPPP_cCsS_FFFFFF_BB.jpg (Duke: PPPP_cC_fFFFFFFF.jpg).
# The person is -1 for junk and 0000 for distractors; cameras are 1-based.
_MARKET_NAME = re.compile(r'^(-?\d+)_c(\d+)')


def parse_market_name(fname: str) -> tuple[int, int]:
  """(person id, 0-based camera id) of a Market-1501-style file name.

  Raises:
    errors.DataError: the name does not start with PPPP_cC.
  """
  m = _MARKET_NAME.match(os.path.basename(fname))
  if not m:
    raise errors.DataError(
        f'{fname}: not a Market-1501-style name (PPPP_cC..., e.g. '
        '0002_c1s1_000451_03.jpg or 0001_c2_f0046182.jpg).')
  return int(m.group(1)), int(m.group(2)) - 1


def require_dir(root: str, sub: str, dataset: str, layout: str) -> str:
  """root/sub, or DataNotFoundError naming it and the expected layout."""
  path = os.path.join(root, sub) if sub else root
  if not os.path.isdir(path):
    raise errors.DataNotFoundError(
        f'{dataset}: folder {path!r} is missing. Expected the official '
        f'layout:\n{layout}')
  return path


def require_file(root: str, sub: str, dataset: str, layout: str) -> str:
  path = os.path.join(root, sub)
  if not os.path.isfile(path):
    raise errors.DataNotFoundError(
        f'{dataset}: file {path!r} is missing. Expected the official '
        f'layout:\n{layout}')
  return path


def list_images(folder: str) -> list[str]:
  """Image files directly in `folder`, sorted by name (full paths)."""
  return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
          if f.lower().endswith(IMAGE_EXTENSIONS)]


def make_split(paths: Sequence[str], pids: Iterable[int],
               camids: Iterable[int],
               tracklets: Optional[Sequence[int]] = None) -> Split:
  return Split(pids=np.asarray(list(pids), np.int64).reshape(-1),
               camids=np.asarray(list(camids), np.int64).reshape(-1),
               paths=list(paths),
               tracklets=None if tracklets is None else
               np.asarray(tracklets, np.int64).reshape(-1))
