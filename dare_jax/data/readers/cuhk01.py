"""CUHK01 (Li et al., ACCV 2012): 971 people seen by two campus cameras.

Layout: root/campus/IIIINNN.png, or root itself holding the PNGs. IIII is
the 4-digit identity (0001..0971), NNN the image: 001-002 from camera A
(camid 0), 003-004 from camera B (camid 1); 3,884 images in all.

Split (the usual 485 / 486 protocol, as in the DaRe paper): the identities,
sorted, are permuted with np.random.default_rng(split_seed); the first
num_test_ids of the permutation are the test people and the rest (485) the
training people. Each split lists its files sorted by name.

Test protocol, multi-shot: query = the test people's camera-A images,
gallery = their camera-B images (2 queries x 2 gallery images per person;
972 + 972 images for 486 people). Query and gallery cameras differ, so the
Market-1501 evaluation removes nothing; every query has 2 true matches.
Training uses all 4 images of each training person.
"""

from __future__ import annotations

import collections
import os
import re

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax.data.readers import common
from dare_jax.data.types import ReidDataset

LAYOUT = """\
  CUHK01/
    campus/    3,884 images: 971 people x 4, IIIINNN.png, e.g. 0001001.png
               (NNN 001-002: camera A, 003-004: camera B)"""

_NAME = re.compile(r'^(\d{4})(\d{3})\.png$', re.IGNORECASE)
_CAMERA_OF_INDEX = {1: 0, 2: 0, 3: 1, 4: 1}


def _image_folder(root: str) -> str:
  campus = os.path.join(root, 'campus')
  if os.path.isdir(campus):
    return campus
  common.require_dir(root, '', 'CUHK01', LAYOUT)
  if not any(f.lower().endswith('.png') for f in os.listdir(root)):
    raise errors.DataNotFoundError(
        f'CUHK01: folder {campus!r} is missing (and {root!r} holds no PNG '
        f'images). Expected the official layout:\n{LAYOUT}')
  return root


def read_cuhk01(root: str, split_seed: int = 0,
                num_test_ids: int = 486) -> ReidDataset:
  """CUHK01 with a seeded 485 / 486 identity split (see the module doc)."""
  folder = _image_folder(root)
  paths = common.list_images(folder)
  pids, camids = [], []
  for p in paths:
    m = _NAME.match(os.path.basename(p))
    if not m or int(m.group(2)) not in _CAMERA_OF_INDEX or int(m.group(1)) < 1:
      raise errors.DataError(
          f'CUHK01: {p}: not a CUHK01 file name (IIIINNN.png: 4-digit '
          'identity >= 0001, image 001-004, e.g. 0001003.png).')
    pids.append(int(m.group(1)))
    camids.append(_CAMERA_OF_INDEX[int(m.group(2))])
  if not paths:
    raise errors.DataError(f'CUHK01: folder {folder!r} holds no images.\n'
                           f'Expected the official layout:\n{LAYOUT}')
  cams_of = collections.defaultdict(set)
  for pid, cam in zip(pids, camids):
    cams_of[pid].add(cam)
  one_camera = sorted(pid for pid, cams in cams_of.items() if len(cams) < 2)
  if one_camera:
    raise errors.DataError(
        f'CUHK01: {folder}: {len(one_camera)} identities have images from '
        f'one camera only (e.g. {one_camera[:5]}); each needs images '
        '001-002 (camera A) and 003-004 (camera B).')
  ids = np.array(sorted(cams_of), np.int64)
  if not 1 <= num_test_ids < len(ids):
    raise errors.ConfigError(
        f'CUHK01: num_test_ids={num_test_ids} (data.cuhk01_num_test_ids) '
        f'must be in [1, {len(ids) - 1}]: {folder} holds {len(ids)} '
        'identities.')
  perm = np.random.default_rng(split_seed).permutation(ids)
  test_ids = set(perm[:num_test_ids].tolist())

  def select(keep):
    idx = [i for i in range(len(paths)) if keep(pids[i], camids[i])]
    return common.make_split([paths[i] for i in idx], [pids[i] for i in idx],
                             [camids[i] for i in idx])

  train = select(lambda pid, cam: pid not in test_ids)
  query = select(lambda pid, cam: pid in test_ids and cam == 0)
  gallery = select(lambda pid, cam: pid in test_ids and cam == 1)
  logging.info('CUHK01 from %s, split_seed=%d: %d train ids (%d images), '
               '%d test ids: %d query (camera A) / %d gallery (camera B).',
               folder, split_seed, len(ids) - num_test_ids, len(train),
               num_test_ids, len(query), len(gallery))
  return ReidDataset(name='cuhk01', train=train, query=query, gallery=gallery)
