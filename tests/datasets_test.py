"""datasets.load_dataset: config.data -> the right reader, and its errors."""

import os

import numpy as np
import pytest

from configs import default
from dare_jax import errors
from dare_jax.data import datasets
from tests.image_trees import MARKET_TREE, write_tree, corrupt

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')


def _data_cfg(**fields):
  c = default.get_config().data
  for k, v in fields.items():
    c[k] = v
  return c


def test_market_through_the_config(tmp_path):
  write_tree(str(tmp_path), MARKET_TREE)
  ds = datasets.load_dataset(_data_cfg(dataset='market', root=str(tmp_path)))
  assert ds.name == 'market'
  for split in (ds.train, ds.query, ds.gallery):
    assert split.paths and all(os.path.isfile(p) for p in split.paths)
  # The same dataset as a folder of your own (Market-style names).
  own = datasets.load_dataset(_data_cfg(dataset='folder', root=str(tmp_path)))
  np.testing.assert_array_equal(own.gallery.pids, ds.gallery.pids)


def test_bad_images_skip_drops_and_error_keeps(tmp_path):
  write_tree(str(tmp_path), MARKET_TREE)
  victim = os.path.join(str(tmp_path), 'bounding_box_test',
                        sorted(os.listdir(tmp_path / 'bounding_box_test'))[0])
  corrupt(victim)
  kept = datasets.load_dataset(_data_cfg(dataset='market',
                                         root=str(tmp_path)))
  assert victim in kept.gallery.paths  # 'error': fails when decoded
  skipped = datasets.load_dataset(_data_cfg(dataset='market',
                                            root=str(tmp_path),
                                            bad_images='skip'))
  assert victim not in skipped.gallery.paths
  assert len(skipped.gallery) == len(kept.gallery) - 1


@pytest.mark.parametrize('fields,error,match', [
    (dict(dataset='nope'), errors.ConfigError, 'Unknown data.dataset'),
    (dict(dataset='market'), errors.ConfigError, 'needs data.root'),
    (dict(dataset='folder'), errors.ConfigError, 'data.manifest'),
    (dict(dataset='market', root='/no/such/dir'), errors.DataNotFoundError,
     '/no/such/dir'),
    (dict(dataset='market', root='/', source='hub'), errors.ConfigError,
     "data.source='hub'"),
    (dict(dataset='market', root='/', bad_images='ignore'),
     errors.ConfigError, 'data.bad_images'),
    (dict(dataset='mars', source='tfds'), errors.ConfigError,
     'data.source'),
])
def test_config_errors_name_the_field(fields, error, match):
  with pytest.raises(error, match=match):
    datasets.load_dataset(_data_cfg(**fields))


def test_missing_subfolder_is_named(tmp_path):
  os.makedirs(tmp_path / 'query')
  with pytest.raises(errors.DataNotFoundError, match='bounding_box_train'):
    datasets.load_dataset(_data_cfg(dataset='market', root=str(tmp_path)))


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, 'cuhk01')),
                    reason='../shared/data is absent')
def test_cuhk01_config_reads_the_shared_data():
  from configs import cuhk01  # pylint: disable=g-import-not-at-top
  c = cuhk01.get_config('cpu')
  ds = datasets.load_dataset(c.data)
  assert len(np.unique(ds.train.pids)) == 485
  assert ds.query.num_items == ds.gallery.num_items == 972
  with pytest.raises(ValueError, match='unknown variant'):
    cuhk01.get_config('gpu')
