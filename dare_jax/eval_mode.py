"""The evaluation modes (--mode=eval, --mode=export): embed a dataset's
query and gallery with TTA, score the embeddings (CMC/mAP, re-ranking),
write metrics.json, features.npz and the figures (training curves, accuracy
per exit, ranked lists).

  --mode=eval    evaluate_checkpoint: the latest checkpoint, scored
  --mode=export  export_features: the latest checkpoint's features.npz only

Training calls run_evaluation on its final state.
"""

from __future__ import annotations

import re

from absl import logging

from dare_jax import builder
from dare_jax import distributed
from dare_jax import errors
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


# The fields that decide what an evaluation writes (the embeddings and how
# they are scored): a checkpoint records them, and --mode=eval / export under
# other values writes beside the run's files only when asked (--eval_name).
EVAL_FIELDS = ('data.input_size', 'data.resize_factor', 'data.mean',
               'data.std', 'eval.tta', 'eval.metric', 'eval.normalize',
               'eval.ap', 'eval.ranks', 'eval.rerank', 'eval.k1', 'eval.k2',
               'eval.lambda_value', 'eval.max_tracklet_frames')
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*')


def eval_fields(config) -> dict:
  """{dotted field: value} of EVAL_FIELDS, JSON-ready (what a checkpoint's
  metadata records as 'eval')."""
  out = {}
  for dotted in EVAL_FIELDS:
    section, field = dotted.split('.')
    v = config[section][field]
    out[dotted] = list(v) if isinstance(v, (tuple, list)) else v
  return out


def output_suffix(config, meta: dict, name: str = '') -> str:
  """The suffix of the files an evaluation writes: '' for the run's own
  metrics.json / features.npz; '_NAME' with --eval_name=NAME; '_DATASET'
  for another dataset than the run's (cross_domain_suffix). An evaluation
  whose EVAL_FIELDS differ from the run's, without a name, is refused
  naming the fields (it would overwrite the run's numbers with others)."""
  if name:
    if not _NAME.fullmatch(name):
      raise errors.ConfigError(
          f'--eval_name={name!r}: letters, digits, ".", "_" and "-" only '
          '(it names metrics_NAME.json).')
    return f'_{name}'
  suffix = cross_domain_suffix(config, meta)
  saved = meta.get('eval')
  if suffix or not saved:  # another dataset, or a run from before the record
    return suffix
  now = eval_fields(config)
  # Turning re-ranking on adds its numbers and changes none; k1, k2 and
  # lambda matter only when both rank with it.
  rr = ('eval.rerank', 'eval.k1', 'eval.k2', 'eval.lambda_value')
  skip = rr if not (saved.get('eval.rerank') and now['eval.rerank']) else ()
  diff = [k for k in EVAL_FIELDS
          if k in saved and k not in skip and saved[k] != now[k]]
  if diff:
    raise errors.ConfigError(
        'this config evaluates otherwise than the run did ('
        + '; '.join(f'{k}: run {saved[k]!r}, config {now[k]!r}'
                    for k in diff)
        + "): it would overwrite the run's metrics.json, features.npz and "
        'figures with other numbers. Evaluate with the run\'s settings, or '
        'pass --eval_name=NAME to write metrics_NAME.json and '
        'features_NAME.npz beside them.')
  return ''


def restore(config, workdir: str, name: str = ''):
  """(built, dataset, state, meta, suffix) for evaluating workdir's latest
  checkpoint. The checkpoint is found and the output names decided
  (output_suffix) before the dataset is read, and nothing is created: a
  mistyped workdir or a refused evaluation fails at once and leaves no
  folder behind."""
  built = builder.build(config, training=False)
  state, meta = builder.restore_for_eval(built, workdir)
  suffix = output_suffix(config, meta, name)
  # Evaluation reads the query and gallery only; the train split may be
  # empty (another dataset's test set).
  dataset = datasets.load_dataset(config.data, nonempty=('query', 'gallery'))
  return built, dataset, state, meta, suffix


def evaluate_checkpoint(config, workdir: str, name: str = '') -> dict:
  """--mode=eval; name (--eval_name): write metrics_NAME.json etc."""
  built, dataset, state, meta, suffix = restore(config, workdir, name)
  if suffix and not name:
    logging.info('Trained on %s, evaluated on %s: writing metrics%s.json.',
                 meta['dataset'], config.data.dataset, suffix)
  return run_evaluation(built, dataset, state, workdir,
                        meta.get('train_loss', {}), suffix)


def export_features(config, workdir: str, name: str = '') -> str:
  """--mode=export: workdir/features.npz (features_NAME.npz with a name)."""
  built, dataset, state, _, suffix = restore(config, workdir, name)
  feats = embed_dataset(config, built.model, builder.variables(state),
                        dataset, built.mesh)
  path = fileio.join(workdir, f'features{suffix}.npz')
  if distributed.is_main_process():
    write_features(path, feats, config.eval)
  logging.info('Wrote %s', path)
  return path
