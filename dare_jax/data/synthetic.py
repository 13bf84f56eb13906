"""The built-in synthetic re-ID dataset: procedural pedestrians, NumPy only.

Every image is a figure (head, hair, neck, torso, arms, hands, legs, shoes,
optional bag) drawn over a per-camera background, then put through the
camera's colour cast, brightness, haze, blur and sensor noise. Shapes are
signed-distance functions in normalised body coordinates (y from the top of
the head, 0, to the soles, 1; x from the body axis, in units of body height),
rasterised directly at the requested size with one pixel of anti-aliasing, so
any image size renders the same scene.

Identities come in two kinds, after the paper's Figure 1 (early exits are
good on some queries and bad on others):
  easy: saturated clothing colours, large patterns (stripes, checks, a big
    logo), varied body proportions, hair styles, sleeves, skirts, bags.
  hard ("nondescript"): one of a few shared coarse looks (dark plain
    clothes, one body shape) and unique only in fine detail: a small logo,
    shoe colour, hair colour, thin pinstripes, a small bag. At coarse
    resolution they are confusable; at full resolution they are not.
The hard person ids are in `extras['hard_pids']`.

Splits follow Market-1501: train ids 1..num_train_ids, test ids after them;
each identity is seen by 2-4 cameras with >= 2 images in each; the query
holds one or two images per test identity, from distinct cameras; the
gallery holds the rest (so every query has a cross-camera match and a
same-camera image that the protocol excludes), junk (pid -1: background only
or badly cropped fragments) and distractors (pid 0: people outside the test
identities).
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import tempfile
import warnings
import zipfile
from typing import NamedTuple, Optional

import numpy as np

from dare_jax import errors
from dare_jax.data.types import ReidDataset, Split

GENERATOR_VERSION = 1  # bump when the rendering changes; part of the cache key

MIN_IMAGE_SIZE = (32, 16)  # (H, W)
MIN_IDS = 2  # per split: retrieval needs a wrong answer to be possible

# Images per identity and cameras per identity (Market-1501 has ~7 images
# over ~3 of 6 cameras per identity).
_IMAGES_PER_ID = (8, 12)  # inclusive
_MAX_CAMERAS_PER_ID = 4
_MIN_IMAGES_PER_CAMERA = 2
_JUNK_FRACTION = 0.035  # of the gallery
_DISTRACTOR_FRACTION = 0.035
# Pixels per chunk: a chunk's float32 planes stay in cache.
_CHUNK_PIXELS = 1 << 18
_NOISE_STD = 0.015  # sensor noise, in [0, 1] intensity units

# The hard ids' shared coarse looks: (upper, lower) RGB in [0, 1].
_HARD_LOOKS = np.array([
    [(0.32, 0.32, 0.34), (0.10, 0.10, 0.11)],  # dark grey / black
    [(0.12, 0.15, 0.30), (0.24, 0.24, 0.26)],  # navy / dark grey
    [(0.09, 0.09, 0.10), (0.13, 0.15, 0.26)],  # black / navy
    [(0.30, 0.21, 0.14), (0.11, 0.10, 0.10)],  # dark brown / black
], np.float32)
_HARD_SKIN = (0.78, 0.60, 0.48)
_HARD_HEIGHT, _HARD_WIDTH, _HARD_LEG = 0.93, 1.0, 0.47
# The hard ids' fine-detail options; each hard id gets a distinct
# combination within its coarse look.
_LOGO_COLOURS = np.array([
    (0.88, 0.12, 0.10), (0.95, 0.85, 0.15), (0.95, 0.95, 0.95),
    (0.10, 0.75, 0.85), (0.20, 0.75, 0.25), (0.95, 0.50, 0.10)], np.float32)
_SHOE_COLOURS = np.array([
    (0.92, 0.92, 0.92), (0.06, 0.06, 0.06), (0.80, 0.12, 0.12),
    (0.15, 0.30, 0.80), (0.70, 0.55, 0.35), (0.55, 0.55, 0.55)], np.float32)
_HAIR_COLOURS = np.array([
    (0.06, 0.05, 0.05), (0.35, 0.20, 0.10), (0.85, 0.70, 0.40),
    (0.62, 0.62, 0.62)], np.float32)
_SMALL_BAG_COLOURS = np.array([
    (0.80, 0.15, 0.12), (0.72, 0.55, 0.33), (0.92, 0.92, 0.90)], np.float32)
# logo (none or colour x side), shoes, hair, pinstripes (no/yes), small bag
# (none or colour x side).
_FINE_OPTIONS = (1 + 2 * len(_LOGO_COLOURS), len(_SHOE_COLOURS),
                 len(_HAIR_COLOURS), 2, 1 + 2 * len(_SMALL_BAG_COLOURS))

_SKIN_TONES = np.array([
    (0.95, 0.80, 0.69), (0.87, 0.68, 0.55), (0.78, 0.60, 0.48),
    (0.60, 0.43, 0.32), (0.42, 0.29, 0.21)], np.float32)
_COMMON_LOWER = np.array([
    (0.20, 0.30, 0.55), (0.08, 0.08, 0.09), (0.72, 0.64, 0.45),
    (0.90, 0.90, 0.88), (0.50, 0.50, 0.52)], np.float32)

# Pattern codes for the upper garment.
_PLAIN, _HSTRIPES, _VSTRIPES, _CHECKS = 0, 1, 2, 3
# Lower garment styles.
_TROUSERS, _SHORTS, _SKIRT = 0, 1, 2
# Image kinds.
_PERSON, _JUNK_FRAGMENT, _JUNK_BACKGROUND = 0, 1, 2

# Body layout, in body units (height 1); widths scale with the id's width.
_HEAD_CY, _HEAD_RX, _HEAD_RY = 0.07, 0.052, 0.068
_SHOULDER_Y = 0.165
_ANKLE_Y = 0.955
_ARM_LEN = 0.33


def make_synthetic(*, num_train_ids: int, num_test_ids: int, num_cameras: int,
                   hard_fraction: float, seed: int, image_size: tuple[int, int],
                   cache_dir: Optional[str] = None) -> ReidDataset:
  """Generates (or loads from cache_dir) the synthetic dataset.

  Args:
    num_train_ids: identities in the train split (pids 1..num_train_ids).
    num_test_ids: identities in query and gallery (the pids after those).
    num_cameras: cameras (camids 0..num_cameras-1), >= 2.
    hard_fraction: fraction of the identities in each split that are hard
      (nondescript), in [0, 1].
    seed: the whole dataset is a function of the arguments.
    image_size: (H, W) of the stored images, at least MIN_IMAGE_SIZE.
    cache_dir: if given, the dataset is saved to and loaded from
      cache_dir/synthetic-<hash of the arguments>.npz.

  Returns:
    A ReidDataset with uint8 images [N, H, W, 3] in every split and
    extras['hard_pids'], int64 [M], the hard identities of both splits.

  Raises:
    errors.ConfigError (a ValueError): an argument is out of range.
  """
  args = check_args(num_train_ids=num_train_ids, num_test_ids=num_test_ids,
                    num_cameras=num_cameras, hard_fraction=hard_fraction,
                    seed=seed, image_size=image_size)
  if not cache_dir:
    return _generate(**args)
  key = json.dumps(dict(args, version=GENERATOR_VERSION), sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f'synthetic-{digest}.npz')
  dataset = _load(path, key)
  if dataset is None:
    dataset = _generate(**args)
    _save(path, key, dataset)
  return dataset


def check_args(*, num_train_ids, num_test_ids, num_cameras, hard_fraction,
               seed, image_size) -> dict:
  """Checks and normalises the arguments to plain Python types (also run by
  spec.check_config on config.data.synthetic, before any work)."""
  def as_int(name, value):
    if isinstance(value, bool):
      raise errors.ConfigError(f'synthetic: {name} must be an int, got '
                               f'{value!r}.')
    try:
      return operator.index(value)
    except TypeError:
      raise errors.ConfigError(
          f'synthetic: {name} must be an int, got {value!r}.') from None

  num_train_ids = as_int('num_train_ids', num_train_ids)
  num_test_ids = as_int('num_test_ids', num_test_ids)
  num_cameras = as_int('num_cameras', num_cameras)
  seed = as_int('seed', seed)
  if num_train_ids < MIN_IDS or num_test_ids < MIN_IDS:
    raise errors.ConfigError(
        f'synthetic: need at least {MIN_IDS} train and {MIN_IDS} test '
        f'identities; got num_train_ids={num_train_ids}, '
        f'num_test_ids={num_test_ids}.')
  if num_cameras < 2:
    raise errors.ConfigError(
        f'synthetic: num_cameras must be >= 2 (re-ID matches across '
        f'cameras); got {num_cameras}.')
  try:
    hard_fraction = float(hard_fraction)
  except (TypeError, ValueError):
    raise errors.ConfigError(f'synthetic: hard_fraction must be a number, '
                             f'got {hard_fraction!r}.') from None
  if not 0.0 <= hard_fraction <= 1.0:  # also rejects NaN
    raise errors.ConfigError(
        f'synthetic: hard_fraction must be in [0, 1]; got {hard_fraction}.')
  if seed < 0:
    raise errors.ConfigError(f'synthetic: seed must be >= 0; got {seed}.')
  def as_size(value):
    # Sizes may come out of float arithmetic (input_size x resize_factor):
    # accept whole numbers such as 36.0.
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
      return int(value)
    return as_int('image_size', value)

  try:
    height, width = (as_size(v) for v in image_size)
  except (TypeError, ValueError):
    raise errors.ConfigError(
        f'synthetic: image_size must be (H, W); got {image_size!r}.') from None
  if height < MIN_IMAGE_SIZE[0] or width < MIN_IMAGE_SIZE[1]:
    raise errors.ConfigError(
        f'synthetic: image_size (H, W) must be at least {MIN_IMAGE_SIZE}; got '
        f'{(height, width)} (from data.input_size x data.resize_factor).')
  return dict(num_train_ids=num_train_ids, num_test_ids=num_test_ids,
              num_cameras=num_cameras, hard_fraction=hard_fraction,
              seed=seed, image_size=(height, width))


# --- cache -------------------------------------------------------------------

_SPLITS = ('train', 'query', 'gallery')


def _load(path: str, key: str) -> Optional[ReidDataset]:
  """The cached dataset, or None when absent, unreadable or for other args."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      if str(f['key']) != key:
        return None
      splits = {s: Split(pids=f[f'{s}_pids'], camids=f[f'{s}_camids'],
                         images=f[f'{s}_images']) for s in _SPLITS}
      extras = {k[len('extras_'):]: f[k] for k in f.files
                if k.startswith('extras_')}
  except (OSError, ValueError, TypeError, KeyError, EOFError,
          zipfile.BadZipFile) as e:
    # Atomic writes rule out half files; anything else (a foreign file, a
    # damaged disk) is regenerated and overwritten.
    warnings.warn(f'synthetic: ignoring unreadable cache {path}: {e}')
    return None
  return ReidDataset(name='synthetic', extras=extras, **splits)


def _save(path: str, key: str, dataset: ReidDataset) -> None:
  """Writes atomically: a crash leaves the old file or none, never half."""
  arrays = {'key': np.array(key)}
  for s in _SPLITS:
    split = getattr(dataset, s)
    arrays[f'{s}_pids'] = split.pids
    arrays[f'{s}_camids'] = split.camids
    arrays[f'{s}_images'] = split.images
  for k, v in dataset.extras.items():
    arrays[f'extras_{k}'] = v
  tmp = None
  try:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.',
                               prefix='.synthetic-', suffix='.tmp')
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    # The dataset is in hand; a read-only cache only costs regeneration.
    warnings.warn(f'synthetic: could not write cache {path}: {e}')
  finally:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)


# --- dataset layout ----------------------------------------------------------


def _generate(*, num_train_ids, num_test_ids, num_cameras, hard_fraction,
              seed, image_size) -> ReidDataset:
  """Samples people, cameras and the split layout, then renders."""
  height, width = image_size
  people_rng, camera_rng, layout_rng, image_rng, render_rng = (
      np.random.default_rng(s)
      for s in np.random.SeedSequence(seed).spawn(5))

  def hard_mask(n):
    mask = np.zeros(n, bool)
    mask[layout_rng.permutation(n)[:round(hard_fraction * n)]] = True
    return mask

  # Who appears where: identity images first, then junk and distractors.
  id_person, id_pid, id_cam, id_query = _identity_images(
      layout_rng, num_train_ids + num_test_ids, num_cameras, num_train_ids)
  num_gallery = int(np.sum((id_pid > num_train_ids) & ~id_query))
  num_junk = max(1, round(_JUNK_FRACTION * num_gallery))
  num_distractors = max(1, round(_DISTRACTOR_FRACTION * num_gallery))
  num_ids = num_train_ids + num_test_ids
  # Distractors and fragment junk are extra people, never seen elsewhere.
  hard = np.concatenate([
      hard_mask(num_train_ids), hard_mask(num_test_ids),
      layout_rng.random(num_distractors + num_junk) < hard_fraction])
  people = _sample_people(people_rng, hard)
  cameras = _sample_cameras(camera_rng, num_cameras)

  junk_kind = np.where(layout_rng.random(num_junk) < 1 / 3, _JUNK_BACKGROUND,
                       _JUNK_FRAGMENT)
  person = np.concatenate([
      id_person, num_ids + np.arange(num_distractors),
      num_ids + num_distractors + np.arange(num_junk)])
  pid = np.concatenate([id_pid, np.zeros(num_distractors, np.int64),
                        -np.ones(num_junk, np.int64)])
  cam = np.concatenate([
      id_cam, layout_rng.integers(0, num_cameras,
                                  num_distractors + num_junk)])
  kind = np.concatenate([np.full(len(id_pid) + num_distractors, _PERSON),
                         junk_kind])
  split = np.concatenate([
      np.where(id_pid <= num_train_ids, 0, np.where(id_query, 1, 2)),
      np.full(num_distractors + num_junk, 2)])

  # Put the images in their final order before rendering, so that each
  # split is a slice of one array (no copy of a large dataset). Within a
  # split, Market's file order: by pid (junk, distractors first), then camera.
  order = np.lexsort((cam, pid, split))
  person, pid, cam, kind, split = (
      a[order] for a in (person, pid, cam, kind, split))
  params = _sample_images(image_rng, people, cameras, person, cam, kind,
                          width / height)
  images = _render(render_rng, params, cameras, cam, height, width)

  bounds = np.searchsorted(split, [0, 1, 2, 3])
  train, query, gallery = (
      Split(pids=pid[a:b].astype(np.int64), camids=cam[a:b].astype(np.int64),
            images=images[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
  hard_pids = np.flatnonzero(hard[:num_ids]).astype(np.int64) + 1
  return ReidDataset(name='synthetic', train=train, query=query,
                     gallery=gallery, extras={'hard_pids': hard_pids})


def _identity_images(rng, num_ids, num_cameras, num_train_ids):
  """Cameras and query flags of every identity's images.

  Returns:
    person_M, pid_M, cam_M, is_query_M for the M identity images: each
    identity is in 2..min(4, num_cameras) cameras with >= 2 images in each
    and 8..12 in all; a test identity has
    1 or 2 query images from distinct cameras, so each camera with a query
    keeps a same-camera gallery image and another camera keeps the match.
  """
  persons, cams, query = [], [], []
  max_cams = min(num_cameras, _MAX_CAMERAS_PER_ID)
  for i in range(num_ids):
    n = rng.integers(_IMAGES_PER_ID[0], _IMAGES_PER_ID[1] + 1)
    k = rng.integers(2, max_cams + 1)
    id_cams = rng.choice(num_cameras, size=k, replace=False)
    counts = _MIN_IMAGES_PER_CAMERA + rng.multinomial(
        n - _MIN_IMAGES_PER_CAMERA * k, np.full(k, 1 / k))
    is_query = np.zeros(n, bool)
    if i >= num_train_ids:
      # The first image of each of the first q cameras is a query.
      q = rng.integers(1, 3)
      is_query[np.concatenate([[0], np.cumsum(counts)[:-1]])[:q]] = True
    persons.append(np.full(n, i))
    cams.append(np.repeat(id_cams, counts))
    query.append(is_query)
  person = np.concatenate(persons)
  return person, person + 1, np.concatenate(cams), np.concatenate(query)


# --- people and cameras ------------------------------------------------------


def _hsv_to_rgb(h, s, v):
  """Vectorised HSV -> RGB; h, s, v in [0, 1], shape [N] -> [N, 3]."""
  i = np.floor(h * 6) % 6
  f = h * 6 - np.floor(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  table = np.stack([np.stack([v, t, p], -1), np.stack([q, v, p], -1),
                    np.stack([p, v, t], -1), np.stack([p, q, v], -1),
                    np.stack([t, p, v], -1), np.stack([v, p, q], -1)], 1)
  return table[np.arange(len(h)), i.astype(int)].astype(np.float32)


def _saturated(rng, n):
  return _hsv_to_rgb(rng.random(n), rng.uniform(0.65, 1.0, n),
                     rng.uniform(0.6, 1.0, n))


def _sample_people(rng, hard):
  """Appearance attributes of P = len(hard) people: arrays [P] or [P, 3].

  Every person first draws an easy look; hard people then replace it with
  one of _HARD_LOOKS and a fine-detail combination that no other hard person
  of that look has (while there are enough combinations to go round).
  """
  n = len(hard)
  u = lambda lo, hi: rng.uniform(lo, hi, n).astype(np.float32)
  pick = lambda table: table[rng.integers(0, len(table), n)]
  p = {}
  # Easy: everything distinctive.
  p['up_col'] = _saturated(rng, n)
  p['up_pattern'] = rng.choice(4, n, p=[0.35, 0.25, 0.15, 0.25])
  contrast = np.where(rng.random(n) < 0.5, 0.95, 0.08)
  p['up_col2'] = np.where((rng.random(n) < 0.5)[:, None],
                          np.repeat(contrast[:, None], 3, 1).astype(np.float32),
                          _saturated(rng, n))
  p['up_period'] = u(0.05, 0.09)
  p['up_phase'] = u(0, 1)
  p['up_ext'] = np.where(rng.random(n) < 0.25, u(0.05, 0.18), 0).astype(
      np.float32)
  p['logo_on'] = (rng.random(n) < 0.3).astype(np.float32)
  p['logo_col'] = np.where((rng.random(n) < 0.5)[:, None], _saturated(rng, n),
                           1 - p['up_col'])
  p['logo_x'] = np.zeros(n, np.float32)
  p['logo_y'] = u(0.27, 0.32)
  p['logo_w'] = u(0.035, 0.05)  # half sizes
  p['logo_h'] = u(0.03, 0.045)
  p['lo_col'] = np.where((rng.random(n) < 0.5)[:, None], _saturated(rng, n),
                         pick(_COMMON_LOWER))
  p['lo_style'] = rng.choice(3, n, p=[0.6, 0.2, 0.2])
  p['skin'] = pick(_SKIN_TONES)
  natural_hair = np.concatenate([_HAIR_COLOURS, [(0.55, 0.25, 0.12)]])
  p['hair_col'] = np.where((rng.random(n) < 0.1)[:, None], _saturated(rng, n),
                           pick(natural_hair))
  p['hair_cut'] = u(0.05, 0.07)  # hair covers the head above this y
  p['hair_long'] = (rng.random(n) < 0.35).astype(np.float32)
  p['shoe_col'] = pick(_SHOE_COLOURS)
  p['bag_side'] = rng.choice(3, n, p=[0.55, 0.225, 0.225]) - 1
  p['bag_col'] = _saturated(rng, n)
  p['bag_w'] = u(0.04, 0.06)  # half sizes
  p['bag_h'] = u(0.05, 0.08)
  p['height'] = u(0.86, 1.0)
  p['width'] = u(0.82, 1.25)
  p['leg'] = u(0.43, 0.51)
  p['sleeve'] = np.where(rng.random(n) < 0.6, 1.0, 0.38).astype(np.float32)

  # Hard: a shared coarse look, different only in fine detail.
  look = rng.integers(0, len(_HARD_LOOKS), n)
  code = np.zeros(n, np.int64)
  total = math.prod(_FINE_OPTIONS)
  for k in range(len(_HARD_LOOKS)):
    members = np.flatnonzero(hard & (look == k))
    code[members] = rng.choice(total, len(members),
                               replace=len(members) > total)
  logo, shoes, hair, pinstripes, bag = np.unravel_index(code, _FINE_OPTIONS)
  h = hard
  h3 = hard[:, None]
  p['look'] = np.where(h, look, -1)  # -1: easy
  p['up_col'] = np.where(h3, _HARD_LOOKS[look, 0], p['up_col'])
  p['lo_col'] = np.where(h3, _HARD_LOOKS[look, 1], p['lo_col'])
  p['up_pattern'] = np.where(h, np.where(pinstripes, _HSTRIPES, _PLAIN),
                             p['up_pattern'])
  p['up_col2'] = np.where(h3, np.minimum(_HARD_LOOKS[look, 0] + 0.22, 1),
                          p['up_col2'])
  p['up_period'] = np.where(h, 0.022, p['up_period']).astype(np.float32)
  p['up_ext'] = np.where(h, 0, p['up_ext']).astype(np.float32)
  logo_colour, logo_side = np.divmod(np.maximum(logo - 1, 0), 2)
  p['logo_on'] = np.where(h, logo > 0, p['logo_on']).astype(np.float32)
  p['logo_col'] = np.where(h3, _LOGO_COLOURS[logo_colour], p['logo_col'])
  p['logo_x'] = np.where(h, (2 * logo_side - 1) * 0.045,
                         p['logo_x']).astype(np.float32)
  p['logo_y'] = np.where(h, 0.25, p['logo_y']).astype(np.float32)
  p['logo_w'] = np.where(h, 0.018, p['logo_w']).astype(np.float32)
  p['logo_h'] = np.where(h, 0.016, p['logo_h']).astype(np.float32)
  p['lo_style'] = np.where(h, _TROUSERS, p['lo_style'])
  p['skin'] = np.where(h3, np.array(_HARD_SKIN, np.float32), p['skin'])
  p['hair_col'] = np.where(h3, _HAIR_COLOURS[hair], p['hair_col'])
  p['hair_cut'] = np.where(h, 0.045, p['hair_cut']).astype(np.float32)
  p['hair_long'] = np.where(h, 0, p['hair_long']).astype(np.float32)
  p['shoe_col'] = np.where(h3, _SHOE_COLOURS[shoes], p['shoe_col'])
  bag_colour, bag_side = np.divmod(np.maximum(bag - 1, 0), 2)
  p['bag_side'] = np.where(h, np.where(bag > 0, 2 * bag_side - 1, 0),
                           p['bag_side'])
  p['bag_col'] = np.where(h3, _SMALL_BAG_COLOURS[bag_colour], p['bag_col'])
  p['bag_w'] = np.where(h, 0.025, p['bag_w']).astype(np.float32)
  p['bag_h'] = np.where(h, 0.03, p['bag_h']).astype(np.float32)
  p['height'] = np.where(h, _HARD_HEIGHT, p['height']).astype(np.float32)
  p['width'] = np.where(h, _HARD_WIDTH, p['width']).astype(np.float32)
  p['leg'] = np.where(h, _HARD_LEG, p['leg']).astype(np.float32)
  p['sleeve'] = np.where(h, 1.0, p['sleeve']).astype(np.float32)
  return {k: np.asarray(v, np.float32) if v.dtype == np.float64 else v
          for k, v in p.items()}


def _sample_cameras(rng, n):
  """Per-camera scene and imaging parameters; arrays of shape [C, ...]."""
  c = {}
  c['gain'] = rng.uniform(0.92, 1.08, (n, 3)).astype(np.float32)  # cast
  c['brightness'] = rng.uniform(0.85, 1.12, n).astype(np.float32)
  c['haze'] = rng.uniform(0.0, 0.06, n).astype(np.float32)
  c['blur'] = rng.uniform(0.0, 0.009, n).astype(np.float32)  # x H pixels
  c['fig_height'] = rng.uniform(0.85, 0.93, n).astype(np.float32)
  c['fig_bottom'] = rng.uniform(0.95, 0.985, n).astype(np.float32)
  c['fig_dx'] = rng.uniform(-0.025, 0.025, n).astype(np.float32)
  c['occ_prob'] = rng.uniform(0.0, 0.3, n).astype(np.float32)
  c['occ_bottom'] = rng.random(n) < 0.5  # else from a side
  c['occ_col'] = _hsv_to_rgb(rng.random(n), rng.uniform(0, 0.4, n),
                             rng.uniform(0.25, 0.6, n))
  # Background: a wall of blocks (windows, shop fronts) above a floor. Muted,
  # so that the person, not the scene, carries most of the colour.
  c['wall_col'] = _hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.15, n),
                              rng.uniform(0.5, 0.65, n))
  c['floor_col'] = _hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.1, n),
                               rng.uniform(0.42, 0.55, n))
  c['horizon'] = rng.uniform(0.62, 0.75, n).astype(np.float32)
  c['cell_w'] = rng.uniform(0.12, 0.5, n).astype(np.float32)  # height units
  c['cell_h'] = rng.uniform(0.08, 0.4, n).astype(np.float32)
  rows, cols = 16, 24
  lum = 1 + rng.uniform(0.03, 0.1, (n, 1, 1, 1)) * rng.standard_normal(
      (n, rows, cols, 1))
  blocks = (c['wall_col'][:, None, None, :] * lum +
            0.015 * rng.standard_normal((n, rows, cols, 3)))
  signs = rng.random((n, rows, cols)) < 0.05
  m = n * rows * cols
  blocks = np.where(signs[..., None],
                    _hsv_to_rgb(rng.random(m), rng.uniform(0.2, 0.6, m),
                                rng.uniform(0.35, 0.8, m)
                                ).reshape(n, rows, cols, 3), blocks)
  c['blocks'] = np.clip(blocks, 0, 1).astype(np.float32)
  return c


def _sample_images(rng, people, cameras, person, cam, kind, aspect):
  """Per-image parameters: the person's attributes plus placement, pose and
  imaging jitter; arrays of shape [N] / [N, 3] (lengths in image heights)."""
  n = len(person)
  u = lambda lo, hi: rng.uniform(lo, hi, n).astype(np.float32)
  p = {k: v[person] for k, v in people.items()}
  p['visible'] = (kind != _JUNK_BACKGROUND).astype(np.float32)
  fig_h = cameras['fig_height'][cam] * p['height'] * u(0.96, 1.04)
  bottom = cameras['fig_bottom'][cam] + u(-0.012, 0.012)
  cx = aspect / 2 + cameras['fig_dx'][cam] + np.clip(
      rng.normal(0, 0.015, n), -0.04, 0.04)
  # Fragments: a badly placed box, either far too tight (a zoomed-in part
  # of the body) or far too loose (a small figure off centre).
  zoom = rng.random(n) < 0.6
  frag_h = np.where(zoom, u(1.6, 2.6), u(0.3, 0.45))
  frag_top = np.where(zoom, u(-1.5, 0.0), u(0.0, 0.55))
  frag_cx = aspect * u(0.1, 0.9)
  frag = kind == _JUNK_FRAGMENT
  p['fig_h'] = np.where(frag, frag_h, fig_h).astype(np.float32)
  p['top'] = np.where(frag, frag_top, bottom - fig_h).astype(np.float32)
  p['cx'] = np.where(frag, frag_cx, cx).astype(np.float32)
  # Pose: legs and arms swing out by small, independent angles (radians).
  p['leg_l'], p['leg_r'] = u(-0.03, 0.14), u(-0.03, 0.14)
  p['arm_l'], p['arm_r'] = u(0.03, 0.2), u(0.03, 0.2)
  # Imaging: the camera's colour transform with a little per-image jitter.
  p['gain'] = (cameras['gain'][cam] * cameras['brightness'][cam][:, None] *
               u(0.92, 1.08)[:, None] *
               rng.uniform(0.97, 1.03, (n, 3))).astype(np.float32)
  p['haze'] = cameras['haze'][cam]
  p['bg_offset'] = u(0, 100)
  # Occluders, in image coordinates (x in image heights, y in [0, 1]).
  occluded = rng.random(n) < cameras['occ_prob'][cam]
  bottom_occ = cameras['occ_bottom'][cam]
  left = rng.random(n) < 0.5
  side_w = aspect * u(0.2, 0.4)
  p['occ_on'] = (occluded & (kind == _PERSON)).astype(np.float32)
  p['occ_x0'] = np.where(bottom_occ, -1, np.where(left, -1, aspect - side_w))
  p['occ_x1'] = np.where(bottom_occ, aspect + 1,
                         np.where(left, side_w, aspect + 1))
  p['occ_y0'] = np.where(bottom_occ, u(0.62, 0.82), u(-1, 0.3))
  p['occ_y1'] = np.full(n, 2.0)
  p['occ_col'] = (cameras['occ_col'][cam] *
                  rng.uniform(0.85, 1.15, (n, 3))).astype(np.float32)
  for k in ('occ_x0', 'occ_x1', 'occ_y0', 'occ_y1'):
    p[k] = p[k].astype(np.float32)
  return p


# --- rendering ---------------------------------------------------------------


def _render(rng, params, cameras, cam, height, width):
  """Renders all images, a chunk of one camera's images at a time.

  Returns:
    uint8 [N, H, W, 3].
  """
  n = len(cam)
  out = np.empty((n, height, width, 3), np.uint8)
  chunk = max(1, _CHUNK_PIXELS // (height * width))
  for c in range(len(cameras['horizon'])):
    idx_all = np.flatnonzero(cam == c)
    # Similar placements share a chunk, which keeps its union boxes tight.
    idx_all = idx_all[np.lexsort((params['cx'][idx_all],
                                  params['fig_h'][idx_all]))]
    for start in range(0, len(idx_all), chunk):
      idx = idx_all[start:start + chunk]
      p = {k: v[idx] for k, v in params.items()}
      img = _background(cameras, c, p['bg_offset'], height, width)
      canvas = _Canvas(img, p['top'], p['cx'], p['fig_h'], p['visible'])
      _draw_person(canvas, p)
      _draw_occluders(img, p)
      # Optics, then the camera's colour transform (cast x brightness, haze
      # lifting the blacks) and sensor noise, in 0..255 units. The blur is
      # linear and keeps constants, so it commutes with the transform.
      img = _blur(img, float(cameras['blur'][c]) * height)
      img *= (255 * p['gain'] * (1 - p['haze'][:, None]))[:, None, None, :]
      img += (255 * p['haze'] + 0.5)[:, None, None, None]
      img += _noise(rng, img.shape)
      np.clip(img, 0, 255, out=img)
      out[idx] = img  # truncates: with the + 0.5 above, rounds
  return out


def _background(cameras, c, offset_B, height, width):
  """Camera c's scene behind B images: float32 [B, H, W, 3].

  A wall of blocks (windows, shop fronts) panned by a per-image offset, over
  a floor that brightens towards the camera.
  """
  y_H = (np.arange(height, dtype=np.float32) + 0.5) / height
  x_W = (np.arange(width, dtype=np.float32) + 0.5) / height
  blocks = cameras['blocks'][c]
  rows, cols = blocks.shape[:2]
  r_H = np.floor(y_H / cameras['cell_h'][c]).astype(np.int64) % rows
  c_BxW = np.floor((x_W[None, :] + offset_B[:, None]) /
                   cameras['cell_w'][c]).astype(np.int64) % cols
  # One flat take: several times faster than 3-d fancy indexing.
  flat_BxHxW = r_H[None, :, None] * cols + c_BxW[:, None, :]
  wall = np.take(blocks.reshape(-1, 3), flat_BxHxW, axis=0)
  wall *= (1.05 - 0.2 * y_H)[None, :, None, None]
  horizon = cameras['horizon'][c]
  floor_H = cameras['floor_col'][c][None, :] * (
      0.8 + 0.35 * np.clip((y_H - horizon) / (1 - horizon), 0, 1))[:, None]
  t_H = np.clip((y_H - horizon) * height + 0.5, 0, 1)[None, :, None, None]
  wall += t_H * (floor_H[None, :, None, :] - wall)
  return wall


def _blur(img_BxHxWx3, sigma):
  """Separable Gaussian blur with edge padding; sigma in pixels."""
  if sigma < 0.3:
    return img_BxHxWx3
  r = int(math.ceil(2.5 * sigma))
  k = np.exp(-0.5 * (np.arange(r + 1) / sigma) ** 2)
  k = (k / (2 * k.sum() - k[0])).astype(np.float32)
  for axis in (1, 2):
    size = img_BxHxWx3.shape[axis]
    shape = list(img_BxHxWx3.shape)
    shape[axis] += 2 * r
    padded = np.empty(shape, np.float32)
    # Edge padding, by hand: np.pad is several times slower.
    cut = lambda a, lo, hi: a[:, lo:hi] if axis == 1 else a[:, :, lo:hi]
    cut(padded, r, r + size)[...] = img_BxHxWx3
    cut(padded, 0, r)[...] = cut(img_BxHxWx3, 0, 1)
    cut(padded, r + size, None)[...] = cut(img_BxHxWx3, size - 1, size)
    out = np.multiply(img_BxHxWx3, k[0])
    tmp = np.empty_like(out)
    for i in range(1, r + 1):
      # The kernel is symmetric: one multiply per pair of taps.
      np.add(cut(padded, r - i, r - i + size), cut(padded, r + i, r + i + size),
             out=tmp)
      tmp *= k[i]
      out += tmp
    img_BxHxWx3 = out
  return img_BxHxWx3


def _noise(rng, shape):
  """Zero-mean sensor noise of std 255 * _NOISE_STD (0..255 units), float32.

  A sum of two uniform nibbles (triangular) from random bytes: several times
  cheaper than Gaussian samples, which would dominate large renders.
  """
  b = np.frombuffer(rng.bytes(math.prod(shape)), np.uint8).reshape(shape)
  n = (b & 15).astype(np.float32)
  n += b >> 4
  n -= 15
  n *= 255 * _NOISE_STD / math.sqrt(2 * (16**2 - 1) / 12)
  return n


def _draw_occluders(img_BxHxWx3, p):
  """Paints each occluded image's box (image coordinates) in its colour."""
  idx = np.flatnonzero(p['occ_on'])
  if not len(idx):
    return
  _, height, width, _ = img_BxHxWx3.shape
  y_H = (np.arange(height, dtype=np.float32) + 0.5) / height
  x_W = (np.arange(width, dtype=np.float32) + 0.5) / height
  e = lambda a: a[idx, None, None]
  sd = np.maximum(
      np.maximum(e(p['occ_x0']) - x_W[None, None, :],
                 x_W[None, None, :] - e(p['occ_x1'])),
      np.maximum(e(p['occ_y0']) - y_H[None, :, None],
                 y_H[None, :, None] - e(p['occ_y1'])))
  alpha = np.clip(0.5 - sd * height, 0, 1)
  # A vertical gradient, so the occluder reads as an object, not a hole.
  shade = (0.8 + 0.3 * y_H)[None, :, None, None]
  colour = p['occ_col'][idx, None, None, :] * shade
  sub = img_BxHxWx3[idx]
  sub += alpha[..., None] * (colour - sub)
  img_BxHxWx3[idx] = sub


class _Canvas:
  """B images with one figure each, placed by top, cx, fig_h (image heights).

  Shapes are painted in body coordinates, each only over the union of its
  bounding boxes in the chunk, so small parts cost little at any size.
  """

  def __init__(self, img_BxHxWx3, top_B, cx_B, fig_h_B, visible_B):
    self.img = img_BxHxWx3
    _, self.height, self.width, _ = img_BxHxWx3.shape
    self.top, self.cx, self.fig_h = top_B, cx_B, fig_h_B
    self.visible = visible_B
    self.px_per_body = (fig_h_B * self.height)[:, None, None]
    self._rows = np.arange(self.height, dtype=np.float32) + 0.5
    self._cols = np.arange(self.width, dtype=np.float32) + 0.5

  def region(self, x0, x1, y0, y1, mask_B=None):
    """The pixel window covering body box [x0, x1] x [y0, y1] in every
    (masked) image, with body coordinates bx [B, 1, w] and by [B, h, 1];
    None when it is empty."""
    active = self.visible > 0
    if mask_B is not None:
      active = active & (mask_B > 0)
    if not active.any():
      return None
    b = len(self.top)
    lo = lambda v: np.min(np.broadcast_to(v, (b,))[active])
    hi = lambda v: np.max(np.broadcast_to(v, (b,))[active])
    h = self.height
    c0 = math.floor(lo((self.cx + x0 * self.fig_h) * h)) - 1
    c1 = math.ceil(hi((self.cx + x1 * self.fig_h) * h)) + 1
    r0 = math.floor(lo((self.top + y0 * self.fig_h) * h)) - 1
    r1 = math.ceil(hi((self.top + y1 * self.fig_h) * h)) + 1
    c0, c1 = max(c0, 0), min(c1, self.width)
    r0, r1 = max(r0, 0), min(r1, self.height)
    if c0 >= c1 or r0 >= r1:
      return None
    e = lambda a: a[:, None, None]
    bx = (self._cols[None, None, c0:c1] / h - e(self.cx)) / e(self.fig_h)
    by = (self._rows[None, r0:r1, None] / h - e(self.top)) / e(self.fig_h)
    return _Region(slice(r0, r1), slice(c0, c1), bx, by)

  def paint(self, reg, sd, colour, mask_B=None, shade=True):
    """Composites colour ([B, 3] or [B, h, w, 3]) where the signed distance
    sd (body units, [B, h, w]) is negative, anti-aliased over a pixel."""
    alpha = np.clip(0.5 - sd * self.px_per_body, 0, 1)
    vis = self.visible if mask_B is None else self.visible * mask_B
    alpha *= vis[:, None, None]
    if colour.ndim == 2:
      colour = colour[:, None, None, :]
    if shade:
      # Darker towards the silhouette's sides: reads as a rounded body.
      colour = colour * (1 - 0.3 * np.minimum((reg.bx / 0.2) ** 2, 1)
                         )[..., None]
    sub = self.img[:, reg.rows, reg.cols]
    tmp = np.subtract(colour, sub, dtype=np.float32)
    tmp *= alpha[..., None]
    sub += tmp

  def darken(self, reg, sd, amount):
    """Multiplies by 1 - amount inside sd (a shadow), anti-aliased."""
    alpha = np.clip(0.5 - sd * self.px_per_body, 0, 1)
    alpha *= self.visible[:, None, None]
    self.img[:, reg.rows, reg.cols] *= (1 - amount * alpha)[..., None]


class _Region(NamedTuple):
  """A pixel window of a chunk and its body coordinates."""
  rows: slice
  cols: slice
  bx: np.ndarray  # [B, 1, w]
  by: np.ndarray  # [B, h, 1]


def _sd_ellipse(bx, by, cx, cy, rx, ry):
  k = np.sqrt(((bx - cx) / rx) ** 2 + ((by - cy) / ry) ** 2)
  return (k - 1) * np.minimum(rx, ry)


def _sd_trapezoid(bx, by, hw0, hw1, y0, y1):
  """Symmetric about the body axis; half width hw0 at y0 to hw1 at y1."""
  t = np.clip((by - y0) / (y1 - y0), 0, 1)
  return np.maximum(np.abs(bx) - (hw0 + (hw1 - hw0) * t),
                    np.maximum(y0 - by, by - y1))


def _sd_box(bx, by, x0, x1, y0, y1):
  return np.maximum(np.maximum(x0 - bx, bx - x1), np.maximum(y0 - by, by - y1))


def _sd_capsule(bx, by, ax, ay, ex, ey, r):
  """Distance to segment a-e minus r, and t in [0, 1] along it."""
  dx, dy = ex - ax, ey - ay
  t = np.clip(((bx - ax) * dx + (by - ay) * dy) / (dx * dx + dy * dy), 0, 1)
  return np.hypot(bx - ax - t * dx, by - ay - t * dy) - r, t


def _stripes(coord, period, phase, px_per_body):
  """Anti-aliased square wave in [0, 1]; fades to 0.5 below ~2 pixels a
  period, where it could only alias."""
  period_px = period * px_per_body
  s = np.sin(2 * np.pi * (coord / period + phase))
  fade = np.clip(period_px / 2 - 1, 0, 1)
  return 0.5 + fade * np.clip(s * period_px / (2 * np.pi), -0.5, 0.5)


def _draw_person(cv, p):
  """Paints every image's figure, back to front."""
  e = lambda a: a[:, None, None]
  e3 = lambda a: a[:, None, None, :]
  wf = p['width']
  hip_y = 1 - p['leg']
  hw_top, hw_bot = 0.112 * wf, 0.096 * wf
  skin = p['skin']

  # Long hair, behind the head and shoulders.
  reg = cv.region(-0.07, 0.07, 0.0, 0.25, p['hair_long'])
  if reg:
    sd = _sd_ellipse(reg.bx, reg.by, 0, 0.125, 0.068, 0.12)
    cv.paint(reg, sd, p['hair_col'], p['hair_long'])

  # Shadow on the floor.
  reg = cv.region(-0.2 * wf, 0.2 * wf, 0.96, 1.03)
  if reg:
    cv.darken(reg, _sd_ellipse(reg.bx, reg.by, 0, 0.995, e(0.18 * wf), 0.025),
              0.35)

  # Legs: trousers to the ankle, shorts to above the knee, bare under skirts.
  leg_top = hip_y + 0.03
  leg_len = _ANKLE_Y - leg_top
  leg_r = 0.045 * wf
  pant_len = np.select([p['lo_style'] == _TROUSERS, p['lo_style'] == _SHORTS],
                       [1.0, 0.4], 0.0).astype(np.float32)
  for side, angle in ((-1, p['leg_l']), (1, p['leg_r'])):
    hip_x = side * 0.052 * wf
    ankle_x = hip_x + side * np.sin(angle) * leg_len
    ankle_y = leg_top + np.cos(angle) * leg_len
    reg = cv.region(np.minimum(hip_x, ankle_x) - leg_r,
                    np.maximum(hip_x, ankle_x) + leg_r, leg_top - leg_r,
                    ankle_y + leg_r)
    if reg:
      sd, t = _sd_capsule(reg.bx, reg.by, e(hip_x), e(leg_top), e(ankle_x),
                          e(ankle_y), e(leg_r))
      colour = np.where((t < e(pant_len))[..., None], e3(p['lo_col']),
                        e3(skin))
      cv.paint(reg, sd, colour)
    # Shoes, a little outward of the ankle.
    shoe_x = ankle_x + side * 0.012
    reg = cv.region(shoe_x - 0.045, shoe_x + 0.045, ankle_y - 0.03,
                    ankle_y + 0.04)
    if reg:
      sd = _sd_ellipse(reg.bx, reg.by, e(shoe_x), e(ankle_y + 0.012), 0.042,
                       0.022)
      cv.paint(reg, sd, p['shoe_col'])

  # Skirt, or hips in the trousers' colour.
  skirt = (p['lo_style'] == _SKIRT).astype(np.float32)
  reg = cv.region(-hw_bot - 0.07, hw_bot + 0.07, hip_y - 0.03, hip_y + 0.22)
  if reg:
    skirt_len = np.where(skirt > 0, 0.2, 0.08).astype(np.float32)
    flare = np.where(skirt > 0, 0.06, 0.0).astype(np.float32)
    sd = _sd_trapezoid(reg.bx, reg.by, e(hw_bot), e(hw_bot + flare),
                       e(hip_y - 0.03), e(hip_y + skirt_len))
    cv.paint(reg, sd, p['lo_col'])

  # Torso: the upper garment, with its pattern, possibly a long coat.
  bottom = hip_y + p['up_ext']
  hem = hw_bot + 0.3 * p['up_ext']  # long coats flare a little
  half = np.maximum(hw_top, hem)
  reg = cv.region(-half, half, _SHOULDER_Y, bottom)
  if reg:
    sd = np.minimum(
        _sd_trapezoid(reg.bx, reg.by, e(hw_top), e(hem), _SHOULDER_Y + 0.035,
                      e(bottom)),
        _sd_ellipse(reg.bx, reg.by, 0, _SHOULDER_Y + 0.04, e(hw_top), 0.042))
    pattern = p['up_pattern']
    period, phase = e(p['up_period']), e(p['up_phase'])
    horizontal = _stripes(reg.by, period, phase, cv.px_per_body)
    vertical = _stripes(reg.bx, period, phase, cv.px_per_body)
    mix = np.where(e(pattern == _HSTRIPES), horizontal, 0.0)
    mix = np.where(e(pattern == _VSTRIPES), vertical, mix)
    mix = np.where(e(pattern == _CHECKS),
                   horizontal + vertical - 2 * horizontal * vertical, mix)
    colour = e3(p['up_col']) + mix[..., None] * e3(p['up_col2'] - p['up_col'])
    cv.paint(reg, sd, colour)

  # Arms: sleeves, then skin, then a hand.
  for side, angle in ((-1, p['arm_l']), (1, p['arm_r'])):
    sx = side * (hw_top - 0.025)
    sy = _SHOULDER_Y + 0.035
    wx = sx + side * np.sin(angle) * _ARM_LEN
    wy = sy + np.cos(angle) * _ARM_LEN
    arm_r = 0.029 * np.sqrt(wf)
    reg = cv.region(np.minimum(sx, wx) - 0.06, np.maximum(sx, wx) + 0.06,
                    sy - 0.04, wy + 0.06)
    if reg:
      sd, t = _sd_capsule(reg.bx, reg.by, e(sx), sy, e(wx), e(wy), e(arm_r))
      colour = np.where((t < e(p['sleeve']))[..., None], e3(p['up_col']),
                        e3(skin))
      cv.paint(reg, sd, colour)
      hx = wx + side * np.sin(angle) * 0.025
      hy = wy + np.cos(angle) * 0.025
      sd = _sd_ellipse(reg.bx, reg.by, e(hx), e(hy), 0.024, 0.028)
      cv.paint(reg, sd, skin)

  # Neck, head, hair.
  reg = cv.region(-0.075, 0.075, -0.02, 0.2)
  if reg:
    cv.paint(reg, _sd_box(reg.bx, reg.by, -0.022, 0.022, 0.11, 0.19), skin,
             shade=False)
    cv.paint(reg, _sd_ellipse(reg.bx, reg.by, 0, _HEAD_CY, _HEAD_RX, _HEAD_RY),
             skin, shade=False)
    long_sides = np.maximum(
        _sd_ellipse(reg.bx, reg.by, 0, _HEAD_CY, _HEAD_RX + 0.008,
                    _HEAD_RY + 0.008),
        _HEAD_RX - 0.018 - np.abs(reg.bx))
    sd = np.maximum(
        _sd_ellipse(reg.bx, reg.by, 0, _HEAD_CY - 0.004, _HEAD_RX + 0.006,
                    _HEAD_RY + 0.006),
        reg.by - e(p['hair_cut']))
    # Long hair also frames the face down to the jaw.
    sd = np.where(e(p['hair_long']) > 0, np.minimum(sd, long_sides), sd)
    cv.paint(reg, sd, p['hair_col'], shade=False)

  # Logo on the chest: large and central (easy) or small and to one side.
  reg = cv.region(p['logo_x'] - p['logo_w'], p['logo_x'] + p['logo_w'],
                  p['logo_y'] - p['logo_h'], p['logo_y'] + p['logo_h'],
                  p['logo_on'])
  if reg:
    sd = _sd_box(reg.bx, reg.by, e(p['logo_x'] - p['logo_w']),
                 e(p['logo_x'] + p['logo_w']), e(p['logo_y'] - p['logo_h']),
                 e(p['logo_y'] + p['logo_h']))
    cv.paint(reg, sd, p['logo_col'], p['logo_on'], shade=False)

  # A shoulder bag: a strap across the chest to a bag at the hip. Each side
  # is its own region, so a chunk's bags don't span the whole figure.
  for side in (-1, 1):
    has_bag = (p['bag_side'] == side).astype(np.float32)
    bag_x = side * (hw_bot + 0.035)
    bag_y = hip_y - 0.04
    strap_x = -side * 0.06
    x0 = np.minimum(strap_x, bag_x - p['bag_w']) - 0.01
    x1 = np.maximum(strap_x, bag_x + p['bag_w']) + 0.01
    reg = cv.region(x0, x1, _SHOULDER_Y - 0.01, bag_y + 2 * p['bag_h'] + 0.01,
                    has_bag)
    if reg:
      sd, _ = _sd_capsule(reg.bx, reg.by, strap_x, _SHOULDER_Y + 0.01,
                          e(bag_x), e(bag_y), 0.007)
      cv.paint(reg, sd, p['bag_col'] * 0.6, has_bag, shade=False)
      sd = _sd_box(reg.bx, reg.by, e(bag_x - p['bag_w']),
                   e(bag_x + p['bag_w']), e(bag_y), e(bag_y + 2 * p['bag_h']))
      cv.paint(reg, sd, p['bag_col'], has_bag, shade=False)
