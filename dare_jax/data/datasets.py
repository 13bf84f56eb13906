"""Dataset and pipeline selection: the one place that reads config.data's
dataset fields and chooses between the tf.data and TensorFlow-free paths."""

from __future__ import annotations

import importlib
import os
from typing import Sequence

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax.data import spec as spec_lib
from dare_jax.data.types import ReidDataset

# data.dataset -> (reader module, function). Imported on use, so a reader's
# optional dependency never burdens the others.
_READERS = {
    'market': ('market', 'read_market'),
    'duke': ('market', 'read_duke'),
    'cuhk03_labeled': ('cuhk03', 'read_cuhk03'),
    'cuhk03_detected': ('cuhk03', 'read_cuhk03'),
    'mars': ('mars', 'read_mars'),
    'cuhk01': ('cuhk01', 'read_cuhk01'),
    'msmt17': ('msmt17', 'read_msmt17'),
    'folder': ('folder', 'read_folder'),
}
DATASETS = spec_lib.DATASETS  # 'synthetic' + _READERS
if set(DATASETS) != {'synthetic', *_READERS}:
  raise AssertionError('spec.DATASETS and datasets._READERS disagree.')


def cache_dir(data_cfg) -> str:
  return data_cfg.cache_dir or os.path.join(
      os.path.expanduser('~'), '.cache', 'dare_jax')


def check_root(data_cfg) -> None:
  """The folder a folder-source dataset reads (data.root), checked without
  reading it: ConfigError when empty, DataNotFoundError when missing. The
  synthetic dataset, TFDS and a folder manifest need none."""
  name, root = data_cfg.dataset, data_cfg.root
  if (name == 'synthetic' or data_cfg.source == 'tfds' or
      (name == 'folder' and data_cfg.manifest)):
    return
  if not root:
    raise errors.ConfigError(
        f'data.dataset={name!r} needs data.root: pass '
        f'--config.data.root=/path/to/{name} (the extracted official '
        'archive)' + (', or --config.data.manifest=FILE.csv' if
                      name == 'folder' else '') + '.')
  if not os.path.isdir(root):
    raise errors.DataNotFoundError(
        f'data.root={root!r} does not exist or is not a folder.')


def _read_folder(data_cfg) -> ReidDataset:
  """The reader of data.dataset over the folder data.root (or manifest)."""
  name, root = data_cfg.dataset, data_cfg.root
  readers = 'dare_jax.data.readers.'
  if name == 'folder' and data_cfg.manifest:
    folder = importlib.import_module(readers + 'folder')
    return folder.read_manifest(data_cfg.manifest, root=root or None,
                                split_seed=data_cfg.split_seed)
  check_root(data_cfg)
  module, fn = _READERS[name]
  read = getattr(importlib.import_module(readers + module), fn)
  if name.startswith('cuhk03_'):
    return read(root, variant=name[len('cuhk03_'):])
  if name == 'cuhk01':
    return read(root, split_seed=data_cfg.split_seed,
                num_test_ids=data_cfg.cuhk01_num_test_ids)
  if name == 'msmt17':
    return read(root, val_in_train=bool(data_cfg.msmt17_val_in_train))
  return read(root)


def load_dataset(data_cfg, nonempty: Sequence[str] = ()) -> ReidDataset:
  """The dataset named by config.data, its splits ready for a pipeline;
  DataError when one of the `nonempty` splits (train, query, gallery) is
  empty (training needs all three, evaluation query and gallery).

  Raises the errors of spec.check_dataset (which configlib.validate runs
  first) for library callers, then those that need the files.
  """
  ds = _load(data_cfg)
  for what in nonempty:
    if not len(getattr(ds, what)):
      raise errors.DataError(f'The {what} split of dataset {ds.name!r} is '
                             'empty.')
  return ds


def _load(data_cfg) -> ReidDataset:
  name = data_cfg.dataset
  resize_hw = spec_lib.ImageSize.from_data_config(data_cfg).resize_hw
  if name == 'synthetic':
    from dare_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    s = data_cfg.synthetic
    return synthetic.make_synthetic(
        num_train_ids=s.num_train_ids, num_test_ids=s.num_test_ids,
        num_cameras=s.num_cameras, hard_fraction=s.hard_fraction,
        seed=s.seed, image_size=resize_hw, cache_dir=cache_dir(data_cfg))
  spec_lib.check_dataset(data_cfg)  # the name, bad_images, source
  if data_cfg.source == 'tfds':
    # data.root (the manual download) is needed only until the dataset is
    # prepared in data.tfds_data_dir; load_tfds says so when it is missing.
    try:
      tfds_builders = importlib.import_module('dare_jax.data.tfds_builders')
    except ImportError as e:
      raise errors.ConfigError(
          'data.source="tfds" needs tensorflow-datasets, which is not '
          'installed here; read the folder directly with '
          '--config.data.source=folder') from e
    return tfds_builders.load_tfds(
        name, manual_dir=data_cfg.root, data_dir=data_cfg.tfds_data_dir or None,
        resize_hw=resize_hw, split_seed=data_cfg.split_seed,
        cuhk01_num_test_ids=data_cfg.cuhk01_num_test_ids)
  ds = _read_folder(data_cfg)
  if data_cfg.bad_images == 'skip':
    bad_images = importlib.import_module('dare_jax.data.readers.bad_images')
    ds, bad = bad_images.drop_bad_images(ds)
    if bad:
      logging.warning('data.bad_images="skip": dropped %d unreadable images '
                      '(first: %s).', len(bad), ', '.join(bad[:5]))
  logging.info('Dataset %s: %d train images (%d ids), %d query and %d '
               'gallery items.', ds.name, len(ds.train),
               len(np.unique(ds.train.pids)), ds.query.num_items,
               ds.gallery.num_items)
  return ds


def pipeline_module(name: str) -> spec_lib.Pipeline:
  """The module implementing spec.Pipeline for data.pipeline; imports
  TensorFlow only for 'tf'."""
  spec_lib.check_pipeline(name)  # for library callers; validate checks too
  if name == 'numpy':
    module = importlib.import_module('dare_jax.data.numpy_pipeline')
  else:
    try:
      module = importlib.import_module('dare_jax.data.tf_pipeline')
    except ImportError as e:
      if 'tensorflow' not in str(e):
        raise
      raise errors.ConfigError(
          'data.pipeline="tf" needs TensorFlow, which is not installed here. '
          'Use the TensorFlow-free input path: --config.data.pipeline=numpy'
      ) from e
  if not isinstance(module, spec_lib.Pipeline):
    raise TypeError(f'{module.__name__} does not implement spec.Pipeline.')
  return module
