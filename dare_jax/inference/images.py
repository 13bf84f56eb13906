"""Your own images in, embeddings out: the inputs tools/embed and
tools/search take, and the evaluation's preprocessing applied to them.

An INPUT is one of
  a folder      every image under it, recursively, sorted by relative path;
  an image      one file (.jpg, .jpeg, .png, .bmp);
  a .txt file   one path a line (blank lines and lines starting with # are
                skipped), relative to the text file's folder unless absolute;
  a .csv file   path[,person[,camera]] a row, relative as for .txt; a first
                row whose first cell is 'path' is a header naming the
                columns (path, person, camera in any order), as the folder
                dataset's manifest (data/readers/folder.py). An empty camera
                is -1 (unknown).
No labels, splits or training data are needed; person and camera, when the
CSV has them, travel with the embeddings (search draws green/red frames).

An image is prepared as --mode=eval prepares it (data/numpy_pipeline.eval_batches):
decoded to RGB, then with tta=10 resized bilinearly (PIL) to the bundle's
resize size and cut into its 10 TTA views (data/augment.ten_crop), the views'
embeddings averaged; with tta=1 the whole image resized bilinearly (PIL) to
the input size, no crop (data/augment.resize_images, as the authors' single
view). Views are normalised with the bundle's mean and std.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import os
import sys
import time
from typing import Callable, Optional, Sequence

import numpy as np

from dare_jax import errors
from dare_jax.data import augment
from dare_jax.data.readers.common import IMAGE_EXTENSIONS

TTA = (1, 10)
BAD_IMAGES = ('error', 'skip')
_SHOW = 5  # unreadable files named in a message


@dataclasses.dataclass(frozen=True)
class Inputs:
  """paths: as given (the text of the list, or FOLDER/relative); files: what
  is opened (absolute); person / camera: int64 [N] when the CSV had them."""
  paths: tuple[str, ...]
  files: tuple[str, ...]
  person: Optional[np.ndarray] = None
  camera: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return len(self.paths)

  def take(self, keep_N: np.ndarray) -> Inputs:
    idx = np.flatnonzero(keep_N) if keep_N.dtype == bool else keep_N
    pick = lambda a: None if a is None else a[idx]
    return Inputs(tuple(self.paths[i] for i in idx),
                  tuple(self.files[i] for i in idx),
                  pick(self.person), pick(self.camera))


def is_image(path: str) -> bool:
  return path.lower().endswith(IMAGE_EXTENSIONS)


def _folder(root: str) -> Inputs:
  rel = []
  for d, dirs, files in os.walk(root):
    dirs.sort()
    rel += [os.path.relpath(os.path.join(d, f), root) for f in files
            if is_image(f)]
  if not rel:
    raise errors.DataError(
        f'{root}: no images in the folder or below it (looked for '
        f'{", ".join(IMAGE_EXTENSIONS)}, any case).')
  rel.sort()
  return Inputs(tuple(os.path.join(root, r) for r in rel),
                tuple(os.path.abspath(os.path.join(root, r)) for r in rel))


def _resolve(list_file: str, path: str) -> str:
  return os.path.abspath(os.path.join(os.path.dirname(list_file), path))


def _txt(path: str) -> Inputs:
  with open(path) as f:
    given = [l.strip() for l in f]
  given = [g for g in given if g and not g.startswith('#')]
  if not given:
    raise errors.DataError(f'{path}: the list names no image.')
  return Inputs(tuple(given), tuple(_resolve(path, g) for g in given))


def _int(path: str, line: int, field: str, value: str, empty: int) -> int:
  if value.strip() == '':
    return empty
  try:
    return int(value)
  except ValueError:
    raise errors.DataError(
        f'{path}:{line}: {field}={value!r} is not an integer.') from None


def _csv(path: str) -> Inputs:
  with open(path, newline='') as f:
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(f))
            if r and any(c.strip() for c in r)]
  if not rows:
    raise errors.DataError(f'{path}: the CSV has no rows.')
  cols = ['path', 'person', 'camera']
  if rows[0][1][0].strip().lower() == 'path':
    cols = [c.strip().lower() for c in rows[0][1]]
    rows = rows[1:]
    if 'camera' in cols and 'person' not in cols:
      raise errors.DataError(f'{path}: the header has camera but no person.')
  width = max(len(r) for _, r in rows)
  has_person = 'person' in cols and width > cols.index('person')
  has_camera = 'camera' in cols and width > cols.index('camera')
  given, person, camera = [], [], []
  for line, r in rows:
    cell = dict(zip(cols, r))
    if not cell.get('path', '').strip():
      raise errors.DataError(f'{path}:{line}: the row has no path.')
    given.append(cell['path'].strip())
    if has_person:
      person.append(_int(path, line, 'person', cell.get('person', ''), -1))
    if has_camera:
      camera.append(_int(path, line, 'camera', cell.get('camera', ''), -1))
  if not given:
    raise errors.DataError(f'{path}: the CSV names no image.')
  as_ids = lambda v: np.asarray(v, np.int64) if v else None
  return Inputs(tuple(given), tuple(_resolve(path, g) for g in given),
                as_ids(person) if has_person else None,
                as_ids(camera) if has_camera else None)


def read_inputs(spec: str) -> Inputs:
  """The images an INPUT names (see the module doc)."""
  if os.path.isdir(spec):
    return _folder(spec)
  if not os.path.exists(spec):
    raise errors.DataNotFoundError(f'{spec}: no such folder or file.')
  low = spec.lower()
  if is_image(spec):
    return Inputs((spec,), (os.path.abspath(spec),))
  if low.endswith('.csv'):
    return _csv(spec)
  if low.endswith(('.txt', '.lst')):
    return _txt(spec)
  raise errors.DataError(
      f'{spec}: not a folder, an image ({", ".join(IMAGE_EXTENSIONS)}), a '
      '.txt list or a .csv of path[,person,camera].')


class Progress:
  """'embed: 320/1000 images (32%), 41.3 images/s, ETA 16s' on stderr, at
  most every `every_s` seconds and once at the end."""

  def __init__(self, total: int, what: str = 'embed', every_s: float = 2.0,
               stream=None):
    self.total, self.what, self.every_s = total, what, every_s
    self.stream = stream or sys.stderr
    self.t0 = self.last = time.time()
    self.done = 0

  def update(self, n: int) -> None:
    self.done += n
    now = time.time()
    if now - self.last < self.every_s and self.done < self.total:
      return
    self.last = now
    rate = self.done / max(now - self.t0, 1e-9)
    eta = (self.total - self.done) / rate if rate > 0 else float('inf')
    pct = 100 * self.done // max(self.total, 1)
    end = ', done' if self.done >= self.total else f', ETA {eta:.0f}s'
    print(f'{self.what}: {self.done}/{self.total} images ({pct}%), '
          f'{rate:.1f} images/s{end}', file=self.stream, flush=True)


def _decode(files: Sequence[str], resize_hw, pool, bad_images: str):
  """(uint8 [n, Hr, Wr, 3] of the readable ones, bool [n] readable)."""
  def one(f):
    try:
      return augment.load_image(f, resize_hw), None
    except errors.UserError as e:  # not found, or not decodable
      return None, e
  out = list(pool.map(one, files))
  ok = np.array([img is not None for img, _ in out], bool)
  if bad_images == 'error' and not ok.all():
    _, e = out[int(np.flatnonzero(~ok)[0])]
    raise errors.DataError(f'{e} (pass --bad_images=skip to skip such '
                           'files and count them).')
  imgs = [img for img, _ in out if img is not None]
  hr, wr = resize_hw
  stacked = (np.stack(imgs) if imgs else
             np.zeros((0, hr, wr, 3), np.uint8))
  return stacked, ok


def embed_files(forward: Callable, files: Sequence[str], *, input_hw,
                resize_hw, normalize: Callable, tta: int = 10,
                batch: int = 32, bad_images: str = 'error', pad: bool = True,
                progress: Optional[Progress] = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """({name: float32 [M, D]}, bool [N] decoded) of the M readable files.

  forward: normalised float32 [B, H, W, 3] -> {name: [B, D]}; normalize:
  uint8 views [B, H, W, 3] -> that input. Files are decoded on a thread pool
  one batch ahead of the forward. pad: pad each batch to `batch` images
  (one compiled shape for JAX; onnxruntime needs no padding).
  """
  if tta not in TTA:
    raise errors.ConfigError(f'tta={tta}: use 10 (5 crops and their '
                             'mirrors, averaged) or 1 (the whole image '
                             'resized to the input size).')
  if bad_images not in BAD_IMAGES:
    raise errors.ConfigError(f'bad_images={bad_images!r}: use '
                             f'{" or ".join(BAD_IMAGES)}.')
  if batch < 1:
    raise errors.ConfigError(f'batch={batch} must be >= 1.')
  # tta=1 decodes straight to the input size, as eval_batches does files.
  decode_hw = resize_hw if tta == 10 else input_hw
  starts = list(range(0, len(files), batch))
  chunks, oks = [], []
  pool = concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1))
  ahead = concurrent.futures.ThreadPoolExecutor(1)

  def load(lo):
    return _decode(files[lo:lo + batch], decode_hw, pool, bad_images)

  try:
    pending = ahead.submit(load, starts[0]) if starts else None
    for i, lo in enumerate(starts):
      imgs, ok = pending.result()
      if i + 1 < len(starts):
        pending = ahead.submit(load, starts[i + 1])
      oks.append(ok)
      n = len(imgs)
      if n:
        rows = batch if pad else n
        views = np.zeros((rows, tta) + tuple(input_hw) + (3,), np.uint8)
        if tta == 10:
          augment.ten_crop(imgs, input_hw, out=views[:n])
        else:
          augment.resize_images(imgs, input_hw, out=views[:n, 0])
        x = normalize(views.reshape((rows * tta,) + views.shape[2:]))
        out = forward(x)
        chunks.append({k: np.asarray(v, np.float32)
                       .reshape(rows, tta, -1)[:n].mean(axis=1)
                       for k, v in out.items()})
      if progress is not None:
        progress.update(len(ok))
  finally:
    ahead.shutdown(wait=True, cancel_futures=True)
    pool.shutdown(wait=True, cancel_futures=True)
  ok = np.concatenate(oks) if oks else np.zeros(0, bool)
  if not chunks:
    raise errors.DataError(f'None of the {len(files)} images could be '
                           'decoded.')
  return ({k: np.concatenate([c[k] for c in chunks]).astype(np.float32)
           for k in chunks[0]}, ok)


def skipped_message(inputs: Inputs, ok_N: np.ndarray) -> Optional[str]:
  """'skipped 2 unreadable images: a.jpg, b.png' or None."""
  bad = [inputs.paths[i] for i in np.flatnonzero(~ok_N)]
  if not bad:
    return None
  more = f' and {len(bad) - _SHOW} more' if len(bad) > _SHOW else ''
  return (f'skipped {len(bad)} unreadable image(s): '
          f'{", ".join(bad[:_SHOW])}{more}')

