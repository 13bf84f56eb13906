"""Orbax checkpoints of the train state, with a model fingerprint.

A checkpoint holds two items: 'state' (step, params, batch_stats, opt_state)
and 'meta' (JSON: the model config it was trained with and the last step's
per-exit losses). Restoring into a workdir trained with another model fails
with the fields that differ instead of an opaque shape error.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from dare_jax import fileio
from dare_jax.errors import CheckpointError
from dare_jax.models import dare

def model_fingerprint(model_cfg) -> dict:
  """The config.model fields that make the parameter tree: a checkpoint
  fits any config that differs only in the others
  (dare.NOT_ARCHITECTURE_FIELDS)."""
  d = json.loads(model_cfg.to_json())
  return {k: v for k, v in sorted(d.items())
          if k not in dare.NOT_ARCHITECTURE_FIELDS}


class WrongModelError(CheckpointError):
  pass


def manager(workdir: str, checkpoint_every: int, keep: int,
            read_only: bool = False) -> ocp.CheckpointManager:
  if read_only:  # what Orbax would set itself, warning about each field
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=0, max_to_keep=None, create=False,
        read_only=True, cleanup_tmp_directories=False)
  else:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=checkpoint_every, max_to_keep=keep, create=True,
        cleanup_tmp_directories=True)
  return ocp.CheckpointManager(
      fileio.join(fileio.absolute(workdir), 'checkpoints'), options=options,
      item_names=('state', 'meta'))


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict,
         force: bool = False) -> bool:
  return mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                   force=force)


# Architecture fields added after checkpoints were first written, with the
# value every older checkpoint implicitly had.
_ADDED_FIELDS = {'heads': 'dare', 'width_multiplier': 1.0}


def check_fingerprint(meta: dict, model_cfg, where: str) -> None:
  saved, now = meta.get('model', {}), model_fingerprint(model_cfg)
  if saved:
    saved = {**_ADDED_FIELDS, **saved}
  if saved != now:
    diff = sorted(k for k in set(saved) | set(now)
                  if saved.get(k) != now.get(k))
    lines = [f'  model.{k}: checkpoint {saved.get(k)!r}, config {now.get(k)!r}'
             for k in diff]
    raise WrongModelError(
        f'{where} holds a checkpoint of a different model:\n' +
        '\n'.join(lines) + '\nUse a fresh --workdir, or the config the '
        'checkpoint was trained with.')


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any,
                   model_cfg, where: str,
                   step: Optional[int] = None) -> Optional[tuple[Any, dict]]:
  """(state, meta) of the latest checkpoint (or of `step`), or None when
  there is none."""
  if step is None:
    step = mngr.latest_step()
    if step is None:
      return None
  elif step not in mngr.all_steps():
    raise CheckpointError(
        f'{where} has no checkpoint at step {step}; it has steps '
        f'{sorted(mngr.all_steps())}.')
  meta = mngr.restore(step, args=ocp.args.Composite(
      meta=ocp.args.JsonRestore()))['meta']
  check_fingerprint(meta, model_cfg, where)
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  return restored['state'], meta


def latest_meta(workdir: str) -> Optional[dict]:
  """The metadata of workdir's latest checkpoint (model fingerprint,
  dataset, evaluation fields), read without the state; None when the run
  has no checkpoint (a features file from elsewhere)."""
  if not fileio.isdir(fileio.join(fileio.absolute(workdir), 'checkpoints')):
    return None
  mngr = manager(workdir, 1, 1, read_only=True)
  try:
    step = mngr.latest_step()
    if step is None:
      return None
    return mngr.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']
  finally:
    mngr.close()


def abstract_like(tree, sharding):
  """The restore target: tree's shapes and dtypes, placed with `sharding`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)
