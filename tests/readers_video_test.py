"""MARS and CUHK03 (new protocol) readers, on tiny folders in the official
layouts written here, on real MARS frames and on the real MARS split files
when ../shared/data is present."""

import io
import os

import numpy as np
from PIL import Image
import pytest
import scipy.io

from dare_jax import errors
from dare_jax.data.readers import cuhk03
from dare_jax.data.readers import mars

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')


def _image_bytes(fmt):
  buf = io.BytesIO()
  Image.new('RGB', (4, 8), (10, 20, 30)).save(buf, format=fmt)
  return buf.getvalue()


_JPEG = _image_bytes('JPEG')
_PNG = _image_bytes('PNG')


def _touch(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


# ----------------------------------------------------------------- MARS ---

_TRAIN_NAMES = ['0001C1T0001F001.jpg', '0001C1T0001F002.jpg',
                '0001C2T0002F001.jpg', '0002C1T0001F001.jpg',
                '0002C1T0001F002.jpg', '0002C1T0001F003.jpg']
# Rows [start, end, person, camera], 1-based inclusive into _TRAIN_NAMES.
_TRAIN_INFO = [[1, 2, 1, 1], [3, 3, 1, 2], [4, 6, 2, 1]]
# Sorted as the official lists are: '00-1' (junk) sorts before '0000'.
_TEST_NAMES = ['00-1C1T0001F001.jpg', '0000C3T0001F001.jpg',
               '0000C3T0001F002.jpg', '0003C1T0001F001.jpg',
               '0003C1T0001F002.jpg', '0003C2T0002F001.jpg',
               '0004C1T0001F001.jpg', '0004C3T0002F001.jpg',
               '0004C3T0002F002.jpg']
_TEST_INFO = [[1, 1, -1, 1], [2, 3, 0, 3], [4, 5, 3, 1], [6, 6, 3, 2],
              [7, 7, 4, 1], [8, 9, 4, 3]]
_QUERY_IDX = [6, 3]  # not sorted: the query keeps this order


def _write_mars_info(info_dir, train_names, test_names, train_info,
                     test_info, query_idx):
  os.makedirs(info_dir, exist_ok=True)
  for fname, names in (('train_name.txt', train_names),
                       ('test_name.txt', test_names)):
    with open(os.path.join(info_dir, fname), 'w') as f:
      f.write(''.join(n + '\n' for n in names))
  # The official files' variables, shapes and dtypes.
  scipy.io.savemat(os.path.join(info_dir, 'tracks_train_info.mat'),
                   {'track_train_info': np.asarray(train_info, np.int32)})
  scipy.io.savemat(os.path.join(info_dir, 'tracks_test_info.mat'),
                   {'track_test_info': np.asarray(test_info, np.int32)})
  scipy.io.savemat(os.path.join(info_dir, 'query_IDX.mat'),
                   {'query_IDX': np.asarray(query_idx, np.uint16)[None]})


def _write_mars(root, info_in_root=False, test_info=None):
  for folder, names in (('bbox_train', _TRAIN_NAMES),
                        ('bbox_test', _TEST_NAMES)):
    for n in names:
      _touch(os.path.join(root, folder, n[:4], n), _JPEG)
  _write_mars_info(root if info_in_root else os.path.join(root, 'info'),
                   _TRAIN_NAMES, _TEST_NAMES, _TRAIN_INFO,
                   test_info or _TEST_INFO, _QUERY_IDX)
  return str(root)


@pytest.mark.parametrize('info_in_root', [False, True])
def test_mars_official_layout(tmp_path, info_in_root):
  root = _write_mars(tmp_path, info_in_root)
  ds = mars.read_mars(root)
  assert ds.name == 'mars'

  tr = ds.train
  assert tr.paths == [os.path.join(root, 'bbox_train', n[:4], n)
                      for n in _TRAIN_NAMES]
  np.testing.assert_array_equal(tr.pids, [1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(tr.camids, [0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(tr.tracklets, [0, 0, 1, 2, 2, 2])

  q = ds.query  # test rows 6 then 3
  assert q.paths == [os.path.join(root, 'bbox_test', '0004', n) for n in
                     ('0004C3T0002F001.jpg', '0004C3T0002F002.jpg')] + [
                         os.path.join(root, 'bbox_test', '0003', n) for n in
                         ('0003C1T0001F001.jpg', '0003C1T0001F002.jpg')]
  np.testing.assert_array_equal(q.pids, [4, 4, 3, 3])
  np.testing.assert_array_equal(q.camids, [2, 2, 0, 0])
  np.testing.assert_array_equal(q.tracklets, [0, 0, 1, 1])
  assert q.num_items == 2
  np.testing.assert_array_equal(q.item_ids()[0], [4, 3])

  g = ds.gallery  # every test track, junk and distractors included
  assert g.paths == [os.path.join(root, 'bbox_test', n[:4], n)
                     for n in _TEST_NAMES]
  assert g.paths[0].endswith(os.path.join('bbox_test', '00-1',
                                          '00-1C1T0001F001.jpg'))
  np.testing.assert_array_equal(g.pids, [-1, 0, 0, 3, 3, 3, 4, 4, 4])
  np.testing.assert_array_equal(g.camids, [0, 2, 2, 0, 0, 1, 0, 2, 2])
  np.testing.assert_array_equal(g.tracklets, [0, 1, 1, 2, 2, 3, 4, 5, 5])
  pids, camids = g.item_ids()
  np.testing.assert_array_equal(pids, [-1, 0, 3, 3, 4, 4])
  np.testing.assert_array_equal(camids, [0, 2, 0, 1, 0, 2])
  assert all(os.path.isfile(p) for p in tr.paths + q.paths + g.paths)


def test_mars_train_drops_non_people(tmp_path):
  names = _TRAIN_NAMES + ['0000C1T0001F001.jpg']
  for n in names:
    _touch(os.path.join(tmp_path, 'bbox_train', n[:4], n), _JPEG)
  for n in _TEST_NAMES:
    _touch(os.path.join(tmp_path, 'bbox_test', n[:4], n), _JPEG)
  _write_mars_info(os.path.join(tmp_path, 'info'), names, _TEST_NAMES,
                   _TRAIN_INFO + [[7, 7, 0, 1]], _TEST_INFO, _QUERY_IDX)
  tr = mars.read_mars(str(tmp_path)).train
  np.testing.assert_array_equal(tr.pids, [1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(tr.tracklets, [0, 0, 1, 2, 2, 2])


def test_mars_parse_name():
  assert mars.parse_mars_name('0003C4T0003F001.jpg') == (3, 3)
  assert mars.parse_mars_name('/x/00-1/00-1C6T0001F010.jpg') == (-1, 5)
  assert mars.parse_mars_name('0000C1T0001F001.jpg') == (0, 0)
  with pytest.raises(errors.DataError, match='PPPPCcTttttFfff'):
    mars.parse_mars_name('0003_c4_0003.jpg')


def test_mars_missing_info_file_is_named(tmp_path):
  root = _write_mars(tmp_path)
  os.remove(os.path.join(root, 'info', 'query_IDX.mat'))
  with pytest.raises(errors.DataNotFoundError, match='query_IDX.mat') as e:
    mars.read_mars(root)
  assert 'tracks_test_info.mat' in str(e.value) and '(12180x4)' in str(e.value)


def test_mars_missing_folder_is_named(tmp_path):
  root = _write_mars(tmp_path)
  os.rename(os.path.join(root, 'bbox_test'), os.path.join(root, 'other'))
  with pytest.raises(errors.DataNotFoundError, match='bbox_test'):
    mars.read_mars(root)


def test_mars_missing_person_folder_is_named(tmp_path):
  root = _write_mars(tmp_path)
  os.rename(os.path.join(root, 'bbox_test', '0004'),
            os.path.join(root, 'bbox_test', 'x'))
  with pytest.raises(errors.DataNotFoundError,
                     match=os.path.join('bbox_test', '0004')):
    mars.read_mars(root)


def test_mars_missing_frame_is_named(tmp_path):
  root = _write_mars(tmp_path)
  os.remove(os.path.join(root, 'bbox_train', '0001', '0001C1T0001F001.jpg'))
  with pytest.raises(errors.DataNotFoundError,
                     match='0001C1T0001F001.jpg.*is missing'):
    mars.read_mars(root)


def test_mars_track_disagreeing_with_its_frames(tmp_path):
  info = [list(r) for r in _TEST_INFO]
  info[2][2] = 5  # row 3 covers 0003C1T0001F001/F002
  root = _write_mars(tmp_path, test_info=info)
  with pytest.raises(errors.DataError) as e:
    mars.read_mars(root)
  msg = str(e.value)
  assert 'row 3' in msg and 'tracks_test_info.mat' in msg
  assert '0003C1T0001F001.jpg' in msg and 'person 5' in msg


def test_mars_track_camera_disagreeing(tmp_path):
  info = [list(r) for r in _TEST_INFO]
  info[5][3] = 2  # row 6: 0004C3...
  root = _write_mars(tmp_path, test_info=info)
  with pytest.raises(errors.DataError, match='row 6.*camera 2'):
    mars.read_mars(root)


@pytest.mark.parametrize('bad_info,what', [
    ([[1, 1, -1, 1], [2, 3, 0, 3], [4, 5, 3, 1], [6, 6, 3, 2],
      [7, 7, 4, 1], [8, 8, 4, 3]], 'lists 9 names'),  # a name left over
    ([[1, 1, -1, 1], [2, 3, 0, 3], [5, 5, 3, 1], [6, 6, 3, 2],
      [7, 7, 4, 1], [8, 9, 4, 3]], 'row 3'),  # a gap
])
def test_mars_ranges_disagreeing_with_names(tmp_path, bad_info, what):
  root = _write_mars(tmp_path, test_info=bad_info)
  with pytest.raises(errors.DataError, match=what):
    mars.read_mars(root)


def test_mars_query_out_of_range(tmp_path):
  root = _write_mars(tmp_path)
  scipy.io.savemat(os.path.join(root, 'info', 'query_IDX.mat'),
                   {'query_IDX': np.asarray([[3, 7]], np.uint16)})
  with pytest.raises(errors.DataError, match='query_IDX.mat.*6 test tracks'):
    mars.read_mars(root)


def _walk_frames(folder):
  """Every frame under folder/PPPP/, sorted by name, read from the disk."""
  return sorted(
      (f, os.path.join(folder, p, f)) for p in os.listdir(folder)
      for f in os.listdir(os.path.join(folder, p)) if f.endswith('.jpg'))


def test_mars_real_frames(tmp_path):
  """Real MARS frames (16+16 identities), with info files written for that
  subset in the official format: sorted names, tracks grouped by
  PPPPCcTtttt, and as queries the first track of each person in its
  first camera."""
  src = os.path.join(SHARED, 'mini_mars')
  if not os.path.isdir(src):
    pytest.skip(f'no real MARS frames at {src}')
  root = tmp_path / 'mars'
  root.mkdir()
  for folder in ('bbox_train', 'bbox_test'):
    os.symlink(os.path.abspath(os.path.join(src, folder)), root / folder)
  frames = {f: _walk_frames(os.path.join(root, f))
            for f in ('bbox_train', 'bbox_test')}
  infos, queries = {}, []
  for folder, fr in frames.items():
    rows, start = [], 1
    for key, group in _groupby_track(n for n, _ in fr):
      rows.append([start, start + group - 1, int(key[:4]), int(key[5])])
      start += group
    infos[folder] = rows
  seen = set()
  for r, row in enumerate(infos['bbox_test']):
    if row[2] not in seen:
      seen.add(row[2])
      queries.append(r + 1)
  _write_mars_info(str(root / 'info'), [n for n, _ in frames['bbox_train']],
                   [n for n, _ in frames['bbox_test']], infos['bbox_train'],
                   infos['bbox_test'], queries)
  ds = mars.read_mars(str(root))

  for split, folder in ((ds.train, 'bbox_train'), (ds.gallery, 'bbox_test')):
    fr = frames[folder]
    assert [os.path.realpath(p) for p in split.paths] == [
        os.path.realpath(p) for _, p in fr]
    np.testing.assert_array_equal(split.pids, [int(n[:4]) for n, _ in fr])
    np.testing.assert_array_equal(split.camids,
                                  [int(n[5]) - 1 for n, _ in fr])
    keys = [n[:11] for n, _ in fr]
    np.testing.assert_array_equal(
        split.tracklets,
        np.cumsum([0] + [a != b for a, b in zip(keys, keys[1:])]))
  assert len(ds.train) == 1719 and ds.train.num_items == 32
  assert ds.gallery.num_items == 64
  # Each of the 16 test people once, with its first track, in person order.
  assert ds.query.num_items == 16
  qp, qc = ds.query.item_ids()
  np.testing.assert_array_equal(qp, sorted({int(n[:4])
                                            for n, _ in frames['bbox_test']}))
  first = {}
  for n, _ in frames['bbox_test']:
    first.setdefault(n[:4], n[:11])
  assert [os.path.basename(p)[:11] for p in ds.query.paths] == [
      k for k in sorted(first.values()) for n, _ in frames['bbox_test']
      if n[:11] == k]
  assert len(ds.train) + len(ds.gallery) == 5572


def _groupby_track(names):
  """(PPPPCcTtttt, count) runs of consecutive names."""
  out = []
  for n in names:
    if out and out[-1][0] == n[:11]:
      out[-1][1] += 1
    else:
      out.append([n[:11], 1])
  return [tuple(o) for o in out]


def _real_mars_info():
  d = os.path.join(SHARED, 'mars_info')
  if not os.path.isfile(os.path.join(d, 'query_IDX.mat')):
    pytest.skip(f'no real MARS split files at {d}')
  return d


def test_mars_real_info_files_parse():
  d = _real_mars_info()
  train = mars._load_mat(os.path.join(d, 'tracks_train_info.mat'),
                         'tracks_train_info.mat')
  test = mars._load_mat(os.path.join(d, 'tracks_test_info.mat'),
                        'tracks_test_info.mat')
  query = mars._load_mat(os.path.join(d, 'query_IDX.mat'),
                         'query_IDX.mat').reshape(-1)
  assert train.shape == (8298, 4) and test.shape == (12180, 4)
  assert query.shape == (1980,) and train.dtype == np.int64
  assert query.min() >= 1 and query.max() <= 12180
  assert len(set(query.tolist())) == 1980
  # Queries are people (never junk or distractors), 625 / 626 identities.
  assert test[query - 1, 2].min() >= 1
  assert len(np.unique(train[:, 2])) == 625
  assert len(np.unique(test[query - 1, 2])) == 626
  assert train[-1, 1] == 509914 and test[-1, 1] == 681089


@pytest.mark.slow
def test_mars_real_info_files_end_to_end(tmp_path):
  """read_mars on the real split files, with name lists made up to match
  them (one name per frame of each track) and empty person folders."""
  d = _real_mars_info()
  info = {s: np.asarray(scipy.io.loadmat(
      os.path.join(d, f'tracks_{s}_info.mat'))[f'track_{s}_info'])
          for s in ('train', 'test')}
  names = {}
  for s, rows in info.items():
    out = []
    for t, (start, end, pid, cam) in enumerate(rows.tolist()):
      p = '00-1' if pid == -1 else f'{pid:04d}'
      out.extend(f'{p}C{cam}T{t:04d}F{k:03d}.jpg'
                 for k in range(end - start + 1))
    names[s] = out
    for p in {n[:4] for n in out}:
      os.makedirs(tmp_path / f'bbox_{s}' / p)
    _touch(os.path.join(tmp_path, f'bbox_{s}', out[0][:4], out[0]), _JPEG)
    with open(tmp_path / f'{s}_name.txt', 'w') as f:
      f.write('\n'.join(out) + '\n')
  for f in ('tracks_train_info.mat', 'tracks_test_info.mat', 'query_IDX.mat'):
    os.symlink(os.path.join(os.path.abspath(d), f), tmp_path / f)
  ds = mars.read_mars(str(tmp_path))  # the info files directly in root
  assert len(ds.train) == 509914 and ds.train.num_items == 8298
  assert len(ds.gallery) == 681089 and ds.gallery.num_items == 12180
  assert ds.query.num_items == 1980
  q = np.asarray(scipy.io.loadmat(os.path.join(d, 'query_IDX.mat'))[
      'query_IDX']).reshape(-1).astype(np.int64)
  np.testing.assert_array_equal(ds.query.item_ids()[0],
                                info['test'][q - 1, 2])
  np.testing.assert_array_equal(ds.gallery.item_ids()[1],
                                info['test'][:, 3] - 1)
  assert ds.query.paths[0] == os.path.join(
      str(tmp_path), 'bbox_test', names['test'][info['test'][q[0] - 1, 0] -
                                                1][:4],
      names['test'][info['test'][q[0] - 1, 0] - 1])


# --------------------------------------------------------------- CUHK03 ---

_FILELIST = ['1_001_1_01.png', '1_001_1_02.png', '1_001_2_01.png',
             '1_002_1_01.png', '1_002_2_01.png', '2_003_1_01.png',
             '2_003_2_01.png']
_LABELS = [1, 1, 1, 2, 2, 3, 3]
_CAM_ID = [1, 1, 2, 1, 2, 1, 2]


def _write_cuhk03_protocol(root, variant, skip_image=None):
  filelist = np.empty((len(_FILELIST), 1), dtype=object)
  for i, n in enumerate(_FILELIST):
    filelist[i, 0] = n
  col = lambda v: np.asarray(v, np.float64).reshape(-1, 1)
  scipy.io.savemat(
      os.path.join(root, f'cuhk03_new_protocol_config_{variant}.mat'),
      {'filelist': filelist, 'labels': col(_LABELS), 'camId': col(_CAM_ID),
       'train_idx': col([1, 2, 3]), 'query_idx': col([4, 7]),
       'gallery_idx': col([5, 6])})
  for n in _FILELIST:
    if n != skip_image:
      _touch(os.path.join(root, f'images_{variant}', n), _PNG)


def test_cuhk03_protocol_mat_is_read_as_matlab_writes_it(tmp_path):
  _write_cuhk03_protocol(str(tmp_path), 'labeled')
  mat = scipy.io.loadmat(
      tmp_path / 'cuhk03_new_protocol_config_labeled.mat')
  assert mat['filelist'].shape == (7, 1) and mat['filelist'].dtype == object
  assert mat['train_idx'].shape == (3, 1)


@pytest.mark.parametrize('variant', ['labeled', 'detected'])
def test_cuhk03_protocol_layout(tmp_path, variant):
  root = str(tmp_path)
  _write_cuhk03_protocol(root, variant)
  ds = cuhk03.read_cuhk03(root, variant)
  assert ds.name == f'cuhk03_{variant}'
  img = os.path.join(root, f'images_{variant}')
  assert ds.train.paths == [os.path.join(img, n) for n in _FILELIST[:3]]
  np.testing.assert_array_equal(ds.train.pids, [1, 1, 1])
  np.testing.assert_array_equal(ds.train.camids, [0, 0, 1])
  assert ds.query.paths == [os.path.join(img, '1_002_1_01.png'),
                            os.path.join(img, '2_003_2_01.png')]
  np.testing.assert_array_equal(ds.query.pids, [2, 3])
  np.testing.assert_array_equal(ds.query.camids, [0, 1])
  assert ds.gallery.paths == [os.path.join(img, '1_002_2_01.png'),
                              os.path.join(img, '2_003_1_01.png')]
  np.testing.assert_array_equal(ds.gallery.pids, [2, 3])
  np.testing.assert_array_equal(ds.gallery.camids, [1, 0])
  assert ds.train.tracklets is None


def _write_cuhk03_np(root, variant, files):
  for folder, names in files.items():
    for n in names:
      _touch(os.path.join(root, variant, folder, n), _PNG)


def test_cuhk03_np_layout(tmp_path):
  root = str(tmp_path)
  _write_cuhk03_np(root, 'labeled', {
      'bounding_box_train': ['0001_c1_1.png', '0001_c2_1.png',
                             '0005_c2_3.png'],
      'query': ['0002_c1_1.png'],
      'bounding_box_test': ['0002_c2_1.png', '0003_c1_2.png']})
  _write_cuhk03_np(root, 'detected', {
      'bounding_box_train': ['0001_c1_4.png'],
      'query': ['0002_c2_1.png', '0003_c1_1.png'],
      'bounding_box_test': ['0002_c1_1.png']})
  lab = cuhk03.read_cuhk03(root, 'labeled')
  assert lab.name == 'cuhk03_labeled'
  d = os.path.join(root, 'labeled')
  assert lab.train.paths == [os.path.join(d, 'bounding_box_train', n) for n in
                             ('0001_c1_1.png', '0001_c2_1.png',
                              '0005_c2_3.png')]
  np.testing.assert_array_equal(lab.train.pids, [1, 1, 5])
  np.testing.assert_array_equal(lab.train.camids, [0, 1, 1])
  np.testing.assert_array_equal(lab.query.pids, [2])
  np.testing.assert_array_equal(lab.query.camids, [0])
  assert lab.gallery.paths == [os.path.join(d, 'bounding_box_test', n) for n
                               in ('0002_c2_1.png', '0003_c1_2.png')]
  np.testing.assert_array_equal(lab.gallery.pids, [2, 3])
  np.testing.assert_array_equal(lab.gallery.camids, [1, 0])
  det = cuhk03.read_cuhk03(root, 'detected')
  assert det.name == 'cuhk03_detected'
  np.testing.assert_array_equal(det.train.pids, [1])
  np.testing.assert_array_equal(det.query.pids, [2, 3])
  np.testing.assert_array_equal(det.query.camids, [1, 0])
  assert det.gallery.paths == [
      os.path.join(root, 'detected', 'bounding_box_test', '0002_c1_1.png')]


def test_cuhk03_neither_layout_names_both(tmp_path):
  with pytest.raises(errors.DataNotFoundError) as e:
    cuhk03.read_cuhk03(str(tmp_path), 'detected')
  msg = str(e.value)
  assert 'cuhk03_new_protocol_config_detected.mat' in msg
  assert 'images_detected' in msg
  assert os.path.join('detected', 'bounding_box_train') in msg
  assert '7365 images' in msg and '5332 images' in msg


def test_cuhk03_missing_image_folder(tmp_path):
  _write_cuhk03_protocol(str(tmp_path), 'labeled')
  os.rename(tmp_path / 'images_labeled', tmp_path / 'images')
  with pytest.raises(errors.DataNotFoundError, match='images_labeled'):
    cuhk03.read_cuhk03(str(tmp_path), 'labeled')


def test_cuhk03_save_img_folder_name(tmp_path):
  """The protocol repository's save_img.m writes cuhk03_<variant>/."""
  _write_cuhk03_protocol(str(tmp_path), 'detected')
  os.rename(tmp_path / 'images_detected', tmp_path / 'cuhk03_detected')
  ds = cuhk03.read_cuhk03(str(tmp_path), 'detected')
  assert ds.query.paths == [
      os.path.join(str(tmp_path), 'cuhk03_detected', n)
      for n in ('1_002_1_01.png', '2_003_2_01.png')]


def test_cuhk03_missing_image_is_named(tmp_path):
  _write_cuhk03_protocol(str(tmp_path), 'labeled', skip_image='2_003_1_01.png')
  with pytest.raises(errors.DataNotFoundError,
                     match='gallery_idx.*2_003_1_01.png'):
    cuhk03.read_cuhk03(str(tmp_path), 'labeled')


def test_cuhk03_np_missing_split_folder(tmp_path):
  _write_cuhk03_np(str(tmp_path), 'labeled', {
      'bounding_box_train': ['0001_c1_1.png'], 'query': ['0002_c1_1.png']})
  with pytest.raises(errors.DataNotFoundError,
                     match=os.path.join('labeled', 'bounding_box_test')):
    cuhk03.read_cuhk03(str(tmp_path), 'labeled')


def test_cuhk03_bad_index_and_variant(tmp_path):
  _write_cuhk03_protocol(str(tmp_path), 'labeled')
  p = tmp_path / 'cuhk03_new_protocol_config_labeled.mat'
  mat = scipy.io.loadmat(p)
  mat['query_idx'] = np.asarray([[4.0], [8.0]])
  scipy.io.savemat(p, {k: v for k, v in mat.items()
                       if not k.startswith('__')})
  with pytest.raises(errors.DataError, match=r'query_idx\[1\] = 8'):
    cuhk03.read_cuhk03(str(tmp_path), 'labeled')
  with pytest.raises(errors.ConfigError, match='variant'):
    cuhk03.read_cuhk03(str(tmp_path), 'manual')
