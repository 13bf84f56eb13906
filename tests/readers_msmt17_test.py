"""MSMT17: both releases (V1, V2), found from the release folder or its
parent, against tiny look-alikes written here; expectations by hand."""

import os

import numpy as np
import pytest

from configs import default
from dare_jax import configlib
from dare_jax import errors
from dare_jax.data import datasets
from dare_jax.data.readers import msmt17
from tests.image_trees import write_image

# list file -> lines `RELATIVE_PATH PID`, as the releases write them.
LISTS = {
    'list_train.txt': [
        '0000/0000_000_01_0303morning_0015_0.jpg 0',
        '0000/0000_001_03_0303morning_0020_1.jpg 0',
        '0001/0001_000_15_0303noon_0100_0.jpg 1',
        '0001/0001_002_07_0303noon_0120_2.jpg 1',
    ],
    'list_val.txt': [
        '0000/0000_002_02_0303morning_0030_0.jpg 0',
        '0001/0001_003_12_0303noon_0130_1_ex.jpg 1',
    ],
    'list_query.txt': [
        '0000/0000_000_01_0303morning_0016_2.jpg 0',
        '0002/0002_000_10_0304afternoon_0500_0.jpg 2',
    ],
    'list_gallery.txt': [
        '0000/0000_001_05_0303morning_0040_0.jpg 0',
        '0002/0002_001_11_0304afternoon_0510_1.jpg 2',
        '0001/0001_000_09_0303noon_0050_0.jpg 1',
    ],
}
# Written out: pids are the lists' + 1, camids the third field - 1.
EXPECTED = {
    'list_train.txt': ([1, 1, 2, 2], [0, 2, 14, 6]),
    'list_val.txt': ([1, 2], [1, 11]),
    'list_query.txt': ([1, 3], [0, 9]),
    'list_gallery.txt': ([1, 3, 2], [4, 10, 8]),
}


def make_release(parent, release='MSMT17_V1', lists=None):
  """parent/release/ with its two image folders and four list files."""
  folder = os.path.join(str(parent), release)
  train, test = msmt17.RELEASES[release]
  os.makedirs(folder, exist_ok=True)
  for list_name, lines in (lists or LISTS).items():
    sub = train if list_name in ('list_train.txt', 'list_val.txt') else test
    with open(os.path.join(folder, list_name), 'w') as f:
      f.write(''.join(line + '\n' for line in lines) + '\n')  # a blank end
    for i, line in enumerate(lines):
      write_image(os.path.join(folder, sub, line.split()[0]), seed=i,
                  size=(4, 8))
  return folder


def expected_paths(folder, release, list_name):
  train, test = msmt17.RELEASES[release]
  sub = train if list_name in ('list_train.txt', 'list_val.txt') else test
  return [os.path.join(folder, sub, line.split()[0])
          for line in LISTS[list_name]]


def assert_split(split, folder, release, *list_names):
  paths = sum((expected_paths(folder, release, n) for n in list_names), [])
  pids = sum((EXPECTED[n][0] for n in list_names), [])
  camids = sum((EXPECTED[n][1] for n in list_names), [])
  assert list(split.paths) == paths
  np.testing.assert_array_equal(split.pids, pids)
  np.testing.assert_array_equal(split.camids, camids)
  assert split.pids.dtype == split.camids.dtype == np.int64
  assert split.tracklets is None
  assert all(os.path.isfile(p) for p in split.paths)


@pytest.mark.parametrize('release,where', [
    ('MSMT17_V1', 'release'), ('MSMT17_V1', 'parent'),
    ('MSMT17_V2', 'release'), ('MSMT17_V2', 'parent'),
    # The V2 archive extracts to MSMT17_V2/MSMT17_V2/: either folder works.
    ('MSMT17_V2', 'doubled'), ('MSMT17_V2', 'doubled_parent'),
])
def test_both_releases_read_exactly_as_listed(tmp_path, release, where):
  parent = tmp_path / release if where.startswith('doubled') else tmp_path
  folder = make_release(parent, release)
  root = {'release': folder, 'parent': str(tmp_path),
          'doubled': str(tmp_path / release),
          'doubled_parent': str(tmp_path)}[where]
  assert msmt17.resolve_root(root) == (folder, release)
  ds = msmt17.read_msmt17(root)
  assert ds.name == 'msmt17'
  # Default: list_train + list_val (the official training set), in order.
  assert_split(ds.train, folder, release, 'list_train.txt', 'list_val.txt')
  assert_split(ds.query, folder, release, 'list_query.txt')
  assert_split(ds.gallery, folder, release, 'list_gallery.txt')
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (6, 2, 3)


def test_val_left_out_of_train_on_request(tmp_path):
  folder = make_release(tmp_path, 'MSMT17_V2')
  ds = msmt17.read_msmt17(str(tmp_path), val_in_train=False)
  assert_split(ds.train, folder, 'MSMT17_V2', 'list_train.txt')
  assert_split(ds.query, folder, 'MSMT17_V2', 'list_query.txt')
  assert_split(ds.gallery, folder, 'MSMT17_V2', 'list_gallery.txt')


def test_v1_first_when_both_releases_are_there(tmp_path):
  v1 = make_release(tmp_path, 'MSMT17_V1')
  make_release(tmp_path, 'MSMT17_V2')
  assert msmt17.resolve_root(str(tmp_path)) == (v1, 'MSMT17_V1')


def test_missing_folder_and_lists_are_all_named(tmp_path):
  folder = make_release(tmp_path, 'MSMT17_V2')
  os.remove(os.path.join(folder, 'list_gallery.txt'))
  os.rename(os.path.join(folder, 'mask_test_v2'),
            os.path.join(folder, 'test'))
  with pytest.raises(errors.DataNotFoundError) as e:
    msmt17.read_msmt17(str(tmp_path))
  msg = str(e.value)
  assert msg.startswith(f'MSMT17 (MSMT17_V2): mask_test_v2/, list_gallery.txt '
                        f'missing in {folder!r}. Expected the official layout')
  for part in ('MSMT17_V1/', 'mask_train_v2/', 'list_query.txt', '32,621'):
    assert part in msg  # the layout is printed


def test_no_release_at_all(tmp_path):
  os.makedirs(tmp_path / 'bounding_box_train')  # e.g. Market given instead
  with pytest.raises(errors.DataNotFoundError,
                     match='holds neither MSMT17_V1/ nor MSMT17_V2/') as e:
    msmt17.read_msmt17(str(tmp_path))
  assert 'list_train.txt, list_val.txt' in str(e.value)


def test_missing_first_image_is_named(tmp_path):
  folder = make_release(tmp_path)
  first = expected_paths(folder, 'MSMT17_V1', 'list_query.txt')[0]
  os.remove(first)
  with pytest.raises(errors.DataNotFoundError,
                     match=f'{first!r}, the first image of list_query.txt'):
    msmt17.read_msmt17(folder)


@pytest.mark.parametrize('line,match', [
    ('0000/0000_000_01_0303morning_0015_0.jpg', 'RELATIVE_PATH PID'),
    ('0000/0000_000_16_0303morning_0015_0.jpg 0', 'camera CC in 01..15'),
    ('0000/img_0001.jpg 0', 'not an MSMT17 file name'),
])
def test_malformed_list_line_is_named(tmp_path, line, match):
  lists = dict(LISTS, **{'list_val.txt': LISTS['list_val.txt'] + [line]})
  folder = make_release(tmp_path, lists=lists)
  with pytest.raises(errors.DataError, match=match) as e:
    msmt17.read_msmt17(folder)
  assert 'list_val.txt:3' in str(e.value)


def test_load_dataset_and_the_config(tmp_path):
  folder = make_release(tmp_path, 'MSMT17_V1')
  from configs import msmt17 as msmt17_config  # pylint: disable=g-import-not-at-top
  c = msmt17_config.get_config()
  assert c.data.dataset == 'msmt17' and c.data.msmt17_val_in_train
  assert c.model.require_pretrained and c.eval.normalize
  configlib.validate(c)
  c.data.root = str(tmp_path)
  ds = datasets.load_dataset(c.data)
  assert ds.name == 'msmt17'
  assert_split(ds.train, folder, 'MSMT17_V1', 'list_train.txt',
               'list_val.txt')
  assert_split(ds.gallery, folder, 'MSMT17_V1', 'list_gallery.txt')
  data = default.get_config().data
  data.dataset, data.root = 'msmt17', folder
  data.msmt17_val_in_train, data.bad_images = False, 'skip'  # decodes all
  ds = datasets.load_dataset(data)
  assert_split(ds.train, folder, 'MSMT17_V1', 'list_train.txt')
  assert_split(ds.query, folder, 'MSMT17_V1', 'list_query.txt')
