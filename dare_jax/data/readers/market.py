"""Market-1501 and DukeMTMC-reID in their official layouts.

  root/bounding_box_train/  training images (people only)
  root/query/               one or more queries per test person and camera
  root/bounding_box_test/   the gallery: test people, distractors, junk

File names carry the ids: PPPP_cCsS_FFFFFF_BB.jpg (Market-1501: person,
camera, sequence, frame, box) or PPPP_cC_fFFFFFFF.jpg (DukeMTMC-reID). The
person is -1 for junk and 0000 for distractors; both stay in the gallery as
they are (the evaluation ignores junk and counts distractors as negatives).
The training split keeps only people (pids >= 1), and so does the query
split (a query without a person has no true match); dropped files are
logged. Cameras become 0-based. Non-image files (Market ships Thumbs.db) are
ignored, and files are sorted by name so the order is deterministic.

`root` is the extracted archive (Market-1501-v15.09.15/ or DukeMTMC-reID/),
or, as a convenience, the folder that holds it.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Optional

from absl import logging

from dare_jax import errors
from dare_jax.data.readers import common
from dare_jax.data.types import ReidDataset, Split

TRAIN, QUERY, GALLERY = 'bounding_box_train', 'query', 'bounding_box_test'

MARKET_ARCHIVE = 'Market-1501-v15.09.15'
DUKE_ARCHIVE = 'DukeMTMC-reID'

MARKET_LAYOUT = f"""\
  {MARKET_ARCHIVE}/
    {TRAIN}/   12,936 images of 751 people, e.g. 0002_c1s1_000451_03.jpg
    {QUERY}/                3,368 images, e.g. 0001_c1s1_001051_00.jpg
    {GALLERY}/   19,732 images (incl. -1_* junk, 0000_* distractors)
  (the official archive Market-1501-v15.09.15.zip, extracted)"""

DUKE_LAYOUT = f"""\
  {DUKE_ARCHIVE}/
    {TRAIN}/   16,522 images of 702 people, e.g. 0001_c2_f0046182.jpg
    {QUERY}/                2,228 images, e.g. 0005_c2_f0046985.jpg
    {GALLERY}/   17,661 images
  (the official archive DukeMTMC-reID.zip, extracted)"""

# Strict names for the official archives: a wrong folder (e.g. Duke given to
# the Market reader) fails on its first file instead of training on garbage.
_MARKET_NAME = re.compile(r'^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$')
_DUKE_NAME = re.compile(r'^(-1|\d{4})_c(\d)_f(\d{7})\.jpg$')
_MARKET_CAMERAS, _DUKE_CAMERAS = 6, 8


def _strict_parser(pattern: re.Pattern, num_cameras: int, example: str,
                   dataset: str) -> Callable[[str], tuple[int, int]]:
  def parse(path: str) -> tuple[int, int]:
    m = pattern.match(os.path.basename(path))
    if not m or not 1 <= int(m.group(2)) <= num_cameras:
      raise errors.DataError(
          f'{dataset}: {path}: not a {dataset} file name (expected e.g. '
          f'{example}, cameras c1..c{num_cameras}). Is data.root the right '
          'dataset?')
    return int(m.group(1)), int(m.group(2)) - 1
  return parse


def resolve_root(root: str, archive: str) -> str:
  """root, or root/archive when root is the folder holding the archive."""
  if any(os.path.isdir(os.path.join(root, s)) for s in (TRAIN, QUERY,
                                                          GALLERY)):
    return root
  inner = os.path.join(root, archive)
  return inner if os.path.isdir(inner) else root


def _read_split(folder: str, parse: Callable[[str], tuple[int, int]],
                dataset: str, keep_people_only: bool) -> Split:
  paths = common.list_images(folder)
  if not paths:
    raise errors.DataError(
        f'{dataset}: folder {folder!r} holds no images (.jpg, .jpeg, .png, '
        '.bmp); the split cannot be empty.')
  ids = [parse(p) for p in paths]
  if keep_people_only:
    kept = [i for i, (pid, _) in enumerate(ids) if pid >= 1]
    if len(kept) < len(paths):
      logging.info('%s: dropped %d of %d images in %s whose person id is 0 '
                   '(distractor) or -1 (junk).', dataset,
                   len(paths) - len(kept), len(paths), folder)
    if not kept:
      raise errors.DataError(
          f'{dataset}: folder {folder!r} holds no image of a person (every '
          'file name starts with 0000_ or -1_).')
    paths = [paths[i] for i in kept]
    ids = [ids[i] for i in kept]
  return common.make_split(paths, [p for p, _ in ids], [c for _, c in ids])


def read_market_style(root: str, name: str, layout: str,
                      parse: Optional[Callable[[str], tuple[int, int]]] = None,
                      dataset: Optional[str] = None) -> ReidDataset:
  """root/{bounding_box_train, query, bounding_box_test} -> ReidDataset.

  `parse` maps a path to (pid, 0-based camid), raising errors.DataError
  naming a bad file; default common.parse_market_name (PPPP_cC...).
  """
  parse = parse or common.parse_market_name
  dataset = dataset or name
  folders = [common.require_dir(root, sub, dataset, layout)
             for sub in (TRAIN, QUERY, GALLERY)]
  train = _read_split(folders[0], parse, dataset, keep_people_only=True)
  query = _read_split(folders[1], parse, dataset, keep_people_only=True)
  gallery = _read_split(folders[2], parse, dataset, keep_people_only=False)
  logging.info('%s from %s: %d train images (%d ids), %d query, %d gallery.',
               dataset, root, len(train), len(set(train.pids.tolist())),
               len(query), len(gallery))
  return ReidDataset(name=name, train=train, query=query, gallery=gallery)


def read_market(root: str) -> ReidDataset:
  """Market-1501 (Zheng et al., ICCV 2015) from the extracted archive."""
  return read_market_style(
      resolve_root(root, MARKET_ARCHIVE), 'market', MARKET_LAYOUT,
      _strict_parser(_MARKET_NAME, _MARKET_CAMERAS,
                     '0002_c1s1_000451_03.jpg', 'Market-1501'),
      dataset='Market-1501')


def read_duke(root: str) -> ReidDataset:
  """DukeMTMC-reID (Zheng et al., ICCV 2017) from the extracted archive."""
  return read_market_style(
      resolve_root(root, DUKE_ARCHIVE), 'duke', DUKE_LAYOUT,
      _strict_parser(_DUKE_NAME, _DUKE_CAMERAS, '0001_c2_f0046182.jpg',
                     'DukeMTMC-reID'),
      dataset='DukeMTMC-reID')
