"""Evaluation modes: embed a dataset's query and gallery with TTA, score the
embeddings (CMC/mAP, re-ranking), write metrics.json, features.npz and the
figures (training curves, accuracy per exit, ranked lists).

  --mode=eval    evaluate_checkpoint: the latest checkpoint, scored
  --mode=export  export_features: the latest checkpoint's features.npz only

Training calls run_evaluation on its final state.
"""

from __future__ import annotations

import os

from absl import logging
import numpy as np

from dare_jax import builder
from dare_jax import distributed
from dare_jax import errors
from dare_jax import plots
from dare_jax import reporting
from dare_jax.data import datasets
from dare_jax.data import spec as spec_lib
from dare_jax.evaluation import embed as embed_lib
from dare_jax.evaluation import features as features_lib
from dare_jax.inference import figures


def load_dataset(config, workdir: str):
  """The config's dataset, every split non-empty; creates the workdir."""
  dataset = datasets.load_dataset(config.data)
  for what in ('train', 'query', 'gallery'):
    if not len(getattr(dataset, what)):
      raise errors.DataError(f'The {what} split of dataset '
                             f'{dataset.name!r} is empty.')
  os.makedirs(workdir, exist_ok=True)
  return dataset


def embed_dataset(config, model, variables, dataset, mesh) -> dict:
  """Query and gallery embeddings with TTA, in the features.npz schema.

  Video splits (MARS) are embedded frame by frame (at most
  eval.max_tracklet_frames per tracklet) and mean-pooled per tracklet.
  """
  e = config.eval
  pipe = datasets.pipeline_module(config.data.pipeline)
  eval_input = spec_lib.EvalInput.from_config(config)
  embed_fn = embed_lib.make_embed_fn(model, config.data.mean, config.data.std,
                                     mesh)
  feats = {}
  for what in ('query', 'gallery'):
    split = getattr(dataset, what)
    frames = split
    if split.tracklets is not None:
      frames = split.take(embed_lib.select_tracklet_frames(
          split.tracklets, e.max_tracklet_frames))
      logging.info('%s: %d tracklets, embedding %d of their %d frames.',
                   what, split.num_items, len(frames), len(split))
    batches = pipe.eval_batches(frames, eval_input)
    n_batches = pipe.num_eval_batches(len(frames), e.batch_size)
    for k, v in embed_lib.embed_batches(embed_fn, variables, batches,
                                        n_batches, what).items():
      if frames.tracklets is not None:
        v = embed_lib.pool_tracklets(v, frames.tracklets)
      feats[f'{what}_{k}'] = v
    feats[f'{what}_pids'], feats[f'{what}_camids'] = split.item_ids()
  return feats


def score_features(feats, eval_cfg) -> dict:
  """{embedding name: {rank1, rank5, rank10, mAP, num_valid_queries, ...}},
  plus {'rerank': {...}} when eval.rerank is on."""
  return features_lib.evaluate_with_config(
      feats, eval_cfg, names=features_lib.embedding_names(feats))


def write_features(path: str, feats) -> None:
  tmp = path + '.tmp.npz'
  np.savez(tmp, **feats)
  os.replace(tmp, path)


def run_evaluation(built: builder.Built, dataset, state, workdir: str,
                   train_loss) -> dict:
  """Embeds and scores; process 0 writes metrics.json, features.npz and the
  run's figures in workdir."""
  config = built.config
  feats = embed_dataset(config, built.model, builder.variables(state),
                        dataset, built.mesh)
  results = score_features(feats, config.eval)
  results['train_loss'] = train_loss
  if distributed.is_main_process():
    reporting.write_json(os.path.join(workdir, 'metrics.json'), results)
    write_features(os.path.join(workdir, 'features.npz'), feats)
    written = plots.write_run_figures(workdir, results)
    written.append(write_ranked_lists(config, dataset, feats, workdir))
    logging.info('Wrote metrics.json, features.npz and %s',
                 ', '.join(os.path.basename(p) for p in written if p))
  return results


def write_ranked_lists(config, dataset, feats, workdir: str):
  """ranked_lists.png in workdir: the worst and best queries by AP with
  their top 10; None (and no file) for video data."""
  e = config.eval
  return figures.write_ranked_lists(
      os.path.join(workdir, 'ranked_lists.png'), feats, dataset.query,
      dataset.gallery, image_hw=tuple(config.data.input_size),
      metric=e.metric, normalize=e.normalize, ap=e.ap, n=10, topk=10)


def restore(config, workdir: str):
  """(built, dataset, state, meta) for evaluating workdir's latest
  checkpoint."""
  built = builder.build(config)
  dataset = load_dataset(config, workdir)
  state, meta = builder.restore_for_eval(built, workdir)
  return built, dataset, state, meta


def evaluate_checkpoint(config, workdir: str) -> dict:
  built, dataset, state, meta = restore(config, workdir)
  return run_evaluation(built, dataset, state, workdir,
                        meta.get('train_loss', {}))


def export_features(config, workdir: str) -> str:
  built, dataset, state, _ = restore(config, workdir)
  feats = embed_dataset(config, built.model, builder.variables(state),
                        dataset, built.mesh)
  path = os.path.join(workdir, 'features.npz')
  if distributed.is_main_process():
    write_features(path, feats)
  logging.info('Wrote %s', path)
  return path
