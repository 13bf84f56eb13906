"""pipeline.py (numpy) and tf_pipeline.py (tf.data): the same batches."""

import gc
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from dare_jax import errors
from dare_jax.data import augment
from dare_jax.data import numpy_pipeline as pipeline
from dare_jax.data import spec
from dare_jax.data.types import Split

try:
  import tensorflow  # pylint: disable=unused-import
  from dare_jax.data import tf_pipeline
  PIPELINES = [pipeline, tf_pipeline]
except ImportError:  # the GPU hosts have no TensorFlow
  tf_pipeline = None
  PIPELINES = [pipeline]

needs_tf = pytest.mark.skipif(tf_pipeline is None, reason='no TensorFlow')
by_pipeline = pytest.mark.parametrize(
    'pipe', PIPELINES, ids=[p.__name__.split('.')[-1] for p in PIPELINES])

INPUT_HW, RESIZE_HW, FACTOR = (32, 16), (36, 18), 1.125
P, K = 3, 4
TRAIN = dict(P=P, K=K, seed=5, input_hw=INPUT_HW, resize_factor=FACTOR,
             hflip=True, random_erasing=True, erasing_p=0.5,
             erasing_area=(0.02, 0.2), erasing_aspect=0.3, prefetch=2)


def make_split(n_ids=8, per_id=5, seed=0, hw=RESIZE_HW):
  """Ids 1..n_ids (id 1 has only 2 images, < K) plus distractors and junk."""
  pids = np.concatenate([[1, 1], np.repeat(np.arange(2, n_ids + 1), per_id),
                         [0, 0, -1]]).astype(np.int64)
  rng = np.random.default_rng(seed)
  pids = rng.permutation(pids)
  images = rng.integers(0, 256, (len(pids),) + tuple(hw) + (3,), np.uint8)
  return Split(pids=pids, camids=np.zeros(len(pids), np.int64), images=images)


def paths_split(split, tmp_path, hw=None):
  """The same split as PNG files (at the images' size unless hw is given)."""
  paths = []
  for i, img in enumerate(split.images):
    pil = Image.fromarray(img)
    if hw is not None:
      pil = pil.resize((hw[1], hw[0]), Image.BILINEAR)
    paths.append(str(tmp_path / f'{i:03d}.png'))
    pil.save(paths[-1])
  return Split(pids=split.pids, camids=split.camids, paths=paths)


def train_spec(stop, **overrides):
  return spec.TrainInput(num_steps=stop, **{**TRAIN, **overrides})


def eval_spec(batch_size=6, tta=True):
  return spec.EvalInput(input_hw=INPUT_HW, resize_factor=FACTOR,
                        batch_size=batch_size, tta=tta)


def train_list(pipe, split, start, stop, rows=None, **overrides):
  return list(pipe.train_batches(split, train_spec(stop, **overrides), start,
                                 rows=rows))


def eval_list(pipe, split, batch_size=6, tta=True):
  return list(pipe.eval_batches(split, eval_spec(batch_size, tta)))


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]),
                                    err_msg=k)
      assert np.asarray(x[k]).dtype == np.asarray(y[k]).dtype, k


# --- train --------------------------------------------------------------------


@by_pipeline
@pytest.mark.parametrize('files', [False, True], ids=['memory', 'files'])
def test_a_process_share_is_those_rows_of_the_global_batch(pipe, files,
                                                          tmp_path):
  """Multi-host: process i reads rows lo..hi-1 of every global batch, drawn
  (indices, crops, flips, erasing) exactly as the single process draws them."""
  split = make_split()
  if files:
    split = paths_split(split, tmp_path)
  whole = train_list(pipe, split, 2, 5)
  b = P * K
  for lo, hi in ((0, b // 2), (b // 2, b), (4, 8)):
    share = train_list(pipe, split, 2, 5, rows=(lo, hi))
    assert_batches_equal(share, [
        {k: (v if k == 'step' else v[lo:hi]) for k, v in x.items()}
        for x in whole])


@pytest.mark.parametrize('rows', [(0, 0), (-1, 3), (2, 13), (5, 4)])
def test_bad_rows_are_refused(rows):
  with pytest.raises(ValueError, match='rows='):
    train_list(pipeline, make_split(), 0, 1, rows=rows)



@needs_tf
def test_numpy_and_tf_train_batches_identical():
  split = make_split()
  a, b = train_list(pipeline, split, 0, 6), train_list(tf_pipeline, split, 0, 6)
  assert_batches_equal(a, b)
  assert all(type(x['step']) is int for x in a + b)
  assert any((x['erase'][:, 2] > 0).any() for x in a)


@by_pipeline
def test_train_batch_contents(pipe):
  split = make_split()
  batches = train_list(pipe, split, 0, 5)
  assert [x['step'] for x in batches] == list(range(5))
  planner = pipeline.TrainPlanner(split.pids, train_spec(5))
  for x in batches:
    assert x['image'].shape == (P * K,) + INPUT_HW + (3,)
    assert x['image'].dtype == np.uint8 and x['pid'].dtype == np.int32
    assert x['erase'].shape == (P * K, 4) and x['erase'].dtype == np.float32
    blocks = x['pid'].reshape(P, K)
    assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == P
    assert (blocks >= 1).all()
    # Exactly the planned crops of the planned images.
    plan = planner(x['step'])
    np.testing.assert_array_equal(x['image'], augment.crop_flip(
        split.images[plan['index']], plan['crop_yx'], plan['flip'], INPUT_HW))
    np.testing.assert_array_equal(x['pid'], split.pids[plan['index']])
    np.testing.assert_array_equal(x['erase'], plan['erase'])


@by_pipeline
def test_resumed_run_sees_the_same_batches(pipe):
  split = make_split()
  full = train_list(pipe, split, 0, 7)
  assert_batches_equal(train_list(pipe, split, 3, 7), full[3:])
  assert train_list(pipe, split, 7, 7) == []


@by_pipeline
def test_train_from_paths_at_resize_size_is_exact(pipe, tmp_path):
  split = make_split()
  from_files = paths_split(split, tmp_path)
  assert_batches_equal(train_list(pipe, from_files, 0, 3),
                       train_list(pipeline, split, 0, 3))


@pytest.mark.parametrize('limit', [0, 10**9], ids=['per_batch', 'cached'])
def test_train_decoded_per_batch_equals_cached(tmp_path, limit):
  # Over the cache limit the numpy pipeline decodes each batch's files
  # (MARS-size training sets); the batches must not change.
  split = make_split()
  from_files = paths_split(split, tmp_path)
  assert_batches_equal(
      train_list(pipeline, from_files, 0, 4, cache_limit_bytes=limit),
      train_list(pipeline, split, 0, 4))


@by_pipeline
def test_train_from_paths_needing_resize(pipe, tmp_path):
  split = make_split()
  # Smooth images, so PIL's and TF's bilinear resampling nearly agree.
  yy, xx = np.meshgrid(np.arange(24), np.arange(12), indexing='ij')
  smooth = np.stack([yy * 10, xx * 20, yy * 5 + xx * 5], -1).astype(np.uint8)
  split = Split(pids=split.pids, camids=split.camids,
                images=np.stack([smooth] * len(split)))
  from_files = paths_split(split, tmp_path)
  got = train_list(pipe, from_files, 0, 2, hflip=False)
  want_images = augment.load_images(from_files.paths, RESIZE_HW)
  want = train_list(pipeline, Split(split.pids, split.camids,
                                    images=want_images), 0, 2, hflip=False)
  for x, y in zip(got, want):
    assert x['image'].shape == y['image'].shape
    diff = np.abs(x['image'].astype(int) - y['image'].astype(int))
    assert diff.mean() < 2 and diff.max() <= 12


@by_pipeline
def test_wrong_image_size_raises(pipe):
  split = make_split(hw=(32, 16))
  with pytest.raises(ValueError, match=r'32x16 images.*resize size 36x18'):
    pipe.train_batches(split, train_spec(2), 0)
  with pytest.raises(ValueError, match=r'32x16 images.*resize size 36x18'):
    pipe.eval_batches(split, eval_spec(batch_size=4))


@by_pipeline
def test_too_few_identities_raises_before_the_first_batch(pipe):
  with pytest.raises(ValueError, match='only 8 identities'):
    pipe.train_batches(make_split(), train_spec(2, P=9), 0)


@by_pipeline
def test_corrupt_file_error_names_it(pipe, tmp_path):
  split = paths_split(make_split(), tmp_path)
  bad = split.paths[split.pids.tolist().index(1)]  # sampled in every batch
  with open(bad, 'wb') as f:
    f.write(b'garbage')
  with pytest.raises(errors.DataError, match=os.path.basename(bad)):
    # P = all 8 ids, so id 1 (and its corrupt file) is in the first batch.
    train_list(pipe, split, 0, 2, P=8)
  with pytest.raises(errors.DataError, match=os.path.basename(bad)):
    eval_list(pipe, split, batch_size=4)


def test_producer_exception_reraised_in_consumer():
  def source():
    yield 1
    raise KeyError('boom')
  it = pipeline.Prefetcher(source(), 2)
  assert next(it) == 1
  with pytest.raises(KeyError, match='boom'):
    next(it)
  with pytest.raises(StopIteration):
    next(it)


def _live(name):
  return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_thread_stops_on_close_and_on_garbage_collection():
  split = make_split()
  for stop in ('close', 'del'):
    it = pipeline.train_batches(split, train_spec(10**6), 0)
    next(it)
    assert _live('train_batches')
    if stop == 'close':
      it.close()
      with pytest.raises(StopIteration):
        next(it)
    else:
      del it
      gc.collect()
    for t in _live('train_batches'):
      t.join(timeout=5)
    assert not _live('train_batches')


def test_ordered_map_keeps_order_with_many_workers():
  def slow_square(i):
    threading.Event().wait(0.001 * (i % 3))  # finish out of order
    return i * i
  got = list(pipeline.ordered_map(slow_square, range(50), workers=4,
                                  window=6))
  assert got == [i * i for i in range(50)]


def test_several_workers_give_the_same_batches(monkeypatch):
  split = make_split()
  want_train = train_list(pipeline, split, 0, 8)
  want_eval = eval_list(pipeline, split)
  monkeypatch.setattr(pipeline, 'default_workers', lambda: 3)
  assert_batches_equal(train_list(pipeline, split, 0, 8), want_train)
  assert_batches_equal(eval_list(pipeline, split), want_eval)
  it = pipeline.train_batches(split, train_spec(10**6), 0)
  next(it)
  it.close()  # also stops the worker pool
  assert not [t for t in threading.enumerate()
              if t.name.startswith('batch') and t.is_alive()]


def test_no_hang_at_exit_with_a_running_pipeline():
  # The consumer walks away mid-run without close(): the interpreter must
  # still exit promptly (daemon producer, worker pool shut down at exit).
  code = '''
import numpy as np
from dare_jax.data import numpy_pipeline as pipeline
from dare_jax.data import spec
from dare_jax.data.types import Split
pipeline.default_workers = lambda: 3
pids = np.repeat(np.arange(1, 9), 4)
split = Split(pids=pids, camids=0 * pids,
              images=np.zeros((32, 36, 18, 3), np.uint8))
it = pipeline.train_batches(split, spec.TrainInput(
    P=2, K=2, seed=0, num_steps=10**9,
    input_hw=(32, 16), resize_factor=1.125, hflip=True,
    random_erasing=True, erasing_p=0.5, erasing_area=(0.02, 0.2),
    erasing_aspect=0.3, prefetch=2), 0)
next(it)
KEEP = it
print('ok')
'''
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', code], check=True, cwd=root,
                       env={**os.environ, 'PYTHONPATH': root}, timeout=60,
                       capture_output=True, text=True)
  assert out.stdout.strip() == 'ok'


def test_synchronous_mode():
  split = make_split()
  assert_batches_equal(train_list(pipeline, split, 0, 3, prefetch=0),
                       train_list(pipeline, split, 0, 3))


# --- eval ---------------------------------------------------------------------


@needs_tf
@pytest.mark.parametrize('tta', [True, False])
def test_numpy_and_tf_eval_batches_identical(tta):
  split = make_split()  # 40 images: 6 full batches of 6, then 4 + 2 padding
  a, b = eval_list(pipeline, split, tta=tta), eval_list(tf_pipeline, split,
                                                        tta=tta)
  assert_batches_equal(a, b)
  assert len(a) == pipeline.num_eval_batches(len(split), 6) == 7
  assert a[-1]['valid'].tolist() == [True] * 4 + [False] * 2
  assert (a[-1]['views'][4:] == 0).all()


@by_pipeline
@pytest.mark.parametrize('tta', [True, False])
def test_eval_covers_every_image_once_in_order(pipe, tta):
  split = make_split()
  batches = eval_list(pipe, split, tta=tta)
  views = np.concatenate([x['views'] for x in batches])
  valid = np.concatenate([x['valid'] for x in batches])
  v = 10 if tta else 1
  assert views.shape == (42, v) + INPUT_HW + (3,)
  assert valid.sum() == len(split) and valid[:len(split)].all()
  assert (views[~valid] == 0).all()
  if tta:
    np.testing.assert_array_equal(views[valid],
                                  augment.ten_crop(split.images, INPUT_HW))
  else:  # the whole image resized, not the centre crop (see below)
    np.testing.assert_array_equal(views[valid][:, 0],
                                  pil_resize(split.images, INPUT_HW))


def pil_resize(images, hw):
  """The reference single view: each whole image, PIL bilinear to hw."""
  return np.stack([np.asarray(Image.fromarray(im).resize(
      (hw[1], hw[0]), Image.BILINEAR)) for im in images])


@by_pipeline
@pytest.mark.parametrize('files', [False, True], ids=['memory', 'files'])
def test_single_view_is_the_whole_image_resized_not_a_crop(pipe, files,
                                                           tmp_path):
  """eval.tta=False: the authors resize the whole image to (H, W)
  (extract_features.py: transforms.Resize(scale_image_size), no crop). Was
  the centre crop of the 1.125x image before. Files are resized straight
  from the file (PIL bit-exact; tf.image.resize close to it)."""
  split = make_split(n_ids=4, per_id=2)  # 11 images: 2 batches of 6
  if files:
    # Smooth originals at another size, as real crops are; the reference
    # resizes the ORIGINAL, not the 1.125x copy.
    yy, xx = np.meshgrid(np.arange(24), np.arange(12), indexing='ij')
    smooth = np.stack([yy * 10, xx * 20, yy * 5 + xx * 5], -1)
    originals = np.stack([(smooth + 3 * i) % 256 for i in range(len(split))]
                         ).astype(np.uint8)
    split = paths_split(Split(split.pids, split.camids, images=originals),
                        tmp_path)
    want = pil_resize(originals, INPUT_HW)
    crop = augment.center_crop(augment.load_images(split.paths, RESIZE_HW),
                               INPUT_HW)[:, 0]
  else:
    want = pil_resize(split.images, INPUT_HW)
    crop = augment.center_crop(split.images, INPUT_HW)[:, 0]
  got = np.concatenate([x['views'] for x in eval_list(pipe, split,
                                                      tta=False)])
  assert got.shape[1:] == (1,) + INPUT_HW + (3,)
  got = got[:len(want), 0]
  if pipe is pipeline or not files:
    np.testing.assert_array_equal(got, want)
  else:
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.mean() < 1 and diff.max() <= 4, (diff.mean(), diff.max())
  crop_diff = np.abs(got.astype(int) - crop.astype(int)).mean()
  assert crop_diff > 2 * np.abs(got.astype(int) - want.astype(int)).mean() + 1


@by_pipeline
def test_eval_from_paths_is_exact_at_resize_size(pipe, tmp_path):
  split = make_split()
  assert_batches_equal(eval_list(pipe, paths_split(split, tmp_path)),
                       eval_list(pipeline, split))


@by_pipeline
def test_eval_from_paths_needing_resize(pipe, tmp_path):
  split = make_split()
  files = paths_split(split, tmp_path, hw=(24, 12))
  got = eval_list(pipe, files, batch_size=16)
  want = augment.ten_crop(augment.load_images(files.paths, RESIZE_HW),
                          INPUT_HW)
  views = np.concatenate([x['views'] for x in got])[:len(split)]
  assert views.shape == want.shape
  # Random pixels are the worst case for resampler differences.
  diff = np.abs(views.astype(int) - want.astype(int))
  assert diff.mean() < 8


@by_pipeline
def test_empty_eval_split(pipe):
  empty = Split(pids=np.zeros(0, np.int64), camids=np.zeros(0, np.int64),
                images=np.zeros((0,) + RESIZE_HW + (3,), np.uint8))
  assert eval_list(pipe, empty) == []
  assert pipeline.num_eval_batches(0, 5) == 0


def test_numpy_side_never_imports_tensorflow():
  code = ('import sys; import dare_jax.data.numpy_pipeline, dare_jax.data.augment, '
          'dare_jax.data.sampler, dare_jax.data.device_ops; '
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, '-c', code], check=True, cwd=root,
                 env={**os.environ, 'PYTHONPATH': root})
