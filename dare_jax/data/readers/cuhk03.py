"""CUHK03 under the new protocol of Zhong et al. (CVPR 2017, "re-ranking").

767 training and 700 test identities; one query per test identity and
camera: 1,400 queries. Two variants of the boxes: 'labeled' (hand-drawn;
7,368 train / 1,400 query / 5,328 gallery images) and 'detected' (DPM;
7,365 / 1,400 / 5,332).

Two layouts are accepted under root/, detected automatically (the first
that is present wins):

(a) The protocol's split files beside images extracted from the released
    cuhk-03.mat (e.g. by torchreid's CUHK03 extraction, which uses the same
    names):
      root/cuhk03_new_protocol_config_labeled.mat   (or _detected.mat)
      root/images_labeled/1_001_1_01.png ...       (or images_detected/)
    (the protocol repository's save_img.m names the folder cuhk03_labeled/
    or cuhk03_detected/ instead; both are accepted.)
    The .mat file (MATLAB v5, from github.com/zhunzhong07/person-re-ranking)
    holds `filelist` (cell of names campus_person_camera_image.png),
    `labels` (person id), `camId` (1 or 2), and `train_idx`, `query_idx`,
    `gallery_idx`: 1-based indices into filelist. pid = labels,
    camid = camId - 1.
(b) The CUHK03-NP release (Market-1501-style folders and names):
      root/labeled/{bounding_box_train,query,bounding_box_test}/PPPP_cC_*.png
      root/detected/{bounding_box_train,query,bounding_box_test}/...
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from dare_jax import errors
from dare_jax.data.readers import common
from dare_jax.data.types import ReidDataset

VARIANTS = ('labeled', 'detected')
# (train, query, gallery) images of the new protocol, for the docs and errors.
EXPECTED_COUNTS = {'labeled': (7368, 1400, 5328),
                   'detected': (7365, 1400, 5332)}
_MAT_FIELDS = ('filelist', 'labels', 'camId', 'train_idx', 'query_idx',
               'gallery_idx')


def config_mat_name(variant: str) -> str:
  return f'cuhk03_new_protocol_config_{variant}.mat'


def layout(variant: str) -> str:
  """The two accepted layouts, as printed in the errors."""
  tr, q, g = EXPECTED_COUNTS[variant]
  return (
      f'either (a) the new-protocol split file with the images extracted '
      f'from cuhk-03.mat:\n'
      f'  root/{config_mat_name(variant)}  (github.com/zhunzhong07/'
      f'person-re-ranking, evaluation/data/CUHK03; fields filelist, labels, '
      f'camId, train_idx, query_idx, gallery_idx: {tr} / {q} / {g} '
      f'images)\n'
      f'  root/images_{variant}/1_001_1_01.png ...  (campus_person_camera_'
      f'image.png, as torchreid extracts them; or root/cuhk03_{variant}/ '
      f'as the protocol repository\'s save_img.m does)\n'
      f'or (b) the CUHK03-NP release:\n'
      f'  root/{variant}/bounding_box_train/  ({tr} images)\n'
      f'  root/{variant}/query/  ({q} images)\n'
      f'  root/{variant}/bounding_box_test/  ({g} images)\n'
      f'  with Market-1501-style names PPPP_cC_....png')


def _check_variant(variant: str) -> None:
  if variant not in VARIANTS:
    raise errors.ConfigError(
        f'CUHK03: variant={variant!r}; use one of {VARIANTS}.')


def _cell_str(x) -> str:
  """A MATLAB string as loadmat returns it inside a cell: array(['a.png'])."""
  while isinstance(x, np.ndarray):
    if x.size != 1:
      if x.dtype.kind == 'U' and x.ndim == 1:  # char matrix rows
        return ''.join(x.tolist())
      raise ValueError(f'not a string: {x!r}')
    x = x.reshape(-1)[0]
  return str(x)


def _read_protocol(root: str, variant: str) -> ReidDataset:
  """Layout (a): the split .mat file and the extracted images."""
  name = f'cuhk03_{variant}'
  lay = layout(variant)
  mat_path = common.require_file(root, config_mat_name(variant), 'CUHK03', lay)
  # torchreid's extraction writes images_<variant>/; the protocol
  # repository's own save_img.m writes cuhk03_<variant>/ (same names).
  alt = os.path.join(root, f'cuhk03_{variant}')
  img_dir = alt if (not os.path.isdir(os.path.join(root, f'images_{variant}'))
                    and os.path.isdir(alt)) else common.require_dir(
                        root, f'images_{variant}', 'CUHK03', lay)
  try:
    mat = scipy.io.loadmat(mat_path)
  except (NotImplementedError, ValueError, OSError) as e:
    raise errors.DataError(
        f'CUHK03: cannot read {mat_path!r} as a MATLAB v5 file ({e}); use '
        'the file from the new-protocol release as it is.') from e
  missing = [f for f in _MAT_FIELDS if f not in mat]
  if missing:
    raise errors.DataError(
        f'CUHK03: {mat_path!r} lacks the field(s) {missing}; expected '
        f'{list(_MAT_FIELDS)}.')
  try:
    filelist = [_cell_str(x) for x in np.asarray(mat['filelist']).reshape(-1)]
  except ValueError as e:
    raise errors.DataError(
        f'CUHK03: {mat_path!r}: filelist must be a cell of file names '
        f'({e}).') from e
  n = len(filelist)
  labels = np.asarray(mat['labels']).reshape(-1).astype(np.int64)
  cams = np.asarray(mat['camId']).reshape(-1).astype(np.int64)
  if len(labels) != n or len(cams) != n:
    raise errors.DataError(
        f'CUHK03: {mat_path!r} lists {n} files but {len(labels)} labels and '
        f'{len(cams)} camIds.')
  if n and not np.all((cams == 1) | (cams == 2)):
    bad = int(np.flatnonzero((cams != 1) & (cams != 2))[0])
    raise errors.DataError(
        f'CUHK03: {mat_path!r}: camId of {filelist[bad]!r} is {cams[bad]}; '
        'expected 1 or 2.')
  present = set(os.listdir(img_dir))
  splits = {}
  for split in ('train', 'query', 'gallery'):
    idx = np.asarray(mat[f'{split}_idx']).reshape(-1).astype(np.int64)
    bad = np.flatnonzero((idx < 1) | (idx > n))
    if bad.size:
      raise errors.DataError(
          f'CUHK03: {mat_path!r}: {split}_idx[{bad[0]}] = {idx[bad[0]]} is '
          f'not a 1-based index into the {n} files of filelist.')
    idx = idx - 1
    absent = [filelist[i] for i in idx if filelist[i] not in present]
    if absent:
      raise errors.DataNotFoundError(
          f'CUHK03: {len(absent)} image(s) of {split}_idx are missing from '
          f'{img_dir!r}, e.g. {os.path.join(img_dir, absent[0])!r}. Expected '
          f'{lay}')
    splits[split] = common.make_split(
        [os.path.join(img_dir, filelist[i]) for i in idx], labels[idx],
        cams[idx] - 1)
  return ReidDataset(name=name, **splits)


def _read_np(root: str, variant: str) -> ReidDataset:
  """Layout (b): CUHK03-NP, Market-1501-style folders and names."""
  from dare_jax.data.readers import market  # pylint: disable=g-import-not-at-top
  return market.read_market_style(
      os.path.join(root, variant), f'cuhk03_{variant}', layout(variant),
      dataset=f'CUHK03 ({variant})')


def detect_layout(root: str, variant: str) -> str:
  """'protocol' (layout a), 'np' (layout b), or DataNotFoundError."""
  _check_variant(variant)
  common.require_dir(root, '', 'CUHK03', layout(variant))
  if os.path.isfile(os.path.join(root, config_mat_name(variant))):
    return 'protocol'
  if os.path.isdir(os.path.join(root, variant)):
    return 'np'
  raise errors.DataNotFoundError(
      f'CUHK03 ({variant}): neither {config_mat_name(variant)!r} nor the '
      f'folder {variant!r} is in {root!r}. Expected {layout(variant)}')


def read_cuhk03(root: str, variant: str = 'labeled') -> ReidDataset:
  """CUHK03 new protocol -> ReidDataset named 'cuhk03_<variant>' (paths).

  Raises:
    errors.ConfigError: an unknown variant.
    errors.DataNotFoundError: neither layout is present, or a folder / file
      of the detected layout is missing (named).
    errors.DataError: a malformed split file or file name.
  """
  if detect_layout(root, variant) == 'protocol':
    return _read_protocol(root, variant)
  return _read_np(root, variant)


read = read_cuhk03
