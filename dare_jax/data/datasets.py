"""Dataset and pipeline selection: the one place that reads config.data's
dataset fields and chooses between the tf.data and TensorFlow-free paths."""

from __future__ import annotations

import importlib
import os

from dare_jax import errors
from dare_jax.data import augment
from dare_jax.data.types import ReidDataset

# Datasets whose readers arrive with the datasets issue.
_PLANNED = ('market', 'duke', 'cuhk03_labeled', 'cuhk03_detected', 'mars',
            'cuhk01', 'folder')


def cache_dir(data_cfg) -> str:
  return data_cfg.cache_dir or os.path.join(
      os.path.expanduser('~'), '.cache', 'dare_jax')


def load_dataset(data_cfg) -> ReidDataset:
  name = data_cfg.dataset
  if name == 'synthetic':
    from dare_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    s = data_cfg.synthetic
    return synthetic.make_synthetic(
        num_train_ids=s.num_train_ids, num_test_ids=s.num_test_ids,
        num_cameras=s.num_cameras, hard_fraction=s.hard_fraction,
        seed=s.seed,
        image_size=augment.resize_size(data_cfg.input_size,
                                       data_cfg.resize_factor),
        cache_dir=cache_dir(data_cfg))
  if name in _PLANNED:
    if not data_cfg.root:
      raise errors.ConfigError(
          f'data.dataset={name!r} needs data.root: pass '
          f'--config.data.root=/path/to/{name} (the extracted official '
          'archive).')
    if not os.path.isdir(data_cfg.root):
      raise errors.DataNotFoundError(
          f'data.root={data_cfg.root!r} does not exist or is not a folder.')
    raise errors.ConfigError(
        f'The reader for data.dataset={name!r} is not implemented yet (it '
        'comes with the real-datasets issue). Train on the built-in '
        'synthetic dataset meanwhile: --config=configs/synthetic.py')
  raise errors.ConfigError(f'Unknown data.dataset={name!r}; known: synthetic, '
                   f'{", ".join(_PLANNED)}.')


def pipeline_module(name: str):
  """The module providing train_batches / eval_batches for data.pipeline."""
  if name == 'numpy':
    return importlib.import_module('dare_jax.data.pipeline')
  if name == 'tf':
    try:
      return importlib.import_module('dare_jax.data.tf_pipeline')
    except ImportError as e:
      if 'tensorflow' not in str(e):
        raise
      raise errors.ConfigError(
          'data.pipeline="tf" needs TensorFlow, which is not installed here. '
          'Use the TensorFlow-free input path: --config.data.pipeline=numpy'
      ) from e
  raise errors.ConfigError(f"data.pipeline={name!r}: use 'tf' or 'numpy'.")
