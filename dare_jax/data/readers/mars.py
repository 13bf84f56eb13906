"""MARS (Zheng et al., ECCV 2016): video re-ID, read as frames + tracklets.

Official layout (the MARS release: bbox_train.zip, bbox_test.zip and the
MARS-evaluation repository's info/ folder), root/:

  bbox_train/PPPP/PPPPCcTttttFfff.jpg   625 people, 8,298 tracks, 509,914 frames
  bbox_test/PPPP/PPPPCcTttttFfff.jpg    636 people + junk + distractors,
                                        12,180 tracks, 681,089 frames
  info/train_name.txt                   the train frame names, one a line
  info/test_name.txt                    the test frame names, one a line
  info/tracks_train_info.mat            track_train_info: 8298 x 4
  info/tracks_test_info.mat             track_test_info: 12180 x 4
  info/query_IDX.mat                    query_IDX: 1 x 1980

(the five info files are also accepted directly in root/). A frame name is
PPPPCcTttttFfff.jpg, e.g. 0003C4T0003F001.jpg: person 0003, camera 4,
tracklet 3, frame 1; the person folder '00-1' holds junk frames (pid -1),
'0000' distractors (pid 0). A row of tracks_*_info is [start, end, person,
camera]: start/end 1-based, inclusive, into the split's name list.
query_IDX lists 1-based rows of the test tracks.

Splits, following the official MARS evaluation:
  train: every frame of the train tracks with a person id >= 1, tracklets
    numbered 0..T-1 in file order.
  query: the frames of the query tracks, in query_IDX order; tracklets 0..Q-1.
  gallery: the frames of ALL test tracks in file order (junk and distractors
    included); tracklets 0..T-1. The query track itself is in the gallery;
    the evaluation drops it as a same-person same-camera match, ignores junk
    (pid -1) and keeps distractors (pid 0) as negatives.
camid = camera - 1. A tracklet's embedding is the mean of its frames'
(done by the evaluation from `tracklets`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import scipy.io

from dare_jax import errors
from dare_jax.data.readers import common
from dare_jax.data.types import ReidDataset, Split

NAME = 'mars'
INFO_FILES = ('train_name.txt', 'test_name.txt', 'tracks_train_info.mat',
              'tracks_test_info.mat', 'query_IDX.mat')
_MAT_VARS = {'tracks_train_info.mat': 'track_train_info',
             'tracks_test_info.mat': 'track_test_info',
             'query_IDX.mat': 'query_IDX'}

LAYOUT = """\
  root/bbox_train/PPPP/PPPPCcTttttFfff.jpg   (bbox_train.zip; 509,914 frames)
  root/bbox_test/PPPP/PPPPCcTttttFfff.jpg    (bbox_test.zip; 681,089 frames,
                                              folders 0000 and 00-1 included)
  root/info/train_name.txt, root/info/test_name.txt,
  root/info/tracks_train_info.mat (8298x4), root/info/tracks_test_info.mat
  (12180x4), root/info/query_IDX.mat (1x1980)  (the MARS-evaluation
  repository's info/ folder; the five files may also lie directly in root/)"""


def parse_mars_name(name: str) -> tuple[int, int]:
  """(person id, 0-based camera id) of a MARS frame name PPPPCc....jpg.

  '00-1' is junk (-1), '0000' a distractor (0).

  Raises:
    errors.DataError: the name is not PPPPCcTttttFfff.jpg.
  """
  base = os.path.basename(name)
  person = base[:4]
  if (len(base) < 6 or base[4] != 'C' or base[5] not in '0123456789' or
      not (person == '00-1' or (person.isdigit() and person.isascii()))):
    raise errors.DataError(
        f'MARS: {name!r} is not a MARS frame name (PPPPCcTttttFfff.jpg, e.g. '
        '0003C4T0003F001.jpg).')
  return -1 if person == '00-1' else int(person), int(base[5]) - 1


def _parse_names(names: Sequence[str]) -> np.ndarray:
  """int64 [N, 2]: parse_mars_name of every name, vectorised (1.2M names)."""
  if not names:
    return np.zeros((0, 2), np.int64)
  a = np.asarray(names)
  if a.dtype.kind == 'U' and a.dtype.itemsize // 4 >= 6:
    codes = a.view(np.uint32).reshape(len(a), -1).astype(np.int64)
    digits = codes[:, :6] - ord('0')
    junk = np.all(codes[:, :4] == [ord(c) for c in '00-1'], axis=1)
    is_digit = (digits >= 0) & (digits <= 9)
    ok = ((codes[:, 4] == ord('C')) & is_digit[:, 5] &
          (np.all(is_digit[:, :4], axis=1) | junk))
    if ok.all():
      pids = np.where(junk, -1, digits[:, :4] @ np.array([1000, 100, 10, 1]))
      return np.stack([pids, digits[:, 5] - 1], axis=1)
  # Slow path, which raises naming the first bad name.
  return np.array([parse_mars_name(n) for n in names], np.int64).reshape(-1, 2)


def _info_dir(root: str) -> str:
  """root/info if it holds the info files, else root (checked per file)."""
  info = os.path.join(root, 'info')
  if os.path.isdir(info) and any(
      os.path.isfile(os.path.join(info, f)) for f in INFO_FILES):
    return info
  return root


def _read_names(path: str) -> list[str]:
  with open(path) as f:
    return f.read().split()


def _load_mat(path: str, fname: str) -> np.ndarray:
  """The matrix of one of the official .mat files, as int64."""
  try:
    mat = scipy.io.loadmat(path)
  except (NotImplementedError, ValueError, OSError) as e:
    raise errors.DataError(f'MARS: cannot read {path!r} as a MATLAB v5 '
                           f'file: {e}') from e
  var = _MAT_VARS[fname]
  if var not in mat:
    arrays = [k for k in mat if not k.startswith('__')]
    if len(arrays) != 1:
      raise errors.DataError(
          f'MARS: {path!r} has no variable {var!r} (found {arrays}).')
    var = arrays[0]
  return np.asarray(mat[var]).astype(np.int64)


def _check_tracks(info: np.ndarray, names: Sequence[str], info_path: str,
            names_path: str) -> None:
  """Checks that the tracks tile the name list and agree with the names."""
  if info.ndim != 2 or info.shape[1] != 4:
    raise errors.DataError(
        f'MARS: {info_path!r} must hold an N x 4 matrix [start, end, person, '
        f'camera]; got shape {info.shape}.')
  start, end = info[:, 0], info[:, 1]
  expected_start = np.r_[1, end[:-1] + 1][:len(info)]
  bad = np.flatnonzero((start != expected_start) | (end < start))
  if bad.size:
    r = int(bad[0])
    raise errors.DataError(
        f'MARS: row {r + 1} of {info_path!r} covers names {start[r]}..'
        f'{end[r]}, expected to start at {expected_start[r]} (the tracks '
        f'must list {names_path!r} in order, 1-based, inclusive).')
  if (end[-1] if len(info) else 0) != len(names):
    raise errors.DataError(
        f'MARS: the tracks of {info_path!r} end at name '
        f'{end[-1] if len(info) else 0}, but {names_path!r} lists '
        f'{len(names)} names: the two files do not belong together.')
  ids = _parse_names(names)
  lengths = end - start + 1
  want = np.repeat(np.stack([info[:, 2], info[:, 3] - 1], axis=1), lengths,
                   axis=0)
  bad = np.flatnonzero(np.any(ids != want, axis=1))
  if bad.size:
    i = int(bad[0])
    r = int(np.searchsorted(np.cumsum(lengths), i, side='right'))
    raise errors.DataError(
        f'MARS: row {r + 1} of {info_path!r} says person {info[r, 2]}, '
        f'camera {info[r, 3]}, but its frame {names[i]!r} (line {i + 1} of '
        f'{names_path!r}) is person {ids[i, 0]}, camera {ids[i, 1] + 1}.')


def _frame_paths(root: str, folder: str, names: Sequence[str]) -> list[str]:
  """root/folder/<first 4 chars of name>/name for every name."""
  prefix = os.path.join(root, folder) + os.sep
  return [prefix + n[:4] + os.sep + n for n in names]


def _split(frame_paths: Sequence[str], info: np.ndarray,
           rows: np.ndarray) -> Split:
  """The frames of tracks `rows` (0-based), in that order."""
  rows = np.asarray(rows, np.int64)
  start, end = info[rows, 0], info[rows, 1]
  paths = []
  for a, b in zip(start.tolist(), end.tolist()):
    paths.extend(frame_paths[a - 1:b])
  lengths = end - start + 1
  return common.make_split(
      paths, np.repeat(info[rows, 2], lengths),
      np.repeat(info[rows, 3] - 1, lengths),
      np.repeat(np.arange(len(rows)), lengths))


def _check_person_folders(root: str, folder: str,
                          names: Sequence[str]) -> None:
  present = set(os.listdir(os.path.join(root, folder)))
  missing = sorted({n[:4] for n in names} - present)
  if missing:
    raise errors.DataNotFoundError(
        f'MARS: {len(missing)} person folder(s) named in the name list are '
        f'missing from {os.path.join(root, folder)!r}, e.g. '
        f'{os.path.join(root, folder, missing[0])!r}. Expected the official '
        f'layout:\n{LAYOUT}')


def read_mars(root: str) -> ReidDataset:
  """MARS in its official layout -> ReidDataset of frames with tracklets.

  Raises:
    errors.DataNotFoundError: a folder or info file is missing (named).
    errors.DataError: the info files disagree with each other or with the
      frame names (the track row and the file are named).
  """
  common.require_dir(root, '', 'MARS', LAYOUT)
  for folder in ('bbox_train', 'bbox_test'):
    common.require_dir(root, folder, 'MARS', LAYOUT)
  info_dir = _info_dir(root)
  paths = {f: common.require_file(info_dir, f, 'MARS', LAYOUT)
           for f in INFO_FILES}
  train_names = _read_names(paths['train_name.txt'])
  test_names = _read_names(paths['test_name.txt'])
  train_info = _load_mat(paths['tracks_train_info.mat'],
                         'tracks_train_info.mat')
  test_info = _load_mat(paths['tracks_test_info.mat'], 'tracks_test_info.mat')
  query_idx = _load_mat(paths['query_IDX.mat'], 'query_IDX.mat').reshape(-1)
  _check_tracks(train_info, train_names, paths['tracks_train_info.mat'],
          paths['train_name.txt'])
  _check_tracks(test_info, test_names, paths['tracks_test_info.mat'],
          paths['test_name.txt'])
  bad = np.flatnonzero((query_idx < 1) | (query_idx > len(test_info)))
  if bad.size:
    raise errors.DataError(
        f'MARS: entry {bad[0] + 1} of {paths["query_IDX.mat"]!r} is '
        f'{query_idx[bad[0]]}, not a row of the {len(test_info)} test tracks '
        f'of {paths["tracks_test_info.mat"]!r}.')
  _check_person_folders(root, 'bbox_train', train_names)
  _check_person_folders(root, 'bbox_test', test_names)
  train_paths = _frame_paths(root, 'bbox_train', train_names)
  test_paths = _frame_paths(root, 'bbox_test', test_names)
  # One stat per split: a wrong archive fails here, not mid-training (every
  # frame is checked when it is decoded).
  for frames in (train_paths, test_paths):
    if frames and not os.path.isfile(frames[0]):
      raise errors.DataNotFoundError(
          f'MARS: frame {frames[0]!r}, the first of its name list, is '
          f'missing. Expected the official layout:\n{LAYOUT}')
  return ReidDataset(
      name=NAME,
      train=_split(train_paths, train_info,
                   np.flatnonzero(train_info[:, 2] >= 1)),
      query=_split(test_paths, test_info, query_idx - 1),
      gallery=_split(test_paths, test_info, np.arange(len(test_info))))


read = read_mars
