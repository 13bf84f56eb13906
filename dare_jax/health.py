"""Training health: what the loop watches besides the loss going down.

  Interrupt         Ctrl-C (SIGINT) or SIGTERM: the loop saves a checkpoint
                    at the current step and stops; a second signal exits at
                    once.
  check_finite      the step's loss and gradient norm are finite, or
                    NonFiniteError naming the step (nothing is saved after
                    it: the last good checkpoint stays).
  CollapseWatch     the soft-margin loss sitting at ln 2, the value of
                    identical embeddings (triplet-reid issues #30, #4).
  schedule_warning  a learning-rate schedule that ends long before the run.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from typing import Optional

from absl import logging

from dare_jax import errors

LN2 = math.log(2.0)
WATCHED = ('loss', 'grad_norm', 'param_norm')  # a step's metrics that must
#                                                be finite


class Interrupted(errors.UserError):
  """Training stopped on request after saving a checkpoint (exit 130)."""


class NonFiniteError(errors.UserError):
  """The loss or a gradient became NaN or infinite."""


class Interrupt:
  """`with Interrupt() as stop:` ... `if stop.requested:` save and leave.

  The first SIGINT/SIGTERM only sets `requested` (no KeyboardInterrupt is
  raised inside JAX or the input pipeline, where it could be swallowed);
  the second exits the process at once with status 130. Outside the main
  thread (signals cannot be caught there), or with enabled=False, it does
  nothing. Training enables it in single-process runs only: a checkpoint is
  saved by every process together, and a signal reaches one of them.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, enabled: bool = True):
    self.enabled = enabled
    self.requested = False
    self.signal_name = ''
    self._old = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.requested:
      sys.stderr.write('Interrupted again: exiting without saving.\n')
      sys.stderr.flush()
      os._exit(130)  # pylint: disable=protected-access
    self.requested = True
    self.signal_name = signal.Signals(signum).name
    logging.warning('%s: saving a checkpoint at the current step, then '
                    'stopping (press Ctrl-C again to exit at once).',
                    self.signal_name)

  def __enter__(self):
    if self.enabled and threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._old[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)
    self._old = {}
    return False


def check_finite(step: int, metrics: dict) -> None:
  """NonFiniteError if the loss, the gradient norm or the updated
  parameters' norm of `step` (1-based: the step that produced metrics) is
  NaN or infinite."""
  bad = [k for k in WATCHED
         if k in metrics and not math.isfinite(float(metrics[k]))]
  if bad:
    values = ', '.join(f'{k} = {float(metrics[k])}' for k in bad)
    raise NonFiniteError(
        f'Step {step}: {values}. Training stopped without saving it: the '
        'latest checkpoint in the workdir, if any, is the last good one. '
        'Lower optim.eps0 or check the input images, then resume.')


class CollapseWatch:
  """Warns once when every exit's soft-margin loss has stayed within `tol`
  of ln 2 for `window` consecutive training steps.

  ln(1 + exp(d_ap - d_an)) = ln 2 exactly when positives and negatives are
  equally far apart, e.g. when all embeddings have collapsed to one point;
  a healthy run leaves ln 2 within its first few hundred steps.
  """

  def __init__(self, window: int = 500, tol: float = 0.01):
    self.window, self.tol = window, tol
    self._since: Optional[int] = None
    self.warned = False

  def update(self, step: int, metrics: dict) -> Optional[str]:
    exits = [float(v) for k, v in metrics.items() if k.startswith('loss_')]
    near = bool(exits) and all(abs(v - LN2) < self.tol for v in exits)
    if not near:
      self._since = None
      return None
    if self._since is None:
      self._since = step
    if self.warned or step - self._since < self.window:
      return None
    self.warned = True
    msg = (f'Every exit\'s loss has stayed within {self.tol} of ln 2 = '
           f'{LN2:.4f} from step {self._since} to {step}: the embeddings may '
           'have collapsed to one point (the soft-margin loss of identical '
           'embeddings is ln 2). Try a lower optim.eps0, check that '
           'train.P x train.K batches hold distinct identities, or start from '
           'model.pretrained weights.')
    logging.warning('%s', msg)
    return msg


def schedule_warning(config) -> Optional[str]:
  """A warning when train.num_steps runs far past optim.t1, where the
  learning rate has decayed to eps0 * decay_factor and keeps falling."""
  o, n = config.optim, config.train.num_steps
  if n <= 1.1 * o.t1:
    return None
  last = o.eps0 * o.decay_factor ** ((n - 1 - o.t0) / (o.t1 - o.t0))
  past = n - o.t1
  return (f'optim.t1={o.t1} but train.num_steps={n}: {past} of the {n} steps '
          f'({100 * past / n:.1f}%) run past the end of the decay, at a '
          f'learning rate below eps0 * decay_factor = '
          f'{o.eps0 * o.decay_factor:.1e} (at the last step: {last:.1e}), '
          'where training barely moves. Set --config.optim.t0 and '
          '--config.optim.t1 with the run\'s length (the paper: t1 = '
          'train.num_steps, t0 halfway).')
