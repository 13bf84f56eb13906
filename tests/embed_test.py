"""Video evaluation helpers: frame selection, tracklet pooling, Split.take;
and inference/images (tools/embed) preparing images as --mode=eval does."""

import numpy as np
from PIL import Image
import pytest

from dare_jax.data import numpy_pipeline as pipeline
from dare_jax.data import spec
from dare_jax.data.types import Split
from dare_jax.evaluation import embed
from dare_jax.inference import images


def test_select_tracklet_frames_by_hand():
  # Tracklets of 5, 2 and 1 frames.
  t = np.array([0, 0, 0, 0, 0, 1, 1, 2])
  np.testing.assert_array_equal(embed.select_tracklet_frames(t, 0),
                                np.arange(8))
  np.testing.assert_array_equal(embed.select_tracklet_frames(t, 3),
                                [0, 2, 4, 5, 6, 7])
  np.testing.assert_array_equal(embed.select_tracklet_frames(t, 1),
                                [0, 5, 7])
  np.testing.assert_array_equal(embed.select_tracklet_frames(t, 2),
                                [0, 4, 5, 6, 7])


def test_pool_tracklets_is_the_mean_of_frames():
  rng = np.random.default_rng(0)
  t = np.array([0, 0, 0, 1, 2, 2])
  emb = rng.normal(size=(6, 4)).astype(np.float32)
  got = embed.pool_tracklets(emb, t)
  want = np.stack([emb[0:3].mean(0), emb[3], emb[4:6].mean(0)])
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_split_take_renumbers_tracklets_and_ids():
  split = Split(pids=np.array([4, 4, 7, 7, 9]),
                camids=np.array([0, 0, 1, 1, 2]),
                paths=['a', 'b', 'c', 'd', 'e'],
                tracklets=np.array([0, 0, 1, 1, 2]))
  sub = split.take([1, 4])  # tracklet 1 loses every frame
  assert sub.paths == ['b', 'e']
  np.testing.assert_array_equal(sub.tracklets, [0, 1])
  assert sub.num_items == 2
  pids, camids = sub.item_ids()
  np.testing.assert_array_equal(pids, [4, 9])
  np.testing.assert_array_equal(camids, [0, 2])
  assert split.num_items == 3
  with pytest.raises(ValueError, match='increasing'):
    split.take([2, 1])


def test_split_rejects_inconsistent_tracklets():
  with pytest.raises(ValueError, match='share one pid'):
    Split(pids=np.array([1, 2]), camids=np.array([0, 0]), paths=['a', 'b'],
          tracklets=np.array([0, 0]))
  with pytest.raises(ValueError, match='contiguous'):
    Split(pids=np.array([1, 1, 1]), camids=np.array([0, 0, 0]),
          paths=['a', 'b', 'c'], tracklets=np.array([0, 1, 0]))


@pytest.mark.parametrize('tta', [10, 1])
def test_embed_files_prepares_images_as_eval_batches(tta, tmp_path):
  """tools/embed's views are --mode=eval's (numpy pipeline) on the same
  files, so its embeddings equal --mode=export's (tests/inference_test.py
  checks that end to end at tta=10). tta=1: the whole image resized to the
  input size, as the authors' single view; no crop."""
  input_hw, n = (32, 16), 5
  rng = np.random.default_rng(0)
  originals = rng.integers(0, 256, (n, 40, 20, 3), np.uint8)
  files = []
  for i, im in enumerate(originals):
    files.append(str(tmp_path / f'{i}.png'))
    Image.fromarray(im).save(files[-1])
  eval_input = spec.EvalInput(input_hw=input_hw, resize_factor=1.125,
                              batch_size=4, tta=tta == 10)
  split = Split(pids=np.arange(n), camids=np.zeros(n, np.int64), paths=files)
  views = np.concatenate([b['views'] for b in
                          pipeline.eval_batches(split, eval_input)])[:n]
  got, ok = images.embed_files(
      lambda x: {'x': x.reshape(len(x), -1)}, files, input_hw=input_hw,
      resize_hw=eval_input.resize_hw, normalize=lambda v: v.astype(np.float32),
      tta=tta, batch=3)
  assert ok.all()
  want = views.reshape(n, tta, -1).astype(np.float32).mean(axis=1)
  np.testing.assert_allclose(got['x'], want, rtol=1e-6)
  if tta == 1:
    whole = np.stack([np.asarray(Image.fromarray(im).resize(
        (input_hw[1], input_hw[0]), Image.BILINEAR)) for im in originals])
    np.testing.assert_array_equal(got['x'], whole.reshape(n, -1))
