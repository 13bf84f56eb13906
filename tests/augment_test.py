"""augment.py (host plans, crops, TTA views, decoding) and device_ops.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dare_jax import errors
from dare_jax.data import augment
from dare_jax.data import device_ops
from dare_jax.data import spec

PLAN = spec.Augmentation(hflip=True, random_erasing=True, erasing_p=0.5,
                         erasing_area=(0.02, 0.2), erasing_aspect=0.3)


def random_images(n, h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)


def test_resize_size():
  assert augment.resize_size((256, 128), 1.125) == (288, 144)
  assert augment.resize_size((32, 16), 1.125) == (36, 18)
  assert augment.resize_size((32, 16), 1.0) == (32, 16)


# --- train_plan ---------------------------------------------------------------


def test_plan_is_pure_in_seed_and_step():
  args = (2000, (36, 18), (32, 16))
  a = augment.train_plan(0, 5, *args, PLAN)
  b = augment.train_plan(0, 5, *args, PLAN)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  c = augment.train_plan(0, 6, *args, PLAN)
  d = augment.train_plan(1, 5, *args, PLAN)
  assert not np.array_equal(a['crop_yx'], c['crop_yx'])
  assert not np.array_equal(a['crop_yx'], d['crop_yx'])
  assert a['crop_yx'].dtype == np.int32 and a['crop_yx'].shape == (2000, 2)
  assert a['flip'].dtype == bool and a['erase'].dtype == np.float32


def test_crop_offsets_cover_exactly_the_valid_positions():
  plan = augment.train_plan(3, 0, 2000, (36, 18), (32, 16), PLAN)
  y, x = plan['crop_yx'].T
  assert set(y) == set(range(5)) and set(x) == set(range(3))


def test_flip_probability_and_hflip_off():
  plan = augment.train_plan(0, 0, 4000, (36, 18), (32, 16), PLAN)
  assert abs(plan['flip'].mean() - 0.5) < 0.04
  off = augment.train_plan(0, 0, 4000, (36, 18), (32, 16),
                           dataclasses.replace(PLAN, hflip=False))
  assert not off['flip'].any()
  # The crops do not depend on whether flipping is on.
  np.testing.assert_array_equal(off['crop_yx'], plan['crop_yx'])


def test_erasing_boxes_inside_and_within_ranges():
  h, w = 256, 128
  plan = augment.train_plan(0, 0, 4000, (288, 144), (h, w), PLAN)
  e = plan['erase'].astype(np.int64)
  on = e[:, 2] > 0
  # Nearly every attempt succeeds at this size, so ~erasing_p are erased.
  assert abs(on.mean() - 0.5) < 0.04
  assert (e[~on] == 0).all()
  y0, x0, eh, ew = e[on].T
  assert (y0 >= 0).all() and (x0 >= 0).all()
  assert (eh < h).all() and (ew < w).all()
  assert (y0 + eh <= h).all() and (x0 + ew <= w).all()
  area = eh * ew / (h * w)
  # Rounding h and w to integers moves the area by at most ~1%.
  assert area.min() > 0.02 * 0.97 and area.max() < 0.2 * 1.03
  aspect = eh / ew
  assert aspect.min() > 0.3 * 0.9 and aspect.max() < (1 / 0.3) * 1.1
  # Offsets are uniform over the valid range: both ends get reached.
  assert (y0 == 0).any() and (y0 + eh == h).any()


def test_erasing_probability_and_off():
  for p in (0.0, 0.2, 1.0):
    plan = augment.train_plan(1, 2, 3000, (288, 144), (256, 128),
                              dataclasses.replace(PLAN, erasing_p=p))
    assert abs((plan['erase'][:, 2] > 0).mean() - p) < 0.03
  off = augment.train_plan(1, 2, 50, (288, 144), (256, 128),
                           dataclasses.replace(PLAN, random_erasing=False))
  assert (off['erase'] == 0).all()


def test_crop_larger_than_image_raises():
  with pytest.raises(ValueError, match='larger than'):
    augment.train_plan(0, 0, 4, (30, 18), (32, 16), PLAN)


# --- crop_flip ----------------------------------------------------------------


def test_crop_flip_equals_direct_slicing():
  images = random_images(64, 36, 18)
  plan = augment.train_plan(0, 0, 64, (36, 18), (32, 16), PLAN)
  got = augment.crop_flip(images, plan['crop_yx'], plan['flip'], (32, 16))
  assert got.dtype == np.uint8 and got.shape == (64, 32, 16, 3)
  for b in range(64):
    y, x = plan['crop_yx'][b]
    want = images[b, y:y + 32, x:x + 16]
    if plan['flip'][b]:
      want = np.flip(want, axis=1)
    np.testing.assert_array_equal(got[b], want)


def test_flip_twice_is_identity():
  images = random_images(3, 32, 16)
  crop = np.zeros((3, 2), np.int32)
  flip = np.ones(3, bool)
  once = augment.crop_flip(images, crop, flip, (32, 16))
  np.testing.assert_array_equal(once, images[:, :, ::-1])
  np.testing.assert_array_equal(
      augment.crop_flip(once, crop, flip, (32, 16)), images)


# --- five / ten crops ---------------------------------------------------------


def test_five_crop_offsets_by_hand():
  # 9x7 image, 4x4 crop: margins 5 and 3; the centre is
  # (round(2.5), round(1.5)) = (2, 2) with Python's round-half-to-even.
  np.testing.assert_array_equal(
      augment.five_crop_offsets((9, 7), (4, 4)),
      [[0, 0], [0, 3], [5, 0], [5, 3], [2, 2]])
  np.testing.assert_array_equal(
      augment.five_crop_offsets((288, 144), (256, 128)),
      [[0, 0], [0, 16], [32, 0], [32, 16], [16, 8]])


def test_ten_crop_matches_torchvision_semantics():
  images = np.arange(2 * 9 * 7 * 3, dtype=np.int64).reshape(2, 9, 7, 3)
  images = (images % 251).astype(np.uint8)  # distinct within an image
  views = augment.ten_crop(images, (4, 4))
  assert views.shape == (2, 10, 4, 4, 3) and views.dtype == np.uint8
  # Built independently: TenCrop = FiveCrop(img) + FiveCrop(hflip(img)),
  # with the offsets worked out by hand above.
  corners = [(0, 0), (0, 3), (5, 0), (5, 3), (2, 2)]
  for b in range(2):
    mirrored = np.fliplr(images[b])
    want = ([images[b, y:y + 4, x:x + 4] for y, x in corners] +
            [mirrored[y:y + 4, x:x + 4] for y, x in corners])
    np.testing.assert_array_equal(views[b], np.stack(want))
  # Flipping the image swaps left and right: view 5 mirrors view 1, etc.
  for flipped, plain in ((5, 1), (6, 0), (7, 3), (8, 2)):
    np.testing.assert_array_equal(views[:, flipped],
                                  views[:, plain, :, ::-1])
  # With an odd horizontal margin (3) the flipped image's centre crop starts
  # at x=2 in flipped coordinates = x=1 in the original, so it is NOT the
  # mirrored centre crop (which would start at x=2).
  assert not np.array_equal(views[:, 9], views[:, 4, :, ::-1])
  np.testing.assert_array_equal(views[:, 9],
                                images[:, 2:6, 1:5][:, :, ::-1])


def test_center_crop():
  images = random_images(3, 36, 18)
  got = augment.center_crop(images, (32, 16))
  assert got.shape == (3, 1, 32, 16, 3)
  np.testing.assert_array_equal(got[:, 0], images[:, 2:34, 1:17])
  np.testing.assert_array_equal(got[:, 0],
                                augment.ten_crop(images, (32, 16))[:, 4])


def _bilinear_reference(images, hw):
  """float [N, H, W, 3]: PIL's BILINEAR written out in numpy, separably: a
  triangle filter widened by the scale when it shrinks (antialiased), pixel
  centres at (i + 0.5) * scale, weights normalised at the borders. PIL
  rounds in fixed point (and to uint8 between its two passes), so it
  agrees to about +-1."""
  def weights(n_in, n_out):
    scale = n_in / n_out
    support = max(scale, 1.0)
    centre = (np.arange(n_out) + 0.5) * scale
    d = (np.arange(n_in)[None, :] + 0.5 - centre[:, None]) / support
    w = np.maximum(0.0, 1.0 - np.abs(d))
    return w / w.sum(axis=1, keepdims=True)  # [n_out, n_in]
  wy, wx = weights(images.shape[1], hw[0]), weights(images.shape[2], hw[1])
  return np.einsum('yi,nijc,xj->nyxc', wy, images.astype(np.float64), wx)


@pytest.mark.parametrize('src_hw', [(36, 18), (20, 10)],
                         ids=['shrink', 'enlarge'])
def test_resize_images_is_the_whole_image_bilinear(src_hw):
  # The single eval view (eval.tta=False): the whole image at H x W, as the
  # authors' transforms.Resize((H, W)); not a crop.
  images = random_images(3, *src_hw)
  got = augment.resize_images(images, (32, 16))
  assert got.shape == (3, 32, 16, 3) and got.dtype == np.uint8
  diff = np.abs(got - _bilinear_reference(images, (32, 16)))
  assert diff.max() <= 1 + 1e-9 and diff.mean() < 0.4, (diff.max(),
                                                         diff.mean())
  if src_hw == (36, 18):
    assert (got != augment.center_crop(images, (32, 16))[:, 0]).mean() > 0.5
  out = np.zeros((3, 2, 32, 16, 3), np.uint8)
  augment.resize_images(images, (32, 16), out=out[:, 1])
  np.testing.assert_array_equal(out[:, 1], got)
  assert (out[:, 0] == 0).all()
  with pytest.raises(ValueError, match='expected'):
    augment.resize_images(images, (32, 16), out=out[:, :1])


def test_resize_images_at_the_size_is_a_copy():
  images = random_images(2, 32, 16)
  got = augment.resize_images(images, (32, 16))
  np.testing.assert_array_equal(got, images)
  assert got is not images


# --- load_images --------------------------------------------------------------


def write_png(path, array):
  Image.fromarray(array).save(path)
  return str(path)


def test_load_images_exact_at_resize_size_and_resized_otherwise(tmp_path):
  images = random_images(3, 36, 18)
  paths = [write_png(tmp_path / f'{i}.png', im) for i, im in enumerate(images)]
  np.testing.assert_array_equal(augment.load_images(paths, (36, 18)), images)
  small = write_png(tmp_path / 'small.png', random_images(1, 12, 6)[0])
  gray = tmp_path / 'gray.png'
  Image.fromarray(np.full((10, 5), 77, np.uint8), 'L').save(gray)
  got = augment.load_images([small, str(gray)], (36, 18))
  assert got.shape == (2, 36, 18, 3) and got.dtype == np.uint8
  assert (got[1] == 77).all()
  assert augment.load_images([], (36, 18)).shape == (0, 36, 18, 3)


def test_load_images_names_a_corrupt_or_missing_file(tmp_path):
  good = write_png(tmp_path / 'good.png', random_images(1, 36, 18)[0])
  bad = tmp_path / 'broken_file.png'
  bad.write_bytes(b'this is not a png')
  with pytest.raises(errors.DataError, match='broken_file.png'):
    augment.load_images([good, str(bad), good], (36, 18))
  with pytest.raises(errors.DataNotFoundError, match='no_such_file.png'):
    augment.load_images([good, str(tmp_path / 'no_such_file.png')], (36, 18))


def test_load_images_logs_progress_for_long_lists(tmp_path, monkeypatch):
  path = write_png(tmp_path / 'a.png', random_images(1, 6, 3)[0])
  messages = []
  monkeypatch.setattr(augment.logging, 'info',
                      lambda msg, *args: messages.append(msg % args))
  augment.load_images([path] * 2000, (6, 3), what='train images')
  assert 18 <= len(messages) <= 21 and '2000/2000' in messages[-1]


# --- device_ops ---------------------------------------------------------------


def test_normalize_matches_numpy():
  images = random_images(2, 5, 4)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  want = (images / 255.0 - np.array(mean)) / np.array(std)
  got = jax.jit(lambda x: device_ops.normalize(x, mean, std))(images)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
  bf16 = device_ops.normalize(images, mean, std, dtype=jnp.bfloat16)
  assert bf16.dtype == jnp.bfloat16


@pytest.mark.slow
def test_random_erase():
  b, h, w = 4, 8, 6
  x = jnp.asarray(np.random.default_rng(0).normal(size=(b, h, w, 3)),
                  jnp.float32)
  boxes = np.array([[1, 2, 3, 2], [0, 0, 0, 0], [0, 0, h - 1, w - 1],
                    [5, 4, 3, 2]], np.float32)
  keys = jax.random.split(jax.random.key(0), b)
  got = np.asarray(jax.jit(device_ops.random_erase)(x, boxes, keys))
  x = np.asarray(x)
  for i, (y0, x0, bh, bw) in enumerate(boxes.astype(int)):
    inside = np.zeros((h, w), bool)
    inside[y0:y0 + bh, x0:x0 + bw] = True
    noise = np.asarray(jax.random.normal(keys[i], (h, w, 3)))
    np.testing.assert_array_equal(got[i][~inside], x[i][~inside])
    np.testing.assert_array_equal(got[i][inside], noise[inside])
    assert inside.sum() == bh * bw
  np.testing.assert_array_equal(got[1], x[1])  # h == 0: untouched
  # Same keys, same noise; raw uint32 keys work too.
  again = device_ops.random_erase(jnp.asarray(x), boxes,
                                  jax.random.key_data(keys))
  np.testing.assert_array_equal(np.asarray(again), got)
  other = device_ops.random_erase(jnp.asarray(x), boxes,
                                  jax.random.split(jax.random.key(1), b))
  assert not np.array_equal(np.asarray(other)[0], got[0])
