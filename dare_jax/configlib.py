"""Config checks: typos and impossible values fail before any work starts."""

from __future__ import annotations

import difflib

from configs import default
from dare_jax.errors import ConfigError


def _check_keys(cfg, ref, path: str) -> None:
  for key in cfg.keys():
    name = f'{path}.{key}' if path else key
    if key not in ref:
      close = difflib.get_close_matches(key, list(ref.keys()), n=1)
      hint = f' Did you mean {path + "." if path else ""}{close[0]}?' if (
          close) else ''
      raise ConfigError(f'Unknown config field {name!r}.{hint} The known '
                       f'fields are in configs/default.py.')
    if hasattr(ref[key], 'keys') and hasattr(cfg[key], 'keys'):
      _check_keys(cfg[key], ref[key], name)


def validate(config, num_devices: int = 1) -> None:
  """Raises ValueError naming the field and the fix."""
  _check_keys(config, default.get_config(), '')
  t, d, e = config.train, config.data, config.eval
  if t.P < 2 or t.K < 2:
    raise ConfigError(f'train.P={t.P}, train.K={t.K}: batch-hard mining needs '
                     'at least 2 identities (P) and 2 images each (K).')
  if (t.P * t.K) % num_devices:
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
  if config.model.dtype not in ('float32', 'bfloat16'):
    raise ConfigError(
        f"model.dtype={config.model.dtype!r}: use 'float32' or 'bfloat16' "
        '(the compute dtype; parameters stay float32). float16 would need '
        'loss scaling, which this trainer does not do.')
  if d.pipeline not in ('tf', 'numpy'):
    raise ConfigError(f"data.pipeline={d.pipeline!r}: use 'tf' or 'numpy'.")
  if len(d.input_size) != 2 or min(d.input_size) < 16:
    raise ConfigError(f'data.input_size={d.input_size} must be (H, W), >= 16.')
  if d.resize_factor < 1:
    raise ConfigError(f'data.resize_factor={d.resize_factor} must be >= 1.')
