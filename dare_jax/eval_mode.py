"""The evaluation modes (--mode=eval, --mode=export): embed a dataset's query and gallery with TTA, score the
embeddings (CMC/mAP, re-ranking), write metrics.json, features.npz and the
figures (training curves, accuracy per exit, ranked lists).

  --mode=eval    evaluate_checkpoint: the latest checkpoint, scored
  --mode=export  export_features: the latest checkpoint's features.npz only

Training calls run_evaluation on its final state.
"""

from __future__ import annotations

from absl import logging

from dare_jax import builder
from dare_jax import distributed
from dare_jax import fileio
from dare_jax import reporting
from dare_jax.data import datasets
from dare_jax.data import spec as spec_lib
from dare_jax.evaluation import embed as embed_lib
from dare_jax.figures import ranked as ranked_fig
from dare_jax.figures import run as run_fig
from dare_jax.retrieval import features as features_lib
from dare_jax.retrieval import protocol as protocol_lib


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
  """{embedding name: {rank1, rank5, rank10, mAP, mINP, num_valid_queries,
  ...}}, plus {'rerank': {...}} when eval.rerank is on.

  With eval.normalize (the dataset configs: Zhong et al.'s Market-1501 and
  CUHK03 scripts and the MARS code L2-normalise every feature first) the
  same evaluation without normalising is added as {'unnormalized': {...}},
  so both are visible.
  """
  proto = protocol_lib.Protocol.from_config(eval_cfg)
  names = features_lib.embedding_names(feats)
  results = proto.evaluate_run(feats, names)
  if proto.normalize:
    results['unnormalized'] = proto.replace(normalize=False).evaluate_run(
        feats, names)
  return results


def write_features(path: str, feats, eval_cfg) -> None:
  """features.npz: the embeddings and ids, and the run's protocol."""
  features_lib.write(path, feats, protocol_lib.Protocol.from_config(eval_cfg))


def cross_domain_suffix(config, meta: dict) -> str:
  """'' when the checkpoint was trained on config.data.dataset (or does not
  say: checkpoints before 2026-12-03, converted weights); '_NAME' when it
  is evaluated on another dataset NAME (train on Market, test on Duke), so
  the run's own metrics.json and features.npz stay as they are."""
  trained_on = meta.get('dataset')
  name = config.data.dataset
  return f'_{name}' if trained_on and trained_on != name else ''


def run_evaluation(built: builder.Built, dataset, state, workdir: str,
                   train_loss, suffix: str = '') -> dict:
  """Embeds and scores; process 0 writes metrics.json, features.npz and the
  run's figures in workdir (with `suffix`, cross_domain_suffix:
  metrics_NAME.json, features_NAME.npz, ranked_lists_NAME.png and no
  training figures)."""
  config = built.config
  feats = embed_dataset(config, built.model, builder.variables(state),
                        dataset, built.mesh)
  results = score_features(feats, config.eval)
  results['train_loss'] = train_loss
  if distributed.is_main_process():
    reporting.write_json(fileio.join(workdir, f'metrics{suffix}.json'),
                         results)
    write_features(fileio.join(workdir, f'features{suffix}.npz'), feats,
                   config.eval)
    written = [] if suffix else run_fig.write_run_figures(workdir, results)
    written.append(write_ranked_lists(config, dataset, feats, workdir,
                                      suffix))
    logging.info('Wrote metrics%s.json, features%s.npz and %s', suffix,
                 suffix, ', '.join(fileio.basename(p) for p in written if p))
  return results


def write_ranked_lists(config, dataset, feats, workdir: str,
                       suffix: str = ''):
  """ranked_lists.png in workdir: the worst and best queries by AP with
  their top 10; None (and no file) for video data."""
  return ranked_fig.write_ranked_lists(
      fileio.join(workdir, f'ranked_lists{suffix}.png'), feats, dataset.query,
      dataset.gallery, image_hw=tuple(config.data.input_size),
      proto=protocol_lib.Protocol.from_config(config.eval), n=10, topk=10)


def restore(config, workdir: str):
  """(built, dataset, state, meta) for evaluating workdir's latest
  checkpoint. The checkpoint is found before the dataset is read, and
  nothing is created: a mistyped workdir fails at once and leaves no
  folder behind."""
  built = builder.build(config, training=False)
  state, meta = builder.restore_for_eval(built, workdir)
  # Evaluation reads the query and gallery only; the train split may be
  # empty (another dataset's test set).
  dataset = datasets.load_dataset(config.data, nonempty=('query', 'gallery'))
  return built, dataset, state, meta


def evaluate_checkpoint(config, workdir: str) -> dict:
  built, dataset, state, meta = restore(config, workdir)
  suffix = cross_domain_suffix(config, meta)
  if suffix:
    logging.info('Trained on %s, evaluated on %s: writing metrics%s.json.',
                 meta['dataset'], config.data.dataset, suffix)
  return run_evaluation(built, dataset, state, workdir,
                        meta.get('train_loss', {}), suffix)


def export_features(config, workdir: str) -> str:
  built, dataset, state, meta = restore(config, workdir)
  feats = embed_dataset(config, built.model, builder.variables(state),
                        dataset, built.mesh)
  path = fileio.join(workdir,
                      f'features{cross_domain_suffix(config, meta)}.npz')
  if distributed.is_main_process():
    write_features(path, feats, config.eval)
  logging.info('Wrote %s', path)
  return path
