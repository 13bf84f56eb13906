"""Adam with the TriNet / DaRe schedule and coupled L2 weight decay.

    lr(t)    = eps0                                   t < t0
             = eps0 * decay ** ((t - t0) / (t1 - t0)) t >= t0
    beta1(t) = 0.9 before t0, 0.5 from t0 on
    g       <- g + weight_decay * w   (added to the gradient, as torch.optim.Adam
                                       does; not decoupled AdamW)

t counts the updates already applied (0 for the first step), as optax does.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from dare_jax.errors import ConfigError


def check_config(optim_cfg) -> None:
  """Every config.optim check (configlib.validate calls it)."""
  t0, t1 = optim_cfg.t0, optim_cfg.t1
  if not 0 <= t0 < t1:
    raise ConfigError(f'optim.t0={t0} and optim.t1={t1} need 0 <= t0 < t1.')


def learning_rate_fn(optim_cfg):
  check_config(optim_cfg)
  eps0, t0, t1 = optim_cfg.eps0, optim_cfg.t0, optim_cfg.t1
  decay = optim_cfg.decay_factor

  def schedule(count):
    t = jnp.asarray(count, jnp.float32)
    decayed = eps0 * jnp.power(decay, (t - t0) / (t1 - t0))
    return jnp.where(t < t0, eps0, decayed)
  return schedule


def beta1_fn(optim_cfg):
  b1, b1_late, t0 = optim_cfg.beta1, optim_cfg.beta1_after_t0, optim_cfg.t0

  def schedule(count):
    return jnp.where(jnp.asarray(count) < t0, b1, b1_late)
  return schedule


def make_optimizer(optim_cfg) -> optax.GradientTransformation:
  return optax.chain(
      optax.add_decayed_weights(optim_cfg.weight_decay),
      # Bias correction uses the current beta1 (1 - beta1(t)**(t+1)), as
      # torch.optim.Adam does when its betas are changed mid-run.
      optax.inject_hyperparams(optax.scale_by_adam)(
          b1=beta1_fn(optim_cfg), b2=optim_cfg.beta2, eps=optim_cfg.adam_eps),
      optax.scale_by_learning_rate(learning_rate_fn(optim_cfg)),
  )
