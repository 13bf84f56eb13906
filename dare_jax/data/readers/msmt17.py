"""MSMT17 (Wei et al., CVPR 2018) in either of its two releases.

4,101 people, 126,441 boxes, 15 cameras. The official split: 1,041 training
people (32,621 boxes) and 3,060 test people (11,659 query and 82,161
gallery boxes). Both releases ship the split as four list files beside two
image folders; V2 is the same data with the faces masked:

  MSMT17_V1/                         MSMT17_V2/
    train/PPPP/NAME.jpg                mask_train_v2/PPPP/NAME.jpg
    test/PPPP/NAME.jpg                 mask_test_v2/PPPP/NAME.jpg
    list_train.txt, list_val.txt       (the same four list files)
    list_query.txt, list_gallery.txt

A list line is `RELATIVE_PATH PID`, the path relative to the train folder
(list_train, list_val) or the test folder (list_query, list_gallery), e.g.
`0000/0000_000_01_0303morning_0015_0.jpg 0`. The camera is the third
underscore field of the file name, 01..15, and becomes camid = camera - 1
(0-based, as every reader here and as torchreid and fast-reid read it).

Person ids: the lists number people from 0 (train 0..1040, test 0..3059,
two separate sets of people). Here 0 is a distractor and never trained on
(types.py, sampler.py), so pid = list pid + 1 in every split: train ids
1..1041, test ids 1..3060, in the lists' order. Nothing is relabelled
otherwise, and every listed box is kept (MSMT17 has no junk or distractors).

Training set: list_train + list_val by default (val_in_train=True), the
32,621 boxes the dataset defines as its training set; val_in_train=False
trains on list_train alone, the default of torchreid and fast-reid (their
`combineall` adds list_val). Query and gallery are list_query and
list_gallery as listed.

`root` is MSMT17_V1/ or MSMT17_V2/ (detected from its folders), or the
folder holding one of them (V1 first when both are there, as torchreid and
fast-reid); a release folder that the archive nests in another of the same
name (MSMT17_V2/MSMT17_V2/) is found too.
"""

from __future__ import annotations

import os

from absl import logging

from dare_jax import errors
from dare_jax.data.readers import common
from dare_jax.data.types import ReidDataset

NAME = 'msmt17'
# release folder -> (train image folder, test image folder)
RELEASES = {'MSMT17_V1': ('train', 'test'),
            'MSMT17_V2': ('mask_train_v2', 'mask_test_v2')}
LISTS = ('list_train.txt', 'list_val.txt', 'list_query.txt',
         'list_gallery.txt')
NUM_CAMERAS = 15
EXAMPLE = '0000/0000_000_01_0303morning_0015_0.jpg'

LAYOUT = f"""\
  MSMT17_V1/  (or MSMT17_V2/, faces masked)
    train/      (V2: mask_train_v2/)  PPPP/NAME.jpg, e.g. {EXAMPLE}
    test/       (V2: mask_test_v2/)   PPPP/NAME.jpg
    list_train.txt, list_val.txt      RELATIVE_PATH PID, paths under train/
    list_query.txt, list_gallery.txt  RELATIVE_PATH PID, paths under test/
  (32,621 train boxes of 1,041 people in list_train + list_val; 11,659
  query and 82,161 gallery boxes of 3,060 people; camera = the third
  underscore field of NAME, 01..15). data.root is MSMT17_V1/, MSMT17_V2/ or
  the folder holding it."""


def _release_of(folder: str):
  """The release whose image folders `folder` holds directly, else None."""
  for release in ('MSMT17_V2', 'MSMT17_V1'):  # V1's names are generic
    if any(os.path.isdir(os.path.join(folder, s)) for s in RELEASES[release]):
      return release
  if any(os.path.isfile(os.path.join(folder, f)) for f in LISTS):
    # The lists without image folders: the folder's name tells the release
    # (the error then names the folders that are missing).
    return 'MSMT17_V2' if os.path.basename(
        os.path.normpath(folder)).upper().endswith('V2') else 'MSMT17_V1'
  return None


def resolve_root(root: str) -> tuple[str, str]:
  """(release folder, 'MSMT17_V1' or 'MSMT17_V2') for data.root.

  Raises:
    errors.DataNotFoundError: root holds neither a release nor one's
      contents.
  """
  release = _release_of(root)
  if release:
    return root, release
  for release in RELEASES:
    inner = os.path.join(root, release)
    for folder in (inner, os.path.join(inner, release)):
      found = _release_of(folder) if os.path.isdir(folder) else None
      if found:
        return folder, found
    if os.path.isdir(inner):
      return inner, release  # an empty release folder: named as missing
  raise errors.DataNotFoundError(
      f'MSMT17: {root!r} holds neither MSMT17_V1/ nor MSMT17_V2/, nor the '
      'contents of one (train/ and test/, or mask_train_v2/ and '
      'mask_test_v2/, with the list files). Expected the official '
      f'layout:\n{LAYOUT}')


def parse_camera(name: str) -> int:
  """0-based camera of an MSMT17 file name (third underscore field, 01..15).

  Raises:
    errors.DataError: no such field, or not a camera 1..15.
  """
  fields = os.path.basename(name).split('_')
  if (len(fields) < 3 or not (fields[2].isdigit() and fields[2].isascii()) or
      not 1 <= int(fields[2]) <= NUM_CAMERAS):
    raise errors.DataError(
        f'MSMT17: {name!r} is not an MSMT17 file name (PPPP_NNN_CC_..., the '
        f'camera CC in 01..{NUM_CAMERAS}, e.g. {os.path.basename(EXAMPLE)}).')
  return int(fields[2]) - 1


def _read_list(list_path: str, image_dir: str) -> tuple[list, list, list]:
  """(paths, list pids + 1, camids) of one list file, in its order."""
  paths, pids, camids = [], [], []
  with open(list_path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 2 or not (fields[1].isdigit() and
                                  fields[1].isascii()):
        raise errors.DataError(
            f'MSMT17: {list_path}:{lineno}: {line.strip()!r} is not '
            f'"RELATIVE_PATH PID" (e.g. "{EXAMPLE} 0"). Is this the list '
            'file of the release?')
      try:
        camids.append(parse_camera(fields[0]))
      except errors.DataError as e:
        raise errors.DataError(f'{list_path}:{lineno}: {e}') from None
      paths.append(os.path.join(image_dir, fields[0]))
      pids.append(int(fields[1]) + 1)
  return paths, pids, camids


def read_msmt17(root: str, val_in_train: bool = True) -> ReidDataset:
  """MSMT17 from MSMT17_V1/ or MSMT17_V2/ (or its parent) -> ReidDataset.

  Args:
    root: data.root.
    val_in_train: train on list_train + list_val (the official 32,621
      boxes; data.msmt17_val_in_train) or on list_train alone.

  Raises:
    errors.DataNotFoundError: no release found, or any of its two image
      folders and four list files missing (all named), or the first image
      of a list missing.
    errors.DataError: a malformed list line or file name (named), or an
      empty train, query or gallery list.
  """
  folder, release = resolve_root(root)
  train_sub, test_sub = RELEASES[release]
  missing = [s + '/' for s in (train_sub, test_sub)
             if not os.path.isdir(os.path.join(folder, s))]
  missing += [f for f in LISTS if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    raise errors.DataNotFoundError(
        f'MSMT17 ({release}): {", ".join(missing)} missing in {folder!r}. '
        f'Expected the official layout:\n{LAYOUT}')
  image_dir = {'train': os.path.join(folder, train_sub),
               'val': os.path.join(folder, train_sub),
               'query': os.path.join(folder, test_sub),
               'gallery': os.path.join(folder, test_sub)}
  lists = {}
  for split, list_name in zip(image_dir, LISTS):
    list_path = os.path.join(folder, list_name)
    lists[split] = _read_list(list_path, image_dir[split])
    paths = lists[split][0]
    if not paths and split != 'val':
      raise errors.DataError(
          f'MSMT17: {list_path!r} lists no image; the {split} split cannot '
          'be empty.')
    # One stat per list: a wrong folder fails here, not mid-training (every
    # image is checked when it is decoded).
    if paths and not os.path.isfile(paths[0]):
      raise errors.DataNotFoundError(
          f'MSMT17 ({release}): {paths[0]!r}, the first image of '
          f'{list_name}, is missing. Expected the official layout:\n{LAYOUT}')
  if val_in_train:
    lists['train'] = tuple(a + b for a, b in zip(lists['train'],
                                                  lists.pop('val')))
  else:
    del lists['val']
  splits = {s: common.make_split(*v) for s, v in lists.items()}
  logging.info('MSMT17 (%s) from %s: %d train images (%d ids; list_val %s), '
               '%d query, %d gallery.', release, folder, len(splits['train']),
               len(set(splits['train'].pids.tolist())),
               'included' if val_in_train else 'left out',
               len(splits['query']), len(splits['gallery']))
  return ReidDataset(name=NAME, **splits)


read = read_msmt17
