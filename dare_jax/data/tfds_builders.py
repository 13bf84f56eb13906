"""TFDS builders over our readers, and load_tfds: prepared data -> ReidDataset.

One builder per dataset: Market1501 ('market1501'), DukemtmcReid
('dukemtmc_reid'), Cuhk03 ('cuhk03', configs 'labeled' / 'detected'), Mars
('mars') and Cuhk01 ('cuhk01', one config per split seed). Each is a manual
download: the official archive, extracted, is `manual_dir`, and the builder
calls the same reader as data.source='folder' on it (one source of truth for
the protocol; nothing is parsed twice). Examples carry

  image        the source file's bytes, unchanged (JPEG or PNG as released)
  person_id    int64, >= 1 people, 0 distractors, -1 junk
  camera_id    int64, 0-based
  tracklet_id  int64, MARS: the frame's tracklet within its split; else -1
  index        int64, the position in the reader's split (TFDS may reorder
               examples on disk; load_tfds sorts by it)
  path         the file, relative to manual_dir

with splits train / query / gallery.

With the module imported, tfds.load('market1501', data_dir=...) also works;
load_tfds is what dare_jax uses (data.source='tfds'). Besides tf_pipeline.py
this is the only module that imports TensorFlow (through TFDS).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.resources
import importlib.resources.abc
import io
import os
import sys
from typing import Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

# TFDS 4.9.x uses `importlib_resources.abc.Traversable` when it prepares a
# dataset but declares the package only for Python < 3.9 (tensorflow/datasets
# issue 11212). The standard library's importlib.resources has the same
# `abc.Traversable` on Python >= 3.11; stand in with it when the backport is
# absent.
try:
  import importlib_resources  # pylint: disable=g-import-not-at-top,unused-import
except ImportError:
  sys.modules.setdefault('importlib_resources', importlib.resources)

from dare_jax import errors
from dare_jax.data import spec as spec_lib
from dare_jax.data.types import ReidDataset, Split

SPLITS = ('train', 'query', 'gallery')
_VERSION = tfds.core.Version('1.0.0')
_RELEASE_NOTES = {'1.0.0': 'First release: train / query / gallery from the '
                           'dare_jax readers.'}


def _hide_gpus() -> None:
  # TF would otherwise reserve the accelerator's memory that JAX needs.
  try:
    if tf.config.get_visible_devices('GPU'):
      tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # devices were initialised before this import
    logging.warning('TensorFlow was initialised before dare_jax.data.'
                    'tfds_builders was imported; it may hold GPU memory.')


_hide_gpus()


class _ReidBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A re-ID dataset read by one of dare_jax's readers from manual_dir."""

  VERSION = _VERSION
  RELEASE_NOTES = _RELEASE_NOTES
  IMAGE_FORMAT = 'jpeg'
  DESCRIPTION = ''
  HOMEPAGE = ''
  CITATION = ''

  def _read(self, root: str) -> ReidDataset:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(encoding_format=self.IMAGE_FORMAT),
            'person_id': tfds.features.Scalar(np.int64),
            'camera_id': tfds.features.Scalar(np.int64),
            'tracklet_id': tfds.features.Scalar(np.int64),
            'index': tfds.features.Scalar(np.int64),
            'path': tfds.features.Text(),
        }),
        # Written in the reader's order (keys are the indices).
        disable_shuffling=True,
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
    )

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    ds = self._read(root)
    return {s: self._generate_examples(getattr(ds, s), root) for s in SPLITS}

  def _generate_examples(self, split: Split, root: str):
    tracklets = (split.tracklets if split.tracklets is not None else
                 np.full(len(split), -1, np.int64))
    for i, (path, pid, cam, t) in enumerate(
        zip(split.paths, split.pids, split.camids, tracklets)):
      yield i, {'image': path, 'person_id': int(pid), 'camera_id': int(cam),
                'tracklet_id': int(t), 'index': i,
                'path': os.path.relpath(path, root)}


class Market1501(_ReidBuilder):
  """Market-1501 (Zheng et al., ICCV 2015): 751 / 750 identities."""

  DESCRIPTION = ('Market-1501: 12,936 train / 3,368 query / 19,732 gallery '
                 'images of 1,501 people from 6 cameras.')
  HOMEPAGE = 'https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Get Market-1501-v15.09.15.zip (the dataset's project page) and unzip it;
manual_dir is the extracted Market-1501-v15.09.15/ folder, holding
bounding_box_train/, query/ and bounding_box_test/ (JPEGs named
PPPP_cCsS_FFFFFF_BB.jpg)."""

  def _read(self, root):
    from dare_jax.data.readers import market  # pylint: disable=g-import-not-at-top
    return market.read_market(root)


class DukemtmcReid(_ReidBuilder):
  """DukeMTMC-reID (Zheng et al., ICCV 2017): 702 / 702(+408) identities."""

  DESCRIPTION = ('DukeMTMC-reID: 16,522 train / 2,228 query / 17,661 gallery '
                 'images from 8 cameras.')
  HOMEPAGE = 'https://github.com/layumi/DukeMTMC-reID_evaluation'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Get DukeMTMC-reID.zip and unzip it; manual_dir is the extracted
DukeMTMC-reID/ folder, holding bounding_box_train/, query/ and
bounding_box_test/ (JPEGs named PPPP_cC_fFFFFFFF.jpg)."""

  def _read(self, root):
    from dare_jax.data.readers import market  # pylint: disable=g-import-not-at-top
    return market.read_duke(root)


class Cuhk03(_ReidBuilder):
  """CUHK03 under the new protocol (Zhong et al., CVPR 2017): 767 / 700."""

  IMAGE_FORMAT = 'png'
  DESCRIPTION = ('CUHK03, new protocol: 767 train / 700 test identities, '
                 '1,400 queries; hand-labeled or detected boxes.')
  HOMEPAGE = 'https://github.com/zhunzhong07/person-re-ranking'
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='labeled', description=(
          'Hand-labeled boxes: 7,368 train / 1,400 query / 5,328 gallery.')),
      tfds.core.BuilderConfig(name='detected', description=(
          'DPM-detected boxes: 7,365 train / 1,400 query / 5,332 gallery.')),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir holds either
(a) cuhk03_new_protocol_config_labeled.mat and
    cuhk03_new_protocol_config_detected.mat (github.com/zhunzhong07/
    person-re-ranking, evaluation/data/CUHK03) beside images_labeled/ and
    images_detected/: the PNGs extracted from cuhk-03.mat of the CUHK03
    release (cuhk03_release.zip), named campus_person_camera_image.png
    (e.g. 1_001_1_01.png), as torchreid's CUHK03 extraction writes them;
or (b) the CUHK03-NP release unzipped: labeled/ and detected/, each with
    bounding_box_train/, query/ and bounding_box_test/ (Market-1501 names)."""

  def _read(self, root):
    from dare_jax.data.readers import cuhk03  # pylint: disable=g-import-not-at-top
    return cuhk03.read_cuhk03(root, self.builder_config.name)


class Mars(_ReidBuilder):
  """MARS (Zheng et al., ECCV 2016): video, 625 / 636 identities."""

  DESCRIPTION = ('MARS: 8,298 train / 12,180 test tracklets (1,980 '
                 'queries), 1,191,003 frames; examples are frames, '
                 'tracklet_id groups them.')
  HOMEPAGE = 'https://zheng-lab.cecs.anu.edu.au/Project/project_mars.html'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Get bbox_train.zip and bbox_test.zip (the MARS project page) and unzip both
into manual_dir, giving manual_dir/bbox_train/PPPP/*.jpg and
manual_dir/bbox_test/PPPP/*.jpg; put the info/ folder of the
MARS-evaluation repository (github.com/liangzheng06/MARS-evaluation:
train_name.txt, test_name.txt, tracks_train_info.mat, tracks_test_info.mat,
query_IDX.mat) in manual_dir/info/."""

  def _read(self, root):
    from dare_jax.data.readers import mars  # pylint: disable=g-import-not-at-top
    return mars.read_mars(root)


@dataclasses.dataclass(eq=False)
class Cuhk01Config(tfds.core.BuilderConfig):
  split_seed: int = 0
  num_test_ids: int = 486


def cuhk01_config_name(split_seed: int, num_test_ids: int) -> str:
  return f'seed{split_seed}_test{num_test_ids}'


class Cuhk01(_ReidBuilder):
  """CUHK01 (Li et al., ACCV 2012): 971 identities, random 485 / 486 split."""

  IMAGE_FORMAT = 'png'
  DESCRIPTION = ('CUHK01: 971 people, 2 cameras, 4 images each; a random '
                 'split of the identities, set by the config.')
  HOMEPAGE = 'https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html'
  BUILDER_CONFIGS = [Cuhk01Config(name=cuhk01_config_name(0, 486),
                                  description='split_seed=0, 486 test ids.')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Get CUHK01.zip (the CUHK re-ID page) and unzip it; manual_dir is the folder
holding campus/ with the 3,884 PNGs named IIIINNN.png (identity, index:
001-002 camera A, 003-004 camera B)."""

  def _read(self, root):
    from dare_jax.data.readers import cuhk01  # pylint: disable=g-import-not-at-top
    cfg = self.builder_config
    return cuhk01.read_cuhk01(root, split_seed=cfg.split_seed,
                              num_test_ids=cfg.num_test_ids)


# data.dataset -> (builder class, config name or None).
BUILDERS = {
    'market': (Market1501, None),
    'duke': (DukemtmcReid, None),
    'cuhk03_labeled': (Cuhk03, 'labeled'),
    'cuhk03_detected': (Cuhk03, 'detected'),
    'mars': (Mars, None),
    'cuhk01': (Cuhk01, None),
}


def make_builder(dataset_name: str, data_dir: Optional[str] = None, *,
                 split_seed: int = 0,
                 cuhk01_num_test_ids: int = 486) -> tfds.core.DatasetBuilder:
  """The TFDS builder of a data.dataset name (not prepared)."""
  if dataset_name not in BUILDERS:
    raise errors.ConfigError(
        f'data.source="tfds" has no builder for data.dataset='
        f'{dataset_name!r}; known: {", ".join(BUILDERS)}. Use '
        '--config.data.source=folder.')
  cls, config = BUILDERS[dataset_name]
  if cls is Cuhk01:
    name = cuhk01_config_name(split_seed, cuhk01_num_test_ids)
    config = name if name in cls.builder_configs else Cuhk01Config(
        name=name, split_seed=split_seed, num_test_ids=cuhk01_num_test_ids,
        description=f'split_seed={split_seed}, {cuhk01_num_test_ids} test '
        'ids.')
  return cls(data_dir=data_dir or None, config=config)


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
  """download_and_prepare from manual_dir, once (a no-op when prepared)."""
  if builder.is_prepared():
    return
  if not manual_dir or not os.path.isdir(manual_dir) or not os.listdir(
      manual_dir):
    raise errors.DataNotFoundError(
        f'TFDS {builder.name}: the dataset is not prepared in '
        f'{os.fspath(builder.data_dir_root)!r} and data.root (manual_dir) = '
        f'{manual_dir!r} is missing or empty. {type(builder).__name__} '
        f'needs:\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}')
  logging.info('Preparing TFDS %s from %s into %s', builder.info.full_name,
               manual_dir, builder.data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def decode_image(data: bytes, resize_hw: Sequence[int]) -> np.ndarray:
  """uint8 [Hr, Wr, 3]; the steps of augment.load_image on the file's bytes."""
  hr, wr = resize_hw
  with Image.open(io.BytesIO(data)) as img:
    img = img.convert('RGB')
    return np.asarray(img.resize((wr, hr), Image.BILINEAR), np.uint8)


def _read_split(builder, split: str, resize_hw: Sequence[int],
                num_threads: Optional[int]) -> Split:
  ds = builder.as_dataset(
      split=split, shuffle_files=False,
      decoders={'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(interleave_cycle_length=1))
  cols = {k: [] for k in ('image', 'person_id', 'camera_id', 'tracklet_id',
                          'index', 'path')}
  for ex in tfds.as_numpy(ds):
    for k, v in cols.items():
      v.append(ex[k])
  order = np.argsort(np.asarray(cols['index'], np.int64), kind='stable')
  n = len(order)
  if not np.array_equal(np.asarray(cols['index'], np.int64)[order],
                        np.arange(n)):
    raise errors.DataError(
        f'TFDS {builder.info.full_name} split {split!r} in '
        f'{builder.data_dir!r} does not hold the indices 0..{n - 1}; '
        'delete that folder and prepare it again.')
  hr, wr = resize_hw
  images = np.empty((n, hr, wr, 3), np.uint8)

  def decode(i):
    j = order[i]
    try:
      images[i] = decode_image(cols['image'][j], resize_hw)
    except (OSError, ValueError, SyntaxError) as e:
      path = cols['path'][j].decode()
      raise errors.DataError(
          f'Cannot decode image {path} of TFDS {builder.info.full_name}: '
          f'{e}') from e

  with concurrent.futures.ThreadPoolExecutor(
      num_threads or min(16, os.cpu_count() or 1)) as pool:
    list(pool.map(decode, range(n)))
  take = lambda k: np.asarray(cols[k], np.int64)[order]
  tracklets = take('tracklet_id')
  return Split(pids=take('person_id'), camids=take('camera_id'),
               images=images,
               tracklets=tracklets if n and tracklets[0] >= 0 else None)


def load_tfds(dataset_name: str, manual_dir: str, data_dir: Optional[str],
              resize_hw: Sequence[int], *, split_seed: int = 0,
              cuhk01_num_test_ids: int = 486,
              num_threads: Optional[int] = None) -> ReidDataset:
  """Prepares (once) and reads a dataset through its TFDS builder.

  Args:
    dataset_name: a data.dataset name: market, duke, cuhk03_labeled,
      cuhk03_detected, cuhk01 ('mars' raises: see below).
    manual_dir: the extracted official archive (data.root); only read when
      the dataset is not yet prepared in data_dir.
    data_dir: where TFDS keeps prepared datasets (data.tfds_data_dir);
      None or '' = TFDS's default (~/tensorflow_datasets).
    resize_hw: (Hr, Wr) the images are resized to (PIL bilinear, as
      augment.load_image).
    split_seed, cuhk01_num_test_ids: CUHK01's identity split.

  Returns:
    ReidDataset with `images` uint8 [N, Hr, Wr, 3] in the reader's order.

  Raises:
    errors.ConfigError: MARS (about 1.2 million frames do not fit in memory
      decoded; use data.source='folder'), or an unknown dataset.
    errors.DataNotFoundError: not prepared and manual_dir missing or empty.
  """
  spec_lib.check_tfds_dataset(dataset_name)  # refuses MARS
  builder = make_builder(dataset_name, data_dir, split_seed=split_seed,
                         cuhk01_num_test_ids=cuhk01_num_test_ids)
  prepare(builder, manual_dir)
  splits = {s: _read_split(builder, s, resize_hw, num_threads)
            for s in SPLITS}
  return ReidDataset(name=dataset_name, **splits)
