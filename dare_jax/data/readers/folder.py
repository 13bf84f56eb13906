"""A dataset of your own, in one of two forms.

(a) read_folder(root): Market-1501 file names (PPPP_cC..., e.g.
    0002_c1_anything.jpg; person -1 junk, 0000 distractor; cameras 1-based)
    in root/{bounding_box_train, query, bounding_box_test}, read exactly as
    Market-1501 is (market.read_market_style) but with any name after the
    PPPP_cC prefix.

(b) read_manifest(csv_path, root=None, split_seed=0): a CSV whose header row
    names the columns path, person, camera and optionally split, in any
    order:
      path    the image, relative to `root` when given (not None or ''),
              else to the CSV's folder; absolute paths are allowed.
      person  an integer: >= 1 a person, 0 a distractor, -1 junk.
      camera  an integer >= 0, or empty / -1 for an unknown camera (the
              evaluation then never treats two images as same-camera).
      split   train, query or gallery.
    Without a split column the people (person >= 1) are split in half: the
    sorted ids are permuted with np.random.default_rng(split_seed), the first
    floor(n / 2) train and the rest test. Each test person's first image (in
    manifest order) is its query and the others its gallery; a test person
    with a single image has no possible match, so that image goes to the
    gallery only. Distractors and junk go to the gallery.
    With a split column, train images of distractors/junk are dropped
    (logged), and a query must be a person.
    Every split lists its images in manifest order.
"""

from __future__ import annotations

import csv
import os
from typing import Optional

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax.data.readers import common
from dare_jax.data.readers import market
from dare_jax.data.types import ReidDataset

LAYOUT = f"""\
  your_dataset/
    {market.TRAIN}/   training images, PPPP_cC*.jpg (PPPP the person >= 1,
                          C the 1-based camera), e.g. 0002_c1_0001.jpg
    {market.QUERY}/                query images, same names
    {market.GALLERY}/    gallery images (-1_* junk, 0000_* distractors)
  or a CSV manifest (data.manifest) with columns path,person,camera[,split]"""

COLUMNS = ('path', 'person', 'camera')
SPLITS = ('train', 'query', 'gallery')
_SHOW_MISSING = 5


def read_folder(root: str) -> ReidDataset:
  """Market-1501 file names in root/{bounding_box_train,query,
  bounding_box_test} (form (a) of the module doc)."""
  return market.read_market_style(root, 'folder', LAYOUT,
                                  dataset='folder dataset')


def _int_field(where: str, name: str, value: str) -> int:
  try:
    return int(value.strip())
  except ValueError:
    raise errors.DataError(
        f'{where}: {name}={value!r} is not an integer.') from None


def read_manifest(csv_path: str, root: Optional[str] = None,
                  split_seed: int = 0) -> ReidDataset:
  """A CSV manifest -> ReidDataset (form (b) of the module doc)."""
  if not os.path.isfile(csv_path):
    raise errors.DataNotFoundError(
        f'Manifest {csv_path!r} does not exist. Expected a CSV with a header '
        'row path,person,camera[,split] (see dare_jax/data/readers/folder.py).')
  root = root or None  # '' (an unset config field) = the CSV's folder
  base = root if root is not None else os.path.dirname(
      os.path.abspath(csv_path))
  if root is not None and not os.path.isdir(root):
    raise errors.DataNotFoundError(
        f'Manifest {csv_path}: image root {root!r} is not a folder.')
  name = csv_path
  rows = []  # (line, path, person, camera, split or None)
  with open(csv_path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
      raise errors.DataError(
          f'{name}: the manifest is empty; its first line must name the '
          'columns path,person,camera[,split].')
    header = [h.strip().lower() for h in header]
    extra = [h for h in header if h not in COLUMNS + ('split',)]
    missing = [c for c in COLUMNS if c not in header]
    dup = sorted({h for h in header if header.count(h) > 1})
    if extra or missing or dup:
      raise errors.DataError(
          f'{name} line 1: the header must name the columns path, person, '
          'camera and optionally split, each once'
          + (f'; unknown columns: {", ".join(extra)}' if extra else '')
          + (f'; missing: {", ".join(missing)}' if missing else '')
          + (f'; repeated: {", ".join(dup)}' if dup else '') + '.')
    col = {h: i for i, h in enumerate(header)}
    has_split = 'split' in col
    for fields in reader:
      line = reader.line_num
      where = f'{name} line {line}'
      if not fields or all(not x.strip() for x in fields):
        continue  # blank line
      if len(fields) != len(header):
        raise errors.DataError(
            f'{where}: {len(fields)} fields, but the header names '
            f'{len(header)} ({",".join(header)}).')
      path = fields[col['path']].strip()
      if not path:
        raise errors.DataError(f'{where}: path is empty.')
      person = _int_field(where, 'person', fields[col['person']])
      if person < -1:
        raise errors.DataError(
            f'{where}: person={person} must be >= 1 (a person), 0 '
            '(distractor) or -1 (junk).')
      cam_text = fields[col['camera']].strip()
      camera = -1 if not cam_text else _int_field(where, 'camera', cam_text)
      if camera < -1:
        raise errors.DataError(
            f'{where}: camera={camera} must be >= 0, or -1 / empty for an '
            'unknown camera.')
      split = None
      if has_split:
        split = fields[col['split']].strip().lower()
        if split not in SPLITS:
          raise errors.DataError(
              f'{where}: split={fields[col["split"]]!r} must be one of '
              f'{", ".join(SPLITS)}.')
        if split == 'query' and person < 1:
          raise errors.DataError(
              f'{where}: a query must be a person (person >= 1); '
              f'person={person} belongs in the gallery.')
      rows.append((line, os.path.join(base, path), person, camera, split))
  if not rows:
    raise errors.DataError(f'{name}: the manifest lists no images.')
  missing = [p for _, p, *_ in rows if not os.path.isfile(p)]
  if missing:
    raise errors.DataNotFoundError(
        f'{name}: {len(missing)} of {len(rows)} image files are missing, '
        f'e.g. {", ".join(missing[:_SHOW_MISSING])}. Paths are relative to '
        + ('the image root' if root is not None else "the CSV's folder")
        + f' {base!r}.')
  if has_split:
    assign = _explicit_split(name, rows)
  else:
    assign = _seeded_split(name, rows, split_seed)
  splits = {}
  for s in SPLITS:
    sel = [r for r, a in zip(rows, assign) if a == s]
    # A manifest of query and gallery rows only is a test-only target
    # (cross-domain evaluation); a run that trains says the train split is
    # empty (datasets.load_dataset).
    if not sel and not (has_split and s == 'train'):
      raise errors.DataError(
          f'{name}: the {s} split is empty'
          + ('.' if has_split else
             f' (after splitting the {len({r[2] for r in rows if r[2] >= 1})}'
             ' people in half; each test person needs 2+ images).'))
    splits[s] = common.make_split([r[1] for r in sel], [r[2] for r in sel],
                                  [r[3] for r in sel])
  logging.info('Manifest %s: %d train images (%d ids), %d query, %d gallery.',
               csv_path, len(splits['train']),
               len(set(splits['train'].pids.tolist())), len(splits['query']),
               len(splits['gallery']))
  return ReidDataset(name='folder', **splits)


def _explicit_split(name, rows) -> list[Optional[str]]:
  assign = []
  dropped = 0
  for _, _, person, _, split in rows:
    if split == 'train' and person < 1:
      dropped += 1
      assign.append(None)
    else:
      assign.append(split)
  if dropped:
    logging.info('%s: dropped %d train images of distractors / junk '
                 '(person 0 / -1).', name, dropped)
  train_ids = {r[2] for r, a in zip(rows, assign) if a == 'train'}
  test_ids = {r[2] for r, a in zip(rows, assign) if a in ('query', 'gallery')
              and r[2] >= 1}
  shared = sorted(train_ids & test_ids)
  if shared:
    logging.warning('%s: %d people are in both train and query/gallery (e.g. '
                    '%s); the test is then not on unseen people.', name,
                    len(shared), shared[:5])
  return assign


def _seeded_split(name, rows, split_seed) -> list[str]:
  ids = np.array(sorted({r[2] for r in rows if r[2] >= 1}), np.int64)
  perm = np.random.default_rng(split_seed).permutation(ids)
  train_ids = set(perm[:len(ids) // 2].tolist())
  count = {}
  for r in rows:
    count[r[2]] = count.get(r[2], 0) + 1
  seen, assign, singles = set(), [], 0
  for _, _, person, _, _ in rows:
    if person < 1:
      assign.append('gallery')
    elif person in train_ids:
      assign.append('train')
    elif count[person] < 2:
      singles += 1
      assign.append('gallery')
    elif person not in seen:
      seen.add(person)
      assign.append('query')
    else:
      assign.append('gallery')
  if singles:
    logging.info('%s: %d test people have a single image; it goes to the '
                 'gallery (no query).', name, singles)
  return assign
