"""What the input pipelines read from the config: built once, checked once.

  check_config(config.data)      every check of config.data that needs no
                                 file; configlib.validate calls it.
  TrainInput.from_config(config) what train_batches needs.
  EvalInput.from_config(config)  what eval_batches needs.
  Pipeline                       what both pipeline modules (numpy_pipeline.py,
                                 tf_pipeline.py) implement; datasets.
                                 pipeline_module(name) returns one.

The resize size (data.input_size x data.resize_factor, rounded) is computed
here only, by ImageSize, which TrainInput and EvalInput extend.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Protocol, Sequence, runtime_checkable

from dare_jax import errors
from dare_jax.data import augment
from dare_jax.data import sampler as sampler_lib
from dare_jax.data.types import Split

PIPELINES = ('tf', 'numpy')
# data.dataset; datasets.py maps every name but 'synthetic' to its reader.
DATASETS = ('synthetic', 'market', 'duke', 'cuhk03_labeled',
            'cuhk03_detected', 'mars', 'cuhk01', 'msmt17', 'folder')
SOURCES = ('folder', 'tfds')
BAD_IMAGES = ('error', 'skip')


def _set(obj, **fields) -> None:
  """Normalises fields of a frozen dataclass in its __post_init__."""
  for k, v in fields.items():
    object.__setattr__(obj, k, v)


# ----------------------------------------------------------------------------
# The specs.


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageSize:
  """The crop fed to the network and the size images are stored at.

  input_hw: (H, W) of the crop (data.input_size).
  resize_factor: data.resize_factor.
  resize_hw: derived, (round(H * factor), round(W * factor)).
  """
  input_hw: tuple[int, int]
  resize_factor: float
  resize_hw: tuple[int, int] = dataclasses.field(init=False)

  def __post_init__(self):
    input_hw = tuple(int(v) for v in self.input_hw)
    _set(self, input_hw=input_hw,
         resize_hw=augment.resize_size(input_hw, self.resize_factor))

  @classmethod
  def from_data_config(cls, data_cfg) -> ImageSize:
    return ImageSize(input_hw=tuple(data_cfg.input_size),
                     resize_factor=data_cfg.resize_factor)

  def _check_crop(self) -> None:
    augment.five_crop_offsets(self.resize_hw, self.input_hw)  # must fit


def _check_erasing(erasing_p, erasing_area, erasing_aspect) -> None:
  if not 0 <= erasing_p <= 1:
    raise errors.ConfigError(
        f'data.erasing_p={erasing_p} must be in [0, 1].')
  if not 0 < erasing_area[0] <= erasing_area[1] <= 1:
    raise errors.ConfigError(
        f'data.erasing_area={tuple(erasing_area)} must satisfy '
        '0 < low <= high <= 1.')
  if erasing_aspect <= 0:
    raise errors.ConfigError(
        f'data.erasing_aspect={erasing_aspect} must be > 0.')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Augmentation:
  """What augment.train_plan draws besides the crops (data.hflip, ...).

  The erasing fields are checked only when random_erasing is on.
  """
  hflip: bool
  random_erasing: bool
  erasing_p: float
  erasing_area: tuple[float, float]
  erasing_aspect: float

  def __post_init__(self):
    if self.random_erasing:
      _check_erasing(self.erasing_p, self.erasing_area, self.erasing_aspect)
    _set(self, hflip=bool(self.hflip),
         random_erasing=bool(self.random_erasing),
         erasing_p=float(self.erasing_p),
         erasing_area=tuple(float(a) for a in self.erasing_area),
         erasing_aspect=float(self.erasing_aspect))

  @classmethod
  def from_data_config(cls, data_cfg) -> Augmentation:
    d = data_cfg
    return Augmentation(hflip=d.hflip, random_erasing=d.random_erasing,
                        erasing_p=d.erasing_p,
                        erasing_area=tuple(d.erasing_area),
                        erasing_aspect=d.erasing_aspect)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainInput(ImageSize, Augmentation):
  """train_batches' input: P x K batches for steps start_step..num_steps-1.

  Besides ImageSize's and Augmentation's fields:
    P, K, seed: the P x K sampler (sampler.PKSampler) and the plan's seed.
    sampler: train.sampler, the PKSampler kind: 'epoch' (every identity
      once per epoch, as the authors) or 'random' (P identities afresh each
      step); see sampler.py.
    num_steps: the step after the last (train.num_steps).
    prefetch: batches prepared ahead (data.prefetch).
    cache_limit_bytes: the numpy pipeline decodes train files up front when
      they fit in this many bytes at the resize size (None: always), else
      batch by batch.
  """
  P: int
  K: int
  seed: int
  num_steps: int
  sampler: str = 'epoch'
  prefetch: int = 4
  cache_limit_bytes: Optional[int] = None

  def __post_init__(self):
    sampler_lib.check_kind(self.sampler)
    ImageSize.__post_init__(self)
    Augmentation.__post_init__(self)
    _set(self, P=int(self.P), K=int(self.K), seed=int(self.seed),
         num_steps=int(self.num_steps), prefetch=int(self.prefetch),
         cache_limit_bytes=None if self.cache_limit_bytes is None else
         int(self.cache_limit_bytes))
    self._check_crop()

  @property
  def batch_size(self) -> int:
    """The global batch, P x K."""
    return self.P * self.K

  @classmethod
  def from_config(cls, config) -> TrainInput:
    """From the whole config: seed, train.P/K/sampler/num_steps and
    data.*."""
    d, t = config.data, config.train
    return TrainInput(
        P=t.P, K=t.K, seed=config.seed, num_steps=t.num_steps,
        sampler=t.sampler,
        input_hw=tuple(d.input_size), resize_factor=d.resize_factor,
        hflip=d.hflip, random_erasing=d.random_erasing,
        erasing_p=d.erasing_p, erasing_area=tuple(d.erasing_area),
        erasing_aspect=d.erasing_aspect, prefetch=d.prefetch,
        cache_limit_bytes=int(d.cache_limit_gb * 1e9))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalInput(ImageSize):
  """eval_batches' input: padded batches of batch_size images' views (10
  with TTA: TenCrop at the resize size; else 1: the whole image resized to
  input_hw, no crop, as the authors), `prefetch` batches ahead."""
  batch_size: int
  tta: bool = True
  prefetch: int = 2

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f'batch_size={self.batch_size} must be >= 1.')
    ImageSize.__post_init__(self)
    _set(self, batch_size=int(self.batch_size), tta=bool(self.tta),
         prefetch=int(self.prefetch))
    self._check_crop()

  @classmethod
  def from_config(cls, config) -> EvalInput:
    """From the whole config: data.input_size/resize_factor and eval.*."""
    d, e = config.data, config.eval
    return EvalInput(input_hw=tuple(d.input_size),
                     resize_factor=d.resize_factor, batch_size=e.batch_size,
                     tta=e.tta)


# ----------------------------------------------------------------------------
# The interface of the pipeline modules.


@runtime_checkable
class Pipeline(Protocol):
  """What dare_jax.data.pipeline and dare_jax.data.tf_pipeline implement
  (bit-identical batches; see numpy_pipeline.py's docstring for their contents).

  The iterators they return also have close(), which stops their threads.
  """

  def train_batches(self, split: Split, spec: TrainInput, start_step: int,
                    rows: Optional[Sequence[int]] = None) -> Iterator[dict]:
    """Batches for steps start_step .. spec.num_steps - 1; rows=(lo, hi):
    only those rows of every global batch (this process's share)."""

  def eval_batches(self, split: Split, spec: EvalInput) -> Iterator[dict]:
    """Every image of the split once, in order, as padded batches."""

  def num_eval_batches(self, n: int, batch_size: int) -> int:
    """How many batches eval_batches yields for n images."""


# ----------------------------------------------------------------------------
# Config checks. Each message names the field; the late checks that protect
# library callers (datasets.load_dataset, pipeline_module, the pipelines,
# tfds_builders.load_tfds) raise the same errors through these functions.


def check_pipeline(name: str) -> None:
  if name not in PIPELINES:
    raise errors.ConfigError(
        f"data.pipeline={name!r}: use 'tf' or 'numpy'.")


def check_tfds_dataset(name: str) -> None:
  """The datasets data.source='tfds' refuses whatever is installed."""
  if name == 'mars':
    raise errors.ConfigError(
        'data.source="tfds" decodes every image into memory, which MARS '
        '(about 1.2 million frames) cannot afford: use '
        '--config.data.source=folder for data.dataset="mars".')


def check_dataset(data_cfg) -> None:
  """data.dataset and the fields that go with it (synthetic.*, bad_images,
  source); not data.root, which only loading the dataset needs."""
  d = data_cfg
  name = d.dataset
  if d.bad_images not in BAD_IMAGES:
    raise errors.ConfigError(
        f"data.bad_images={d.bad_images!r}: use 'error' (stop at the first "
        "unreadable image, naming it) or 'skip' (leave such images out).")
  if name == 'synthetic':
    from dare_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    s = d.synthetic
    synthetic.check_args(
        num_train_ids=s.num_train_ids, num_test_ids=s.num_test_ids,
        num_cameras=s.num_cameras, hard_fraction=s.hard_fraction,
        seed=s.seed, image_size=ImageSize.from_data_config(d).resize_hw)
    return
  if name not in DATASETS:
    raise errors.ConfigError(
        f'Unknown data.dataset={name!r}; known: {", ".join(DATASETS)}.')
  if d.source == 'tfds':
    check_tfds_dataset(name)
  elif d.source not in SOURCES:
    raise errors.ConfigError(
        f"data.source={d.source!r}: use 'folder' or 'tfds'.")


def check_train(train_cfg) -> None:
  """The config.train fields the input owns (train.sampler); raises
  ConfigError. TrainInput checks the same when it is built."""
  sampler_lib.check_kind(train_cfg.sampler)


def check_config(data_cfg) -> None:
  """Every check of config.data that reads no file; raises ConfigError."""
  d = data_cfg
  check_pipeline(d.pipeline)
  if len(d.input_size) != 2 or min(d.input_size) < 16:
    raise errors.ConfigError(
        f'data.input_size={d.input_size} must be (H, W), >= 16.')
  if d.resize_factor < 1:
    raise errors.ConfigError(
        f'data.resize_factor={d.resize_factor} must be >= 1.')
  Augmentation.from_data_config(d)
  check_dataset(d)
