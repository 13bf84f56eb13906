"""Config checks at the door: typos and impossible values fail before any
work starts. Every command line that takes --config runs validate when it
parses its flags (console.parse_flags, without the device count);
main.py again with the devices before any mode starts, and builder.build
for library callers.

The schema is dare_jax/defaults.py: a field it lacks is refused with the
closest known name. Each component then checks its own section (models/dare,
optim, data/spec); the run's own fields (train.*, how batches split over the
devices) are checked here.
"""

from __future__ import annotations

import difflib
from typing import Optional

from dare_jax import defaults
from dare_jax import optim
from dare_jax.data import spec
from dare_jax.errors import ConfigError
from dare_jax.models import dare
from dare_jax.retrieval import protocol


def _check_keys(cfg, ref, path: str) -> None:
  for key in cfg.keys():
    name = f'{path}.{key}' if path else key
    if key not in ref:
      close = difflib.get_close_matches(key, list(ref.keys()), n=1)
      hint = f' Did you mean {path + "." if path else ""}{close[0]}?' if (
          close) else ''
      raise ConfigError(f'Unknown config field {name!r}.{hint} The known '
                       f'fields are in dare_jax/defaults.py.')
    if hasattr(ref[key], 'keys') and hasattr(cfg[key], 'keys'):
      _check_keys(cfg[key], ref[key], name)


def _check_run(config, num_devices: Optional[int], training: bool) -> None:
  t, e = config.train, config.eval
  if t.P < 2 or t.K < 2:
    raise ConfigError(f'train.P={t.P}, train.K={t.K}: batch-hard mining needs '
                     'at least 2 identities (P) and 2 images each (K).')
  if t.num_steps < 1 or t.checkpoint_every < 1 or t.log_every < 1:
    raise ConfigError('train.num_steps, train.checkpoint_every and '
                     'train.log_every must be >= 1.')
  if t.profile_steps < 0:
    raise ConfigError(f'train.profile_steps={t.profile_steps} must be >= 0 '
                      '(0: no profile).')
  if e.batch_size < 1:
    raise ConfigError(f'eval.batch_size={e.batch_size}: images per eval '
                      'batch, >= 1.')
  if e.max_tracklet_frames < 0:
    raise ConfigError(f'eval.max_tracklet_frames={e.max_tracklet_frames}: '
                      '>= 0 (0: every frame).')
  protocol.Protocol.from_config(e)  # metric, ap, ranks, re-ranking
  if num_devices is None:
    return
  # Every split over the devices at once, so one fix round is enough.
  uneven = []
  if training and (t.P * t.K) % num_devices:
    uneven.append(
        f'the batch train.P x train.K = {t.P} x {t.K} = {t.P * t.K} does not '
        f'split evenly over {num_devices} devices (choose P and K whose '
        f'product is a multiple of {num_devices})')
  if e.batch_size % num_devices:
    uneven.append(f'eval.batch_size={e.batch_size} must be a multiple of '
                  f'the {num_devices} devices')
  if uneven:
    raise ConfigError('; '.join(uneven) + '.')


def _check_budget(b) -> None:
  if b.costs_source not in ('traced', 'authors'):
    raise ConfigError(f'budget.costs_source={b.costs_source!r}: use traced '
                      '(our model, counted) or authors (their Caffe counts).')
  if b.num_budgets < 2 or b.num_examples < 0 or b.top_k < 1:
    raise ConfigError(
        f'budget.num_budgets={b.num_budgets}, budget.num_examples='
        f'{b.num_examples}, budget.top_k={b.top_k}: the stream needs >= 2 '
        'budgets, the figures >= 0 examples and >= 1 result each.')


def validate(config, num_devices: Optional[int] = 1,
             training: bool = True) -> None:
  """Raises ConfigError naming the field and the fix; training=False leaves
  out what only a training run needs (P x K splitting over the devices),
  num_devices=None every split over the devices (not known yet)."""
  _check_keys(config, defaults.get_config(), '')
  _check_run(config, num_devices, training)
  _check_budget(config.budget)
  spec.check_train(config.train)
  dare.check_config(config.model)
  optim.check_config(config.optim)
  spec.check_config(config.data)
