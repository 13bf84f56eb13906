"""The synthetic dataset: layout, protocol invariants, caching, difficulty."""

import os

import numpy as np
import pytest

from dare_jax.data import synthetic

# Its module-scoped fixtures are built once: all its tests on one xdist
# worker (.ci/run: --dist loadgroup).
pytestmark = pytest.mark.xdist_group('synthetic')

SMALL = dict(num_train_ids=40, num_test_ids=30, num_cameras=4,
             hard_fraction=0.5, seed=0, image_size=(64, 32))


@pytest.fixture(scope='module')
def small():
  return synthetic.make_synthetic(**SMALL)


def _splits(ds):
  return {'train': ds.train, 'query': ds.query, 'gallery': ds.gallery}


def _assert_same(a, b):
  for name, split in _splits(a).items():
    other = getattr(b, name)
    for field in ('pids', 'camids', 'images'):
      x, y = getattr(split, field), getattr(other, field)
      assert x.dtype == y.dtype, (name, field)
      np.testing.assert_array_equal(x, y, err_msg=f'{name}.{field}')
  assert a.extras.keys() == b.extras.keys()
  for k in a.extras:
    np.testing.assert_array_equal(a.extras[k], b.extras[k])


def test_same_seed_same_arrays(small):
  np.random.seed(123)  # the global stream must not matter
  _assert_same(small, synthetic.make_synthetic(**SMALL))


def test_different_seed_different_dataset(small):
  other = synthetic.make_synthetic(**dict(SMALL, seed=1))
  assert not np.array_equal(other.train.images[:8], small.train.images[:8])
  assert not np.array_equal(other.extras['hard_pids'],
                            small.extras['hard_pids'])


def test_shapes_and_dtypes(small):
  assert small.name == 'synthetic'
  for split in _splits(small).values():
    n = len(split)
    assert n > 0
    assert split.images.shape == (n, 64, 32, 3)
    assert split.images.dtype == np.uint8
    assert split.pids.dtype == np.int64 and split.pids.shape == (n,)
    assert split.camids.dtype == np.int64 and split.camids.shape == (n,)
    assert split.paths is None
    assert split.camids.min() >= 0 and split.camids.max() < 4
  assert small.extras['hard_pids'].dtype == np.int64


@pytest.mark.parametrize('size', [(32, 16), (36, 18), (50, 23), (96, 48),
                                  (36.0, 18.0)])
def test_any_reasonable_size(size):
  ds = synthetic.make_synthetic(**dict(SMALL, num_train_ids=2, num_test_ids=2,
                                       image_size=size))
  assert ds.train.images.shape[1:] == tuple(size) + (3,)
  # Not blank: a figure over a background.
  assert ds.train.images.std(axis=(1, 2, 3)).min() > 10


def test_pids_cameras_and_image_counts(small):
  train_pids = np.unique(small.train.pids)
  np.testing.assert_array_equal(train_pids, np.arange(1, 41))
  test_pids = np.unique(small.query.pids)
  assert len(test_pids) == 30
  assert not set(train_pids) & set(test_pids)
  people = small.gallery.pids[small.gallery.pids > 0]
  assert set(np.unique(people)) == set(test_pids)
  for pid in np.concatenate([train_pids, test_pids]):
    cams = np.concatenate([s.camids[s.pids == pid]
                           for s in _splits(small).values()])
    assert 8 <= len(cams) <= 12
    cam_ids, counts = np.unique(cams, return_counts=True)
    assert len(cam_ids) >= 2
    assert counts.min() >= 2


def test_hard_pids(small):
  hard = small.extras['hard_pids']
  assert len(np.unique(hard)) == len(hard)
  train_pids, test_pids = set(small.train.pids), set(small.query.pids)
  assert sum(p in train_pids for p in hard) == 20
  assert sum(p in test_pids for p in hard) == 15
  none = synthetic.make_synthetic(**dict(SMALL, hard_fraction=0.0))
  assert len(none.extras['hard_pids']) == 0
  every = synthetic.make_synthetic(**dict(SMALL, hard_fraction=1.0))
  assert len(every.extras['hard_pids']) == 70


def test_query_has_one_or_two_images_per_id_from_distinct_cameras(small):
  for pid in np.unique(small.query.pids):
    cams = small.query.camids[small.query.pids == pid]
    assert 1 <= len(cams) <= 2
    assert len(set(cams)) == len(cams)


def test_every_query_has_a_cross_camera_match(small):
  g = small.gallery
  for pid, cam in zip(small.query.pids, small.query.camids):
    assert np.any((g.pids == pid) & (g.camids != cam))


def test_every_query_has_same_camera_gallery_images(small):
  # The Market protocol excludes these; they must exist to exercise it.
  g = small.gallery
  for pid, cam in zip(small.query.pids, small.query.camids):
    assert np.any((g.pids == pid) & (g.camids == cam))


@pytest.mark.parametrize('num_cameras', [2, 6])
def test_protocol_holds_for_other_camera_counts(num_cameras):
  ds = synthetic.make_synthetic(**dict(SMALL, num_train_ids=2,
                                       num_cameras=num_cameras,
                                       image_size=(32, 16)))
  for split in _splits(ds).values():
    assert set(split.camids) <= set(range(num_cameras))
  g = ds.gallery
  for pid, cam in zip(ds.query.pids, ds.query.camids):
    assert np.any((g.pids == pid) & (g.camids != cam))
    assert np.any((g.pids == pid) & (g.camids == cam))


def test_junk_and_distractors_only_in_gallery(small):
  assert small.train.pids.min() >= 1
  assert small.query.pids.min() >= 1
  g = small.gallery.pids
  for pid in (-1, 0):
    fraction = np.mean(g == pid)
    assert 0.015 <= fraction <= 0.06, (pid, fraction)


def test_cache_round_trip(tmp_path, monkeypatch, capsys):
  args = dict(SMALL, num_train_ids=6, num_test_ids=5)
  fresh = synthetic.make_synthetic(**args)
  written = synthetic.make_synthetic(**args, cache_dir=str(tmp_path))
  assert capsys.readouterr() == ('', '')
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].startswith('synthetic-')
  assert files[0].endswith('.npz')
  _assert_same(fresh, written)

  def fail(**unused_kwargs):
    raise AssertionError('regenerated despite the cache')
  monkeypatch.setattr(synthetic, '_generate', fail)
  loaded = synthetic.make_synthetic(**args, cache_dir=str(tmp_path))
  _assert_same(fresh, loaded)


def test_cache_key_covers_arguments_and_version(tmp_path, monkeypatch):
  args = dict(SMALL, num_train_ids=2, num_test_ids=2, image_size=(32, 16))
  synthetic.make_synthetic(**args, cache_dir=str(tmp_path))
  synthetic.make_synthetic(**dict(args, seed=5), cache_dir=str(tmp_path))
  synthetic.make_synthetic(**dict(args, hard_fraction=0.25),
                           cache_dir=str(tmp_path))
  monkeypatch.setattr(synthetic, 'GENERATOR_VERSION',
                      synthetic.GENERATOR_VERSION + 1)
  synthetic.make_synthetic(**args, cache_dir=str(tmp_path))
  assert len(os.listdir(tmp_path)) == 4


def test_failed_cache_write_leaves_no_file(tmp_path, monkeypatch):
  args = dict(SMALL, num_train_ids=2, num_test_ids=2, image_size=(32, 16))

  def savez(file, **arrays):
    file.write(b'half a file')
    raise OSError('disk full')
  monkeypatch.setattr(synthetic.np, 'savez', savez)
  with pytest.warns(UserWarning, match='disk full'):
    ds = synthetic.make_synthetic(**args, cache_dir=str(tmp_path))
  assert not os.listdir(tmp_path)
  monkeypatch.undo()
  _assert_same(ds, synthetic.make_synthetic(**args))


@pytest.mark.parametrize('damage', ['garbage', 'truncated'])
def test_unreadable_cache_is_regenerated(tmp_path, damage):
  args = dict(SMALL, num_train_ids=2, num_test_ids=2, image_size=(32, 16))
  synthetic.make_synthetic(**args, cache_dir=str(tmp_path))
  (path,) = tmp_path.iterdir()
  data = path.read_bytes()
  path.write_bytes(b'not an npz' if damage == 'garbage' else
                   data[:len(data) // 2])
  with pytest.warns(UserWarning, match='unreadable cache'):
    ds = synthetic.make_synthetic(**args, cache_dir=str(tmp_path))
  _assert_same(ds, synthetic.make_synthetic(**args))
  _assert_same(ds, synthetic.make_synthetic(**args, cache_dir=str(tmp_path)))


@pytest.mark.parametrize('override, message', [
    (dict(num_cameras=1), 'num_cameras'),
    (dict(hard_fraction=-0.1), 'hard_fraction'),
    (dict(hard_fraction=1.5), 'hard_fraction'),
    (dict(hard_fraction=float('nan')), 'hard_fraction'),
    (dict(num_train_ids=1), 'identities'),
    (dict(num_test_ids=0), 'identities'),
    (dict(image_size=(31, 16)), 'image_size'),
    (dict(image_size=(64, 8)), 'image_size'),
    (dict(image_size=(64,)), 'image_size'),
    (dict(image_size=(64, 32.5)), 'image_size'),
    (dict(seed=-1), 'seed'),
    (dict(num_cameras=2.5), 'num_cameras'),
])
def test_bad_arguments(override, message):
  with pytest.raises(ValueError, match=message):
    synthetic.make_synthetic(**dict(SMALL, **override))


# --- difficulty ---------------------------------------------------------------


def _pool(images, rows, cols):
  n, h, w, c = images.shape
  x = images.astype(np.float32).reshape(n, rows, h // rows, cols, w // cols, c)
  return x.mean(axis=(2, 4)).reshape(n, -1)


def _rank1(ds, features):
  """Rank-1 of Euclidean nearest-neighbour retrieval, easy and hard queries,
  under the Market protocol (same pid and camera, and junk, excluded)."""
  q, g = features(ds.query.images), features(ds.gallery.images)
  d = (q**2).sum(1)[:, None] + (g**2).sum(1)[None, :] - 2 * q @ g.T
  same_pid = ds.gallery.pids[None, :] == ds.query.pids[:, None]
  same_cam = ds.gallery.camids[None, :] == ds.query.camids[:, None]
  ignored = (same_pid & same_cam) | (ds.gallery.pids[None, :] == -1)
  hit = ds.gallery.pids[np.argmin(np.where(ignored, np.inf, d), 1)] == (
      ds.query.pids)
  hard = np.isin(ds.query.pids, ds.extras['hard_pids'])
  return hit[~hard].mean(), hit[hard].mean()


@pytest.fixture(scope='module')
def many_test_ids():
  return synthetic.make_synthetic(
      num_train_ids=2, num_test_ids=120, num_cameras=4, hard_fraction=0.5,
      seed=0, image_size=(64, 32))


def test_easy_queries_beat_hard_queries_on_coarse_pixels(many_test_ids):
  easy, hard = _rank1(many_test_ids, lambda x: _pool(x, 8, 4))
  assert easy > 0.35, easy
  assert hard < 0.1, hard
  assert easy - hard > 0.3, (easy, hard)


def _render_people(hard, size, monkeypatch):
  """One image per person, all from one camera in one pose, noise-free:
  the images differ only where the people do."""
  monkeypatch.setattr(synthetic, '_NOISE_STD', 0.0)
  rng = np.random.default_rng(0)
  people = synthetic._sample_people(rng, hard)
  cameras = synthetic._sample_cameras(rng, 1)
  cameras['blur'][:] = 0
  n = len(hard)
  zeros = np.zeros(n, np.int64)
  params = synthetic._sample_images(rng, people, cameras, np.arange(n), zeros,
                                    zeros, size[1] / size[0])
  for k, v in params.items():
    if k not in people:
      params[k] = np.repeat(v[:1], n, axis=0)
  params['occ_on'][:] = 0
  images = synthetic._render(rng, params, cameras, zeros, *size)
  return images.astype(np.float32), people['look']


def test_hard_ids_differ_only_in_fine_detail(monkeypatch):
  hard = np.arange(96) < 64
  images, look = _render_people(hard, (128, 64), monkeypatch)
  coarse_share = {True: [], False: []}
  peak = {True: [], False: []}
  for i in range(len(hard)):
    for j in range(i + 1, len(hard)):
      if hard[i] != hard[j] or (hard[i] and look[i] != look[j]):
        continue
      diff = images[i:i + 1] - images[j:j + 1]
      # The share of the difference's energy that survives 8x4 pooling.
      coarse = np.sum(_pool(diff, 8, 4)**2) * (16 * 16)
      coarse_share[bool(hard[i])].append(coarse / np.sum(diff**2))
      peak[bool(hard[i])].append(np.abs(diff).max())
  # Every hard id is distinguishable at full resolution...
  assert min(peak[True]) > 60, min(peak[True])
  # ... but far less of what distinguishes it survives coarse pooling.
  hard_share = np.median(coarse_share[True])
  easy_share = np.median(coarse_share[False])
  assert hard_share < 0.5 * easy_share, (hard_share, easy_share)
