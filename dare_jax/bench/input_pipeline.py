r"""Benchmark: the input pipelines alone (no model), images/s per host core.

  python -m dare_jax.bench.input_pipeline --config=configs/market.py \
      [--pipelines=tf,numpy] [--modes=train,eval] [--source=files|memory] \
      [--steps=50] [--warmup=5] [--json=PATH]

  # Real JPEGs, e.g. the Market-1501 sample beside the checkout:
  python -m dare_jax.bench.input_pipeline --config=configs/market.py \
      --config.data.dataset=market \
      --config.data.root=../shared/data/mini_market1501 --pipelines=numpy

Each pipeline (dare_jax/data/numpy_pipeline.py, numpy threads; tf_pipeline.py,
tf.data) is driven exactly as training drives it:
  train: train_batches(split, spec.TrainInput.from_config(config), 0) --
         P x K batches of config.train at config.data.input_size -- for
         --warmup + --steps steps; images/s = B x steps / the time of the
         last --steps batches.
  eval:  eval_batches(split, spec.EvalInput.from_config(config)) as the
         evaluation calls it; images/s counts source images and views/s
         their TTA views (10 per image).
Rates are also divided by the host cores this process may use
(len(os.sched_getaffinity(0))): the pipeline's share of a machine is what
decides whether it keeps an accelerator fed.

--source=files (the default) measures what a real dataset costs: JPEG decode
+ resize + crop. Real splits are files already; a split that holds its
images in memory (the synthetic dataset) is first written once as JPEG
files, quality 95, at Market-1501's native 128x64 (PIL), into a temporary
folder, and the bench reads those paths. --source=memory decodes a file
split once up front (or takes the in-memory images) and so measures the
cropping, flipping and batching alone.

The 'decode' column says when decoding happens: 'per batch' (tf.data always;
numpy eval; numpy train beyond data.cache_limit_gb), 'once' (numpy train
decodes the whole train split into memory before its first batch, counted in
setup s, not in images/s; pass --config.data.cache_limit_gb=0 to make it
decode per batch), or 'none' (in-memory images).

Splits too small for the measurement are tiled: the train split gains
relabelled copies until it has train.P identities (the 96-image Market-1501
sample has 16), the eval split is repeated until it fills warmup + steps
batches. A pipeline that cannot be imported (tf where TensorFlow is not
installed) is skipped with a note.
"""

from __future__ import annotations

import copy
import datetime
import os
import sys
import tempfile
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np
from PIL import Image

from dare_jax import console
from dare_jax import errors
from dare_jax import reporting
from dare_jax.data import augment
from dare_jax.data import datasets
from dare_jax.data import numpy_pipeline as np_pipeline
from dare_jax.data import spec as spec_lib
from dare_jax.data.types import Split

NATIVE_HW = (128, 64)  # Market-1501's bounding boxes (H, W)
JPEG_QUALITY = 95
PIPELINES = spec_lib.PIPELINES
MODES = ('train', 'eval')
SOURCES = ('files', 'memory')


def host_cores() -> int:
  """Cores this process may run on (not the machine's count)."""
  return len(os.sched_getaffinity(0))


# ----------------------------------------------------------------------------
# Sources: JPEG files or memory.


def write_jpegs(images_NxHxWx3: np.ndarray, folder: str,
                size_hw: Sequence[int] = NATIVE_HW,
                quality: int = JPEG_QUALITY) -> list[str]:
  """Writes each image as folder/000000.jpg ..., resized (PIL bilinear) to
  size_hw first when it differs; returns the paths."""
  os.makedirs(folder, exist_ok=True)
  h, w = size_hw
  paths = []
  for i, image in enumerate(images_NxHxWx3):
    img = Image.fromarray(np.asarray(image, np.uint8))
    if img.size != (w, h):
      img = img.resize((w, h), Image.BILINEAR)
    path = os.path.join(folder, f'{i:06d}.jpg')
    img.save(path, format='JPEG', quality=quality)
    paths.append(path)
  return paths


def as_source(split: Split, source: str, folder: str,
              resize_hw: Sequence[int]) -> Split:
  """The split read from JPEG files ('files': in-memory images are written
  to `folder` at NATIVE_HW) or from memory ('memory': files are decoded once
  at the resize size)."""
  if source not in SOURCES:
    raise errors.ConfigError(f'--source={source!r}: use files or memory.')
  if source == 'files' and split.images is not None:
    return Split(pids=split.pids, camids=split.camids,
                 paths=write_jpegs(split.images, folder))
  if source == 'memory' and split.paths is not None:
    return Split(pids=split.pids, camids=split.camids,
                 images=augment.load_images(split.paths, resize_hw))
  return Split(pids=split.pids, camids=split.camids, images=split.images,
               paths=split.paths)  # tracklets dropped: frames are items here


def _gather(split: Split, index: np.ndarray, pids: np.ndarray) -> Split:
  return Split(pids=pids, camids=np.asarray(split.camids)[index],
               images=None if split.images is None else split.images[index],
               paths=None if split.paths is None else
               [split.paths[i] for i in index])


def repeat_split(split: Split, n: int) -> Split:
  """The first n items of split, split, split, ... (n >= 1)."""
  if not len(split):
    raise errors.DataError('The split to benchmark is empty.')
  index = np.arange(n) % len(split)
  return _gather(split, index, np.asarray(split.pids)[index])


def with_identities(split: Split, num_ids: int) -> Split:
  """split, tiled with relabelled copies until it has >= num_ids people
  (pid >= 1); unchanged when it has enough."""
  pids = np.asarray(split.pids, np.int64)
  have = len(np.unique(pids[pids >= 1]))
  if have == 0:
    raise errors.DataError('The train split has no identities (pid >= 1).')
  copies = -(-num_ids // have)
  if copies <= 1:
    return split
  offset = int(pids.max()) + 1
  index = np.tile(np.arange(len(split)), copies)
  rep = np.repeat(np.arange(copies), len(split))
  new_pids = np.where(pids[index] >= 1, pids[index] + rep * offset,
                      pids[index])
  return _gather(split, index, new_pids)


# ----------------------------------------------------------------------------
# Timing.


def _time_batches(make, total: int, warmup: int, count) -> dict:
  """Consumes `total` batches of make(); times the last total - warmup of
  them. setup_s: from make() to the first batch (graph building, caching).
  """
  t0 = time.perf_counter()
  batches = make()
  setup_s = None
  n = 0
  t_start = None
  for i in range(total):
    if i == warmup:
      t_start = time.perf_counter()
    batch = next(batches)
    if i == 0:
      setup_s = time.perf_counter() - t0
    if i >= warmup:
      n += count(batch)
  seconds = time.perf_counter() - t_start
  if hasattr(batches, 'close'):
    batches.close()
  return {'setup_s': setup_s, 'seconds': seconds, 'counted': n}


def _rates(row: dict, cores: int) -> dict:
  row['images_per_s'] = row['images'] / row['seconds']
  row['images_per_s_per_core'] = row['images_per_s'] / cores
  row['ms_per_batch'] = 1e3 * row['seconds'] / row['steps']
  return row


def bench_train(config, split: Split, pipeline: str, steps: int,
                warmup: int, cores: Optional[int] = None) -> dict:
  """Train batches of `pipeline` as training requests them."""
  cfg = copy.deepcopy(config)
  cfg.data.pipeline = pipeline
  cfg.train.num_steps = warmup + steps
  split = with_identities(split, cfg.train.P)
  b = cfg.train.P * cfg.train.K
  module = datasets.pipeline_module(pipeline)
  train_input = spec_lib.TrainInput.from_config(cfg)
  t = _time_batches(lambda: module.train_batches(split, train_input, 0),
                    warmup + steps, warmup, lambda batch: len(batch['image']))
  if split.images is not None:
    decode = 'none'
  elif pipeline == 'numpy' and not _numpy_decodes_per_batch(cfg, split):
    decode = 'once'
  else:
    decode = 'per batch'
  row = {'pipeline': pipeline, 'mode': 'train', 'decode': decode,
         'batch': b, 'steps': steps, 'images': t['counted'],
         'seconds': t['seconds'], 'setup_s': t['setup_s']}
  return _rates(row, cores or host_cores())


def _numpy_decodes_per_batch(config, split: Split) -> bool:
  train_input = spec_lib.TrainInput.from_config(config)
  hr, wr = train_input.resize_hw
  return len(split) * hr * wr * 3 > train_input.cache_limit_bytes


def bench_eval(config, split: Split, pipeline: str, steps: int, warmup: int,
               cores: Optional[int] = None) -> dict:
  """eval_batches of `pipeline` as the evaluation calls it; the split is
  repeated to fill warmup + steps batches."""
  module = datasets.pipeline_module(pipeline)
  e = config.eval
  eval_input = spec_lib.EvalInput.from_config(config)
  split = repeat_split(split, (warmup + steps) * e.batch_size)
  make = lambda: module.eval_batches(split, eval_input)
  views = 10 if e.tta else 1
  t = _time_batches(make, warmup + steps, warmup,
                    lambda batch: int(np.sum(batch['valid'])))
  row = {'pipeline': pipeline, 'mode': 'eval',
         'decode': 'none' if split.images is not None else 'per batch',
         'batch': e.batch_size, 'steps': steps, 'images': t['counted'],
         'views': t['counted'] * views, 'seconds': t['seconds'],
         'setup_s': t['setup_s']}
  row = _rates(row, cores or host_cores())
  row['views_per_s'] = row['views'] / row['seconds']
  return row


def available_pipelines(names: Sequence[str]) -> tuple[list[str], list[str]]:
  """(importable pipelines, notes on the skipped ones)."""
  ok, notes = [], []
  for name in names:
    if name not in PIPELINES:
      raise errors.ConfigError(f'--pipelines: {name!r} is not one of '
                               f'{", ".join(PIPELINES)}.')
    try:
      datasets.pipeline_module(name)
      ok.append(name)
    except errors.ConfigError as e:
      notes.append(f'skipped {name} (--pipelines=numpy runs without it): '
                   f'{e}')
  return ok, notes


def run(config, pipelines: Sequence[str], modes: Sequence[str], source: str,
        steps: int, warmup: int, dataset=None) -> dict:
  """Every (pipeline, mode) row; `dataset` defaults to
  datasets.load_dataset(config.data)."""
  if steps < 1 or warmup < 1:
    raise errors.ConfigError(f'--steps={steps} and --warmup={warmup} must be '
                             '>= 1 (the first batch is never timed).')
  for m in modes:
    if m not in MODES:
      raise errors.ConfigError(f'--modes: {m!r} is not one of train, eval.')
  pipelines, notes = available_pipelines(pipelines)
  if dataset is None:
    dataset = datasets.load_dataset(config.data)
  resize_hw = spec_lib.ImageSize.from_data_config(config.data).resize_hw
  cores = host_cores()
  if 'train' in modes:
    pids = np.asarray(dataset.train.pids)
    have = len(np.unique(pids[pids >= 1]))
    if have < config.train.P:
      notes.append(f'the train split has {have} identities < train.P='
                   f'{config.train.P}: tiled with relabelled copies.')
  if 'eval' in modes and len(dataset.gallery) < (
      warmup + steps) * config.eval.batch_size:
    notes.append(f'the gallery has {len(dataset.gallery)} images < '
                 f'{warmup + steps} batches of {config.eval.batch_size}: '
                 'repeated.')
  rows = []
  with tempfile.TemporaryDirectory(prefix='dare_bench_jpeg_') as tmp:
    splits = {}
    if 'train' in modes:
      splits['train'] = as_source(dataset.train, source,
                                  os.path.join(tmp, 'train'), resize_hw)
    if 'eval' in modes:
      need = (warmup + steps) * config.eval.batch_size
      g = repeat_split(dataset.gallery, min(len(dataset.gallery), need))
      splits['eval'] = as_source(g, source, os.path.join(tmp, 'eval'),
                                 resize_hw)
    for pipeline in pipelines:
      for mode in modes:
        bench = bench_train if mode == 'train' else bench_eval
        row = bench(config, splits[mode], pipeline, steps, warmup, cores)
        row['source'] = source
        rows.append(row)
  return {'dataset': config.data.dataset, 'input_size':
          list(config.data.input_size), 'resize_size': list(resize_hw),
          'source': source, 'host_cores': cores,
          'numpy_workers': np_pipeline.default_workers(),
          'eval_tta': bool(config.eval.tta), 'notes': notes, 'rows': rows,
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds')}


def format_table(result: dict) -> str:
  lines = [f'{"pipeline":8s} {"mode":5s} {"source":6s} {"decode":9s} '
           f'{"batch":>5s} {"images/s":>9s} {"img/s/core":>10s} '
           f'{"ms/batch":>9s} {"views/s":>9s} {"setup s":>8s}']
  for r in result['rows']:
    views = f'{r["views_per_s"]:9.0f}' if 'views_per_s' in r else f'{"-":>9s}'
    lines.append(
        f'{r["pipeline"]:8s} {r["mode"]:5s} {r["source"]:6s} '
        f'{r["decode"]:9s} {r["batch"]:5d} {r["images_per_s"]:9.1f} '
        f'{r["images_per_s_per_core"]:10.1f} {r["ms_per_batch"]:9.1f} '
        f'{views} {r["setup_s"]:8.2f}')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags: defined when run as a program only, so
  that tests can import several benchmark modules side by side."""
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                  lock_config=True)
  flags.DEFINE_list('pipelines', list(PIPELINES), 'tf and/or numpy.')
  flags.DEFINE_list('modes', list(MODES), 'train and/or eval.')
  flags.DEFINE_enum('source', 'files', SOURCES,
                    'files: JPEG decode + resize + crop (in-memory splits are '
                    'written as JPEGs first); memory: decoded images.')
  flags.DEFINE_integer('steps', 50, 'Timed batches per row.')
  flags.DEFINE_integer('warmup', 5, 'Untimed batches first (>= 1).')
  flags.DEFINE_string('json', '', 'Also write the results here.')
  flags.mark_flags_as_required(['config'])


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  logging.set_verbosity(logging.WARNING)  # no per-5% decoding progress
  c = FLAGS.config
  try:
    result = run(c, FLAGS.pipelines, FLAGS.modes, FLAGS.source, FLAGS.steps,
                 FLAGS.warmup)
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  for note in result['notes']:
    print(f'note: {note}')
  how = (' (in-memory splits as JPEG q95 at 128x64)'
         if result['source'] == 'files' else '')
  print(f'dataset {result["dataset"]}, input {c.data.input_size[0]}x'
        f'{c.data.input_size[1]} (resize {result["resize_size"][0]}x'
        f'{result["resize_size"][1]}), source {result["source"]}{how}, '
        f'P x K {c.train.P}x{c.train.K}, eval batch {c.eval.batch_size} x '
        f'{10 if c.eval.tta else 1} views; host cores {result["host_cores"]} '
        f'(numpy workers {result["numpy_workers"]}); {FLAGS.steps} timed '
        f'batches after {FLAGS.warmup}')
  print(format_table(result))
  if FLAGS.json:
    reporting.write_json(FLAGS.json, result)
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
