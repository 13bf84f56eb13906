"""TFDS builders: prepared from tiny official layouts written here, then read
back by load_tfds and compared with the folder readers and
augment.load_image of the same files."""

import os

import numpy as np
from PIL import Image
import pytest
import scipy.io

tfds = pytest.importorskip('tensorflow_datasets')

from dare_jax import errors  # pylint: disable=g-import-not-at-top
from dare_jax.data import augment
from dare_jax.data import tfds_builders
from dare_jax.data.readers import cuhk01
from dare_jax.data.readers import cuhk03
from dare_jax.data.readers import mars
from dare_jax.data.readers import market

RESIZE_HW = (12, 6)
SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')


def _write_image(path, rng, fmt, hw=(20, 9)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # Noise, at a size other than RESIZE_HW, so decoding and resizing matter.
  Image.fromarray(rng.integers(0, 256, hw + (3,), dtype=np.uint8)).save(
      path, format=fmt)


def _write_market(root):
  rng = np.random.default_rng(0)
  files = {
      'bounding_box_train': ['0002_c1s1_000451_03.jpg',
                             '0002_c2s1_000551_01.jpg',
                             '0007_c3s1_000101_01.jpg',
                             '0007_c4s2_000201_02.jpg'],
      'query': ['0001_c1s1_001051_00.jpg', '0003_c2s1_000151_00.jpg'],
      'bounding_box_test': ['-1_c1s1_000401_03.jpg', '0000_c1s1_000002_01.jpg',
                            '0001_c2s1_000301_01.jpg',
                            '0003_c6s1_000601_02.jpg',
                            '0003_c1s1_000701_01.jpg'],
  }
  for folder, names in files.items():
    for n in names:
      _write_image(os.path.join(root, folder, n), rng, 'JPEG')
  return str(root)


def _assert_same(loaded, ref):
  assert loaded.name == ref.name
  for s in ('train', 'query', 'gallery'):
    got, want = getattr(loaded, s), getattr(ref, s)
    np.testing.assert_array_equal(got.pids, want.pids)
    np.testing.assert_array_equal(got.camids, want.camids)
    assert got.images.dtype == np.uint8
    assert got.images.shape == (len(want),) + RESIZE_HW + (3,)
    np.testing.assert_array_equal(
        got.images, np.stack([augment.load_image(p, RESIZE_HW)
                              for p in want.paths]))
    assert got.tracklets is None and got.paths is None


def test_market_through_tfds_equals_folder_reader(tmp_path):
  manual = _write_market(tmp_path / 'Market-1501-v15.09.15')
  data_dir = str(tmp_path / 'tfds')
  ds = tfds_builders.load_tfds('market', manual, data_dir, RESIZE_HW)
  ref = market.read_market(manual)
  _assert_same(ds, ref)
  np.testing.assert_array_equal(ds.gallery.pids, [-1, 0, 1, 3, 3])
  # Prepared once: a second call reads data_dir without the manual download.
  again = tfds_builders.load_tfds('market', '', data_dir, (8, 4))
  np.testing.assert_array_equal(again.gallery.camids, ref.gallery.camids)
  assert again.train.images.shape == (4, 8, 4, 3)
  # What TFDS stores: the original bytes, the reader's order and paths.
  builder = tfds_builders.make_builder('market', data_dir)
  assert builder.name == 'market1501'
  exs = list(tfds.as_numpy(builder.as_dataset(
      'query', decoders={'image': tfds.decode.SkipDecoding()})))
  assert sorted(e['index'] for e in exs) == [0, 1]
  for e in exs:
    path = ref.query.paths[e['index']]
    assert e['path'].decode() == os.path.relpath(path, manual)
    with open(path, 'rb') as f:
      assert e['image'] == f.read()
    assert e['tracklet_id'] == -1
  # The prepared folder is readable without this module's classes.
  ro = tfds.builder_from_directory(os.path.join(data_dir, 'market1501',
                                                '1.0.0'))
  assert ro.info.splits['gallery'].num_examples == 5


def test_real_market_jpegs_through_tfds(tmp_path):
  src = os.path.join(SHARED, 'mini_market1501')
  if not os.path.isdir(src):
    pytest.skip(f'no real Market-1501 images at {src}')
  ds = tfds_builders.load_tfds('market', src, str(tmp_path), (32, 16))
  ref = market.read_market(src)
  for s in ('train', 'query', 'gallery'):
    got, want = getattr(ds, s), getattr(ref, s)
    np.testing.assert_array_equal(got.pids, want.pids)
    np.testing.assert_array_equal(got.camids, want.camids)
    np.testing.assert_array_equal(got.images,
                                  augment.load_images(want.paths, (32, 16)))


def test_cuhk03_np_through_tfds(tmp_path):
  rng = np.random.default_rng(1)
  manual = tmp_path / 'cuhk03-np'
  files = {'bounding_box_train': ['0001_c1_1.png', '0001_c2_1.png'],
           'query': ['0002_c1_1.png'],
           'bounding_box_test': ['0002_c2_1.png', '0003_c1_2.png']}
  for variant in ('labeled', 'detected'):
    for folder, names in files.items():
      for n in names:
        _write_image(os.path.join(manual, variant, folder, n), rng, 'PNG')
  data_dir = str(tmp_path / 'tfds')
  for variant in ('labeled', 'detected'):
    ds = tfds_builders.load_tfds(f'cuhk03_{variant}', str(manual), data_dir,
                                 RESIZE_HW)
    _assert_same(ds, cuhk03.read_cuhk03(str(manual), variant))
  for variant in ('labeled', 'detected'):
    assert os.path.isdir(os.path.join(data_dir, 'cuhk03', variant, '1.0.0'))


def test_cuhk01_custom_seed_config(tmp_path):
  manual = tmp_path / 'CUHK01'
  rng = np.random.default_rng(2)
  for person in range(1, 7):
    for k in range(1, 5):
      _write_image(os.path.join(manual, 'campus', f'{person:04d}{k:03d}.png'),
                   rng, 'PNG', hw=(16, 6))
  data_dir = str(tmp_path / 'tfds')
  ds = tfds_builders.load_tfds('cuhk01', str(manual), data_dir, RESIZE_HW,
                               split_seed=3, cuhk01_num_test_ids=3)
  _assert_same(ds, cuhk01.read_cuhk01(str(manual), split_seed=3,
                                      num_test_ids=3))
  assert os.path.isdir(os.path.join(data_dir, 'cuhk01', 'seed3_test3'))


def test_mars_builder_keeps_tracklets_and_load_tfds_refuses(tmp_path):
  rng = np.random.default_rng(3)
  manual = tmp_path / 'MARS'
  train = ['0001C1T0001F001.jpg', '0001C1T0001F002.jpg',
           '0001C2T0002F001.jpg']
  test = ['00-1C1T0001F001.jpg', '0003C1T0001F001.jpg',
          '0003C1T0001F002.jpg', '0003C2T0002F001.jpg']
  for folder, names in (('bbox_train', train), ('bbox_test', test)):
    for n in names:
      _write_image(os.path.join(manual, folder, n[:4], n), rng, 'JPEG')
  info = manual / 'info'
  info.mkdir()
  (info / 'train_name.txt').write_text('\n'.join(train) + '\n')
  (info / 'test_name.txt').write_text('\n'.join(test) + '\n')
  scipy.io.savemat(info / 'tracks_train_info.mat', {'track_train_info': (
      np.asarray([[1, 2, 1, 1], [3, 3, 1, 2]], np.int32))})
  scipy.io.savemat(info / 'tracks_test_info.mat', {'track_test_info': (
      np.asarray([[1, 1, -1, 1], [2, 3, 3, 1], [4, 4, 3, 2]], np.int32))})
  scipy.io.savemat(info / 'query_IDX.mat',
                   {'query_IDX': np.asarray([[2]], np.uint16)})
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(errors.ConfigError, match='data.source=folder'):
    tfds_builders.load_tfds('mars', str(manual), data_dir, RESIZE_HW)
  builder = tfds_builders.make_builder('mars', data_dir)
  tfds_builders.prepare(builder, str(manual))
  ref = mars.read_mars(str(manual))
  for split in ('train', 'query', 'gallery'):
    exs = sorted(tfds.as_numpy(builder.as_dataset(
        split, decoders={'image': tfds.decode.SkipDecoding()})),
                 key=lambda e: e['index'])
    want = getattr(ref, split)
    assert [e['tracklet_id'] for e in exs] == want.tracklets.tolist()
    assert [e['person_id'] for e in exs] == want.pids.tolist()
    assert [e['camera_id'] for e in exs] == want.camids.tolist()
  assert [e['person_id'] for e in exs] == [-1, 3, 3, 3]


def test_errors(tmp_path):
  with pytest.raises(errors.DataNotFoundError,
                     match='(?s)not prepared.*Market-1501-v15.09.15.zip'):
    tfds_builders.load_tfds('market', str(tmp_path / 'nowhere'),
                            str(tmp_path / 'tfds'), RESIZE_HW)
  with pytest.raises(errors.ConfigError, match='no builder'):
    tfds_builders.load_tfds('folder', str(tmp_path), str(tmp_path / 'tfds'),
                            RESIZE_HW)
  for cls in (tfds_builders.Market1501, tfds_builders.DukemtmcReid,
              tfds_builders.Cuhk03, tfds_builders.Mars, tfds_builders.Cuhk01):
    assert 'manual_dir' in cls.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert tfds_builders.Cuhk03.name == 'cuhk03'
  assert tfds_builders.DukemtmcReid.name == 'dukemtmc_reid'
