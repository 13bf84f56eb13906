"""Config checks at the door: typos and impossible values fail before any
work starts (builder.build calls validate first).

The schema is dare_jax/defaults.py: a field it lacks is refused with the
closest known name. Each component then checks its own section (models/dare,
optim, data/spec); the run's own fields (train.*, how batches split over the
devices) are checked here.
"""

from __future__ import annotations

import difflib

from dare_jax import defaults
from dare_jax import optim
from dare_jax.data import spec
from dare_jax.errors import ConfigError
from dare_jax.models import dare


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


def _check_run(config, num_devices: int, training: bool) -> None:
  t, e = config.train, config.eval
  if t.P < 2 or t.K < 2:
    raise ConfigError(f'train.P={t.P}, train.K={t.K}: batch-hard mining needs '
                     'at least 2 identities (P) and 2 images each (K).')
  if training and (t.P * t.K) % num_devices:
    raise ConfigError(
        f'The batch train.P x train.K = {t.P} x {t.K} = {t.P * t.K} does not '
        f'split evenly over {num_devices} devices; choose P and K whose '
        f'product is a multiple of {num_devices}.')
  if e.batch_size % num_devices:
    raise ConfigError(f'eval.batch_size={e.batch_size} must be a multiple of '
                     f'the {num_devices} devices.')
  if t.num_steps < 1 or t.checkpoint_every < 1 or t.log_every < 1:
    raise ConfigError('train.num_steps, train.checkpoint_every and '
                     'train.log_every must be >= 1.')
  if t.profile_steps < 0:
    raise ConfigError(f'train.profile_steps={t.profile_steps} must be >= 0 '
                      '(0: no profile).')


def validate(config, num_devices: int = 1, training: bool = True) -> None:
  """Raises ConfigError naming the field and the fix; training=False leaves
  out what only a training run needs (P x K splitting over the devices)."""
  _check_keys(config, defaults.get_config(), '')
  _check_run(config, num_devices, training)
  spec.check_train(config.train)
  dare.check_config(config.model)
  optim.check_config(config.optim)
  spec.check_config(config.data)
