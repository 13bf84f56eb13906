"""Image re-ID readers: Market-1501, DukeMTMC-reID, CUHK01, a folder of your
own (Market names or a CSV manifest), and dropping undecodable images.

Each reader reads a small folder that the test writes in the dataset's
official layout; expectations are written out by hand. The real samples in
../shared/data are used when present.
"""

import os
import re

import numpy as np
import pytest

from dare_jax import errors
from dare_jax.data import numpy_pipeline as pipeline
from dare_jax.data import spec
from dare_jax.data.readers import bad_images
from dare_jax.data.readers import cuhk01
from dare_jax.data.readers import folder
from dare_jax.data.readers import market
from dare_jax.data.types import ReidDataset, Split
from tests.image_trees import MARKET_TREE, corrupt, write_image, write_tree

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
MINI_MARKET = os.path.join(SHARED, 'mini_market1501')
CUHK01_CAMPUS = os.path.join(SHARED, 'cuhk01', 'campus')


def names(split):
  return [os.path.basename(p) for p in split.paths]


# ----------------------------------------------------------------------------
# Market-1501 / DukeMTMC-reID.

def test_market_official_layout(tmp_path):
  root = tmp_path / 'Market-1501-v15.09.15'
  write_tree(root, MARKET_TREE)
  ds = market.read_market(str(root))
  assert ds.name == 'market'
  # Train keeps people only, sorted by name.
  assert names(ds.train) == ['0002_c1s1_000451_03.jpg',
                             '0002_c2s1_000551_01.jpg',
                             '0007_c3s3_077344_04.jpg',
                             '0007_c6s3_071002_01.jpg']
  assert ds.train.pids.tolist() == [2, 2, 7, 7]
  assert ds.train.camids.tolist() == [0, 1, 2, 5]
  assert names(ds.query) == ['0001_c1s1_001051_00.jpg',
                             '0003_c2s1_000301_00.jpg']
  assert ds.query.pids.tolist() == [1, 3]
  assert ds.query.camids.tolist() == [0, 1]
  # The gallery keeps junk (-1) and distractors (0) as they are.
  assert names(ds.gallery) == ['-1_c1s1_000401_03.jpg',
                               '0000_c6s1_000001_01.jpg',
                               '0001_c1s1_001101_01.jpg',
                               '0001_c4s1_000101_02.jpg',
                               '0003_c5s1_000326_01.jpg']
  assert ds.gallery.pids.tolist() == [-1, 0, 1, 1, 3]
  assert ds.gallery.camids.tolist() == [0, 5, 0, 3, 4]
  assert ds.gallery.paths[0] == os.path.join(
      str(root), 'bounding_box_test', '-1_c1s1_000401_03.jpg')
  for s in (ds.train, ds.query, ds.gallery):
    assert s.pids.dtype == np.int64 and s.camids.dtype == np.int64
    assert s.images is None and s.tracklets is None
  # The folder holding the archive works too, with the same result.
  ds2 = market.read_market(str(tmp_path))
  assert ds2.gallery.paths == ds.gallery.paths
  assert ds2.train.paths == ds.train.paths


def test_duke_official_layout(tmp_path):
  root = tmp_path / 'DukeMTMC-reID'
  write_tree(root, {
      'bounding_box_train': ['0001_c2_f0046182.jpg', '0001_c6_f0030000.jpg',
                             '0003_c8_f0001234.jpg', '0003_c1_f0000001.jpg'],
      'query': ['0005_c2_f0046985.jpg'],
      'bounding_box_test': ['0005_c2_f0046999.jpg', '0005_c5_f0050000.jpg',
                            '0000_c7_f0000010.jpg', '4000_c3_f0001111.jpg'],
  })
  ds = market.read_duke(str(tmp_path))  # the parent of the archive
  assert ds.name == 'duke'
  assert names(ds.train) == ['0001_c2_f0046182.jpg', '0001_c6_f0030000.jpg',
                             '0003_c1_f0000001.jpg', '0003_c8_f0001234.jpg']
  assert ds.train.pids.tolist() == [1, 1, 3, 3]
  assert ds.train.camids.tolist() == [1, 5, 0, 7]
  assert ds.query.pids.tolist() == [5] and ds.query.camids.tolist() == [1]
  assert names(ds.gallery) == ['0000_c7_f0000010.jpg', '0005_c2_f0046999.jpg',
                               '0005_c5_f0050000.jpg', '4000_c3_f0001111.jpg']
  assert ds.gallery.pids.tolist() == [0, 5, 5, 4000]
  assert ds.gallery.camids.tolist() == [6, 1, 4, 2]


def test_market_missing_subfolder_names_it_and_the_layout(tmp_path):
  write_tree(tmp_path, {k: v for k, v in MARKET_TREE.items()
                        if k != 'query'})
  with pytest.raises(errors.DataNotFoundError) as e:
    market.read_market(str(tmp_path))
  msg = str(e.value)
  assert os.path.join(str(tmp_path), 'query') in msg
  assert '12,936' in msg and '751' in msg and '3,368' in msg
  assert '19,732' in msg
  with pytest.raises(errors.DataNotFoundError, match='16,522') as e:
    market.read_duke(str(tmp_path / 'nothing_here'))
  assert 'bounding_box_train' in str(e.value)


def test_market_bad_names_and_empty_split(tmp_path):
  tree = dict(MARKET_TREE, query=['0001_c1s1_001051_00.jpg', 'img_12.jpg'])
  write_tree(tmp_path / 'a', tree)
  with pytest.raises(errors.DataError, match='img_12.jpg'):
    market.read_market(str(tmp_path / 'a'))
  # A Duke name is not a Market name (the wrong dataset's folder).
  tree = dict(MARKET_TREE, query=['0005_c2_f0046985.jpg'])
  write_tree(tmp_path / 'b', tree)
  with pytest.raises(errors.DataError, match='0005_c2_f0046985.jpg'):
    market.read_market(str(tmp_path / 'b'))
  # Market has 6 cameras, Duke 8.
  tree = dict(MARKET_TREE, query=['0001_c7s1_001051_00.jpg'])
  write_tree(tmp_path / 'c', tree)
  with pytest.raises(errors.DataError, match='0001_c7s1_001051_00.jpg'):
    market.read_market(str(tmp_path / 'c'))
  # An empty split (only Thumbs.db) names its folder.
  tree = dict(MARKET_TREE, query=['Thumbs.db'])
  write_tree(tmp_path / 'd', tree)
  with pytest.raises(errors.DataError, match=re.escape(
      os.path.join(str(tmp_path / 'd'), 'query'))):
    market.read_market(str(tmp_path / 'd'))
  # A train split of distractors and junk only.
  tree = dict(MARKET_TREE, bounding_box_train=['0000_c1s1_000001_01.jpg'])
  write_tree(tmp_path / 'e', tree)
  with pytest.raises(errors.DataError, match='bounding_box_train'):
    market.read_market(str(tmp_path / 'e'))


# ----------------------------------------------------------------------------
# A folder of your own: Market names.


def test_read_folder_market_names(tmp_path):
  write_tree(tmp_path, {
      'bounding_box_train': ['0010_c1_a.png', '0010_c3_b.png', '0011_c2.jpg',
                             'notes.txt'],
      'query': ['0020_c1_q.jpg'],
      'bounding_box_test': ['0020_c2_g.jpg', '0020_c1_same_cam.jpg',
                            '0000_c1_x.jpg', '-1_c2_y.jpg'],
  })
  ds = folder.read_folder(str(tmp_path))
  assert ds.name == 'folder'
  assert names(ds.train) == ['0010_c1_a.png', '0010_c3_b.png', '0011_c2.jpg']
  assert ds.train.pids.tolist() == [10, 10, 11]
  assert ds.train.camids.tolist() == [0, 2, 1]
  assert ds.query.pids.tolist() == [20] and ds.query.camids.tolist() == [0]
  assert names(ds.gallery) == ['-1_c2_y.jpg', '0000_c1_x.jpg',
                               '0020_c1_same_cam.jpg', '0020_c2_g.jpg']
  assert ds.gallery.pids.tolist() == [-1, 0, 20, 20]
  assert ds.gallery.camids.tolist() == [1, 0, 0, 1]


def test_read_folder_errors(tmp_path):
  write_tree(tmp_path, {'bounding_box_train': ['0010_c1_a.png'],
                        'query': ['person7.jpg'],
                        'bounding_box_test': ['0020_c2_g.jpg']})
  with pytest.raises(errors.DataError, match='person7.jpg'):
    folder.read_folder(str(tmp_path))
  with pytest.raises(errors.DataNotFoundError,
                     match='bounding_box_train.*missing'):
    folder.read_folder(str(tmp_path / 'query'))


# ----------------------------------------------------------------------------
# A folder of your own: CSV manifest.


def write_csv(path, text):
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


def test_manifest_with_split_column(tmp_path):
  for n in ('a1.jpg', 'a2.jpg', 'b1.jpg', 'b2.jpg', 'c1.jpg', 'c2.jpg',
            'c3.jpg', 'd.jpg', 'j.jpg', 'sub/t.jpg'):
    write_image(tmp_path / 'img' / n)
  abs_path = write_image(tmp_path / 'elsewhere' / 'x.png')
  csv = write_csv(tmp_path / 'img' / 'my.csv', (
      'split,camera,path,person\n'
      'train,0,a1.jpg,1\n'
      'train,1,a2.jpg,1\n'
      'train,,b1.jpg,2\n'  # unknown camera
      'train,-1,b2.jpg,2\n'
      '\n'  # a blank line is skipped
      'query,0,c1.jpg,3\n'
      'gallery,1,c2.jpg,3\n'
      'gallery,0,c3.jpg,3\n'
      'gallery,2,d.jpg,0\n'
      'gallery,,j.jpg,-1\n'
      'train,3,sub/t.jpg,0\n'  # a train distractor is dropped
      f'Gallery , 4 ,{abs_path},3\n'))
  ds = folder.read_manifest(csv)
  base = str(tmp_path / 'img')
  assert ds.train.paths == [os.path.join(base, n) for n in
                            ('a1.jpg', 'a2.jpg', 'b1.jpg', 'b2.jpg')]
  assert ds.train.pids.tolist() == [1, 1, 2, 2]
  assert ds.train.camids.tolist() == [0, 1, -1, -1]
  assert ds.query.paths == [os.path.join(base, 'c1.jpg')]
  assert ds.query.pids.tolist() == [3] and ds.query.camids.tolist() == [0]
  assert ds.gallery.paths == [os.path.join(base, n) for n in
                              ('c2.jpg', 'c3.jpg', 'd.jpg', 'j.jpg')] + [
                                  abs_path]
  assert ds.gallery.pids.tolist() == [3, 3, 0, -1, 3]
  assert ds.gallery.camids.tolist() == [1, 0, 2, -1, 4]
  # With root: paths relative to it, not to the CSV's folder.
  csv2 = write_csv(tmp_path / 'm2.csv',
                   'path,person,camera,split\na1.jpg,1,0,train\n'
                   'a2.jpg,1,1,train\nc1.jpg,3,0,query\nc2.jpg,3,1,gallery\n')
  ds2 = folder.read_manifest(csv2, root=base)
  assert ds2.query.paths == [os.path.join(base, 'c1.jpg')]
  assert ds2.train.paths == [os.path.join(base, 'a1.jpg'),
                             os.path.join(base, 'a2.jpg')]


def test_manifest_without_split_column(tmp_path):
  # People 1..6 (person 4 with a single image), a distractor, a junk image.
  rows = [('p5_a.jpg', 5, 0), ('p1_a.jpg', 1, 0), ('p1_b.jpg', 1, 1),
          ('p1_c.jpg', 1, ''), ('p2_a.jpg', 2, 1), ('p2_b.jpg', 2, 0),
          ('p3_a.jpg', 3, 2), ('p3_b.jpg', 3, 2), ('p4_a.jpg', 4, 0),
          ('p5_b.jpg', 5, 1), ('p6_a.jpg', 6, -1), ('p6_b.jpg', 6, 3),
          ('dis.jpg', 0, 1), ('junk.jpg', -1, '')]
  for n, _, _ in rows:
    write_image(tmp_path / n)
  text = 'person,path,camera\n' + ''.join(
      f'{p},{n},{c}\n' for n, p, c in rows)
  csv = write_csv(tmp_path / 'all.csv', text)
  for seed in (0, 1, 2):
    ds = folder.read_manifest(csv, split_seed=seed)
    perm = np.random.default_rng(seed).permutation(np.arange(1, 7))
    train_ids, test_ids = set(perm[:3].tolist()), set(perm[3:].tolist())
    cam = lambda c: -1 if c == '' else c
    exp_train = [r for r in rows if r[1] in train_ids]
    assert names(ds.train) == [r[0] for r in exp_train]
    assert ds.train.pids.tolist() == [r[1] for r in exp_train]
    assert ds.train.camids.tolist() == [cam(r[2]) for r in exp_train]
    # Query: each test person's first listed image (not person 4: 1 image).
    firsts = {'p5_a.jpg', 'p1_a.jpg', 'p2_a.jpg', 'p3_a.jpg', 'p6_a.jpg'}
    exp_query = [r for r in rows if r[1] in test_ids and r[0] in firsts]
    exp_gallery = [r for r in rows if (r[1] in test_ids and r[0] not in
                                       firsts) or r[1] < 1]
    assert names(ds.query) == [r[0] for r in exp_query]
    assert ds.query.pids.tolist() == [r[1] for r in exp_query]
    assert ds.query.camids.tolist() == [cam(r[2]) for r in exp_query]
    assert names(ds.gallery) == [r[0] for r in exp_gallery]
    assert ds.gallery.pids.tolist() == [r[1] for r in exp_gallery]
    assert ds.gallery.camids.tolist() == [cam(r[2]) for r in exp_gallery]
  a = folder.read_manifest(csv, split_seed=0)
  b = folder.read_manifest(csv, root='', split_seed=0)  # '' = CSV's folder
  assert a.train.paths == b.train.paths and a.query.paths == b.query.paths


@pytest.mark.parametrize('text,match', [
    ('path,person,camera\na.jpg,1,0\na.jpg,x,0\n',
     "my.csv line 3: person='x' is not an integer"),
    ('path,person,camera\na.jpg,1,0\n\na.jpg,1,cam2\n',
     "my.csv line 4: camera='cam2' is not an integer"),
    ('path,person,camera\na.jpg,-2,0\n', 'my.csv line 2: person=-2'),
    ('path,person,camera\na.jpg,1,-3\n', 'my.csv line 2: camera=-3'),
    ('path,person,camera,split\na.jpg,1,0,val\n',
     "my.csv line 2: split='val' must be one of train, query, gallery"),
    ('path,person,camera,split\na.jpg,0,0,query\n',
     'my.csv line 2: a query must be a person'),
    ('path,person,camera\na.jpg,1\n', 'my.csv line 2: 2 fields'),
    ('path,person,camera\n,1,0\n', 'my.csv line 2: path is empty'),
    ('path,person,camera,view,notes\na.jpg,1,0,f,n\n',
     'my.csv line 1: .*unknown columns: view, notes'),
    ('path,camera\na.jpg,0\n', 'my.csv line 1: .*missing: person'),
    ('', 'my.csv: the manifest is empty'),
    ('path,person,camera\n', 'my.csv: the manifest lists no images'),
])
def test_manifest_errors_name_line_and_field(tmp_path, text, match):
  write_image(tmp_path / 'a.jpg')
  csv = write_csv(tmp_path / 'my.csv', text)
  with pytest.raises(errors.DataError, match=match):
    folder.read_manifest(csv)


def test_manifest_missing_files_and_empty_split(tmp_path):
  write_image(tmp_path / 'a.jpg')
  text = 'path,person,camera\na.jpg,1,0\n' + ''.join(
      f'gone{i}.jpg,1,0\n' for i in range(7))
  csv = write_csv(tmp_path / 'my.csv', text)
  with pytest.raises(errors.DataNotFoundError) as e:
    folder.read_manifest(csv)
  msg = str(e.value)
  assert '7 of 8 image files are missing' in msg
  assert os.path.join(str(tmp_path), 'gone0.jpg') in msg
  assert 'gone4.jpg' in msg and 'gone5.jpg' not in msg
  with pytest.raises(errors.DataNotFoundError, match='nope.csv'):
    folder.read_manifest(str(tmp_path / 'nope.csv'))
  csv = write_csv(tmp_path / 'q.csv', 'path,person,camera,split\n'
                  'a.jpg,1,0,train\na.jpg,2,0,gallery\n')
  with pytest.raises(errors.DataError, match='the query split is empty'):
    folder.read_manifest(csv)


# ----------------------------------------------------------------------------
# CUHK01.


def fake_cuhk01(folder_path, num_ids=971, skip=()):
  """Empty files with CUHK01 names: the reader never decodes."""
  os.makedirs(folder_path, exist_ok=True)
  for i in range(1, num_ids + 1):
    for n in range(1, 5):
      name = f'{i:04d}{n:03d}.png'
      if name not in skip:
        open(os.path.join(folder_path, name), 'wb').close()


def test_cuhk01_split(tmp_path):
  fake_cuhk01(tmp_path / 'campus')
  ds = cuhk01.read_cuhk01(str(tmp_path))
  assert ds.name == 'cuhk01'
  train_ids = set(ds.train.pids.tolist())
  test_ids = set(ds.query.pids.tolist())
  assert len(train_ids) == 485 and len(test_ids) == 486
  assert not train_ids & test_ids
  assert train_ids | test_ids == set(range(1, 972))
  assert set(ds.gallery.pids.tolist()) == test_ids
  assert len(ds.train) == 4 * 485
  assert len(ds.query) == len(ds.gallery) == 2 * 486
  # The split is the spec's: sorted ids permuted by default_rng(seed).
  perm = np.random.default_rng(0).permutation(np.arange(1, 972))
  assert test_ids == set(perm[:486].tolist())
  # Query = camera A (images 001-002), gallery = camera B (003-004).
  assert set(ds.query.camids.tolist()) == {0}
  assert set(ds.gallery.camids.tolist()) == {1}
  assert all(re.search(r'00[12]\.png$', p) for p in ds.query.paths)
  assert all(re.search(r'00[34]\.png$', p) for p in ds.gallery.paths)
  cams = {os.path.basename(p)[4:]: c for p, c in zip(ds.train.paths,
                                                      ds.train.camids)}
  assert cams == {'001.png': 0, '002.png': 0, '003.png': 1, '004.png': 1}
  assert ds.train.paths == sorted(ds.train.paths)
  # Deterministic per seed; another seed, another split.
  again = cuhk01.read_cuhk01(str(tmp_path), split_seed=0)
  assert again.query.paths == ds.query.paths
  assert again.train.paths == ds.train.paths
  other = cuhk01.read_cuhk01(str(tmp_path), split_seed=1)
  assert set(other.query.pids.tolist()) != test_ids
  assert len(set(other.query.pids.tolist())) == 486
  small = cuhk01.read_cuhk01(str(tmp_path / 'campus'), num_test_ids=100)
  assert len(set(small.query.pids.tolist())) == 100
  assert len(set(small.train.pids.tolist())) == 871


def test_cuhk01_exact_small_split(tmp_path):
  fake_cuhk01(tmp_path, num_ids=3)  # the PNGs directly in root
  ds = cuhk01.read_cuhk01(str(tmp_path), split_seed=0, num_test_ids=1)
  t = int(np.random.default_rng(0).permutation([1, 2, 3])[0])
  assert names(ds.query) == [f'{t:04d}001.png', f'{t:04d}002.png']
  assert names(ds.gallery) == [f'{t:04d}003.png', f'{t:04d}004.png']
  assert ds.query.pids.tolist() == [t, t]
  assert ds.train.pids.tolist() == [p for p in (1, 2, 3) if p != t
                                    for _ in range(4)]
  assert ds.train.camids.tolist() == [0, 0, 1, 1] * 2


def test_cuhk01_errors(tmp_path):
  with pytest.raises(errors.DataNotFoundError, match='campus') as e:
    cuhk01.read_cuhk01(str(tmp_path))
  assert '3,884' in str(e.value)
  fake_cuhk01(tmp_path / 'a' / 'campus', num_ids=3)
  open(tmp_path / 'a' / 'campus' / '0004005.png', 'wb').close()
  with pytest.raises(errors.DataError, match='0004005.png'):
    cuhk01.read_cuhk01(str(tmp_path / 'a'))
  fake_cuhk01(tmp_path / 'b', num_ids=3)
  open(tmp_path / 'b' / 'img_1.png', 'wb').close()
  with pytest.raises(errors.DataError, match='img_1.png'):
    cuhk01.read_cuhk01(str(tmp_path / 'b'))
  fake_cuhk01(tmp_path / 'c', num_ids=3, skip=('0002003.png', '0002004.png'))
  with pytest.raises(errors.DataError, match=r'one camera only \(e.g. \[2\]'):
    cuhk01.read_cuhk01(str(tmp_path / 'c'))
  fake_cuhk01(tmp_path / 'd', num_ids=3)
  with pytest.raises(errors.ConfigError, match='num_test_ids=3'):
    cuhk01.read_cuhk01(str(tmp_path / 'd'), num_test_ids=3)


# ----------------------------------------------------------------------------
# Bad images.


def test_drop_bad_images(tmp_path):
  good = [write_image(tmp_path / f'g{i}.jpg', seed=i) for i in range(6)]
  bad = corrupt(tmp_path / 'bad.jpg')
  # A truncated JPEG: opens (the header is fine) but fails to decode.
  with open(good[0], 'rb') as f:
    truncated = corrupt(tmp_path / 'trunc.jpg', f.read()[:200])
  ds = ReidDataset(
      name='t',
      train=Split(pids=np.array([1, 1, 2, 2]), camids=np.array([0, 1, 0, 1]),
                  paths=[good[0], bad, good[1], good[2]]),
      query=Split(pids=np.array([3]), camids=np.array([0]), paths=[good[3]]),
      gallery=Split(pids=np.array([3, 0, -1]), camids=np.array([1, 2, 3]),
                    paths=[good[4], truncated, good[5]]),
      extras={'x': np.arange(2)})
  clean, dropped = bad_images.drop_bad_images(ds, num_threads=2)
  assert dropped == [bad, truncated]
  assert clean.train.paths == [good[0], good[1], good[2]]
  assert clean.train.pids.tolist() == [1, 2, 2]
  assert clean.train.camids.tolist() == [0, 0, 1]
  assert clean.query is ds.query
  assert clean.gallery.paths == [good[4], good[5]]
  assert clean.gallery.pids.tolist() == [3, -1]
  assert clean.gallery.camids.tolist() == [1, 3]
  assert clean.name == 't' and clean.extras is ds.extras
  same, none = bad_images.drop_bad_images(clean)
  assert same is clean and none == []


def test_drop_bad_images_keeps_tracklets_valid(tmp_path):
  g = [write_image(tmp_path / f'f{i}.png', seed=i) for i in range(7)]
  b = [corrupt(tmp_path / f'b{i}.png') for i in range(3)]
  # Tracklets: 0 = [g0, b0], 1 = [b1, b2] (all bad), 2 = [g1, g2],
  # 3 = [g3, b... none] , 4 = [g4].
  paths = [g[0], b[0], b[1], b[2], g[1], g[2], g[3], g[4]]
  tracklets = [0, 0, 1, 1, 2, 2, 3, 4]
  pids = [5, 5, 6, 6, 7, 7, 7, 8]
  camids = [0, 0, 1, 1, 2, 2, 0, 1]
  query = Split(pids=np.array(pids), camids=np.array(camids), paths=paths,
                tracklets=np.array(tracklets))
  other = Split(pids=np.array([9, 9]), camids=np.array([0, 1]),
                paths=[g[5], g[6]], tracklets=np.array([0, 1]))
  ds = ReidDataset('video', train=other, query=query, gallery=other)
  clean, dropped = bad_images.drop_bad_images(ds)
  assert dropped == b
  q = clean.query
  assert q.paths == [g[0], g[1], g[2], g[3], g[4]]
  assert q.tracklets.tolist() == [0, 1, 1, 2, 3]
  assert q.pids.tolist() == [5, 7, 7, 7, 8]
  assert q.camids.tolist() == [0, 2, 2, 0, 1]
  assert q.num_items == 4
  assert [x.tolist() for x in q.item_ids()] == [[5, 7, 7, 8], [0, 2, 0, 1]]
  assert clean.train is other and clean.gallery is other


def test_drop_bad_images_every_query_bad(tmp_path):
  g = write_image(tmp_path / 'g.png')
  b = corrupt(tmp_path / 'b.png')
  ok = Split(pids=np.array([1]), camids=np.array([0]), paths=[g])
  ds = ReidDataset('t', train=ok, query=Split(
      pids=np.array([1]), camids=np.array([0]), paths=[b]), gallery=ok)
  with pytest.raises(errors.DataError, match='query split'):
    bad_images.drop_bad_images(ds)


def test_error_policy_pipelines_name_the_corrupt_file(tmp_path):
  """data.bad_images='error': the numpy pipeline names the bad file."""
  paths = [write_image(tmp_path / f'{i}.jpg', seed=i, size=(18, 36))
           for i in range(5)]
  paths.append(corrupt(tmp_path / 'corrupt_one.jpg'))
  split = Split(pids=np.array([1, 1, 2, 2, 3, 3]), camids=np.zeros(6, int),
                paths=paths)
  with pytest.raises(errors.DataError, match='corrupt_one.jpg'):
    list(pipeline.eval_batches(split, spec.EvalInput(
        input_hw=(32, 16), resize_factor=1.125, batch_size=4, tta=False)))
  with pytest.raises(errors.DataError, match='corrupt_one.jpg'):
    list(pipeline.train_batches(split, spec.TrainInput(
        P=3, K=2, seed=0, num_steps=1,
        input_hw=(32, 16), resize_factor=1.125, hflip=True,
        random_erasing=False, erasing_p=0.5, erasing_area=(0.02, 0.2),
        erasing_aspect=0.3, prefetch=1), 0))


# ----------------------------------------------------------------------------
# The real samples, when present.

_REAL_NAME = re.compile(r'^(\d{4})_c(\d)s\d_\d{6}_\d{2}\.jpg$')


@pytest.mark.skipif(not os.path.isdir(MINI_MARKET),
                    reason='no ../shared/data/mini_market1501')
def test_real_mini_market():
  ds = market.read_market(MINI_MARKET)
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (32, 32, 32)
  for sub, s in (('bounding_box_train', ds.train), ('query', ds.query),
                 ('bounding_box_test', ds.gallery)):
    files = sorted(f for f in os.listdir(os.path.join(MINI_MARKET, sub))
                   if f.endswith('.jpg'))
    assert names(s) == files
    parsed = [_REAL_NAME.match(f).groups() for f in files]
    assert s.pids.tolist() == [int(p) for p, _ in parsed]
    assert s.camids.tolist() == [int(c) - 1 for _, c in parsed]
  assert set(ds.query.pids.tolist()) <= set(ds.gallery.pids.tolist())
  assert not set(ds.train.pids.tolist()) & set(ds.query.pids.tolist())
  assert folder.read_folder(MINI_MARKET).gallery.paths == ds.gallery.paths
  clean, bad = bad_images.drop_bad_images(ds)
  assert bad == [] and clean is ds


@pytest.mark.skipif(not os.path.isdir(CUHK01_CAMPUS),
                    reason='no ../shared/data/cuhk01/campus')
def test_real_cuhk01():
  ds = cuhk01.read_cuhk01(os.path.dirname(CUHK01_CAMPUS))
  assert len(set(ds.train.pids.tolist())) == 485
  assert len(set(ds.query.pids.tolist())) == 486
  assert len(ds.train) == 1940
  assert len(ds.query) == len(ds.gallery) == 972
  assert set(ds.query.pids.tolist()) == set(ds.gallery.pids.tolist())
