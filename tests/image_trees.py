"""Image files and folder trees written by tests (not a test module: the
reader, dataset and MSMT17 tests share these)."""

import os

import numpy as np
from PIL import Image


def write_image(path, seed=0, size=(8, 16)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(
      path)
  return str(path)


def write_tree(root, tree):
  """tree: {sub-folder: [file names]}; .jpg/.png become images, the rest
  (Thumbs.db) a few junk bytes."""
  for sub, names in tree.items():
    os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i, n in enumerate(names):
      p = os.path.join(root, sub, n)
      if n.lower().endswith(('.jpg', '.png')):
        write_image(p, seed=i)
      else:
        with open(p, 'wb') as f:
          f.write(b'\x00thumbs')


def corrupt(path, data=b'not an image'):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return str(path)


MARKET_TREE = {
    'bounding_box_train': [
        '0002_c1s1_000451_03.jpg', '0002_c2s1_000551_01.jpg',
        '0007_c6s3_071002_01.jpg', '0007_c3s3_077344_04.jpg',
        '0000_c1s1_000001_01.jpg', '-1_c1s1_000002_01.jpg', 'Thumbs.db'],
    'query': ['0001_c1s1_001051_00.jpg', '0003_c2s1_000301_00.jpg',
              'Thumbs.db'],
    'bounding_box_test': [
        '0001_c1s1_001101_01.jpg',  # same camera as its query
        '0001_c4s1_000101_02.jpg', '0003_c5s1_000326_01.jpg',
        '0000_c6s1_000001_01.jpg', '-1_c1s1_000401_03.jpg', 'Thumbs.db'],
}
