r"""DaRe in JAX: train, evaluate or export features.

  python -m dare_jax.main --config=configs/synthetic.py --workdir=runs/synth
  python -m dare_jax.main --config=configs/synthetic.py --workdir=runs/synth \
      --mode=eval
  python -m dare_jax.main --config=configs/market.py \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=runs/market

Fields override with --config.FIELD=VALUE, e.g. --config.train.num_steps=100.
"""

import functools
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from dare_jax import configlib
from dare_jax import console
from dare_jax import distributed
from dare_jax import errors
from dare_jax import eval_mode
from dare_jax import fileio
from dare_jax import health
from dare_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Checkpoints, logs and results go here.')
flags.DEFINE_string('eval_name', '', '--mode=eval/export under other '
                    'evaluation settings than the run\'s (e.g. another '
                    'data.input_size): write metrics_NAME.json, '
                    'features_NAME.npz and figures beside the run\'s own '
                    'instead of over them.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'export', 'budget'],
                  'train: train (resuming from the latest checkpoint in '
                  'workdir), then evaluate. eval: evaluate the latest '
                  'checkpoint. export: write workdir/features.npz. budget: '
                  'the resource report (costs, anytime and budgeted-stream '
                  'curves, figures) from workdir/features.npz.')
distributed.define_flags()
# --help lists these too (absl shows only the main module's flags).
flags.adopt_module_key_flags(console)
flags.adopt_module_key_flags(distributed)
flags.mark_flags_as_required(['config', 'workdir'])


def _budget_report(config, workdir):
  from dare_jax.budget import report  # pylint: disable=g-import-not-at-top
  report.budget_mode(config, workdir)


def _check_inputs(config, workdir: str) -> None:
  """What a training run reads besides its config, all named at once before
  any work: the dataset's folder, and the ImageNet weights of a fresh run."""
  # pylint: disable=g-import-not-at-top
  from dare_jax import builder
  from dare_jax import checkpointing
  from dare_jax.data import datasets
  # pylint: enable=g-import-not-at-top
  problems = []
  checks = [lambda: datasets.check_root(config.data)]
  if checkpointing.latest_meta(workdir) is None:  # a fresh run
    checks.append(lambda: builder.check_pretrained(config.model))
  for check in checks:
    try:
      check()
    except errors.UserError as e:
      problems.append(str(e))
  if problems:
    raise SystemExit('error: ' + '\nerror: '.join(problems))


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    distributed.initialize_from_flags()
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  if not distributed.is_main_process():
    # Logs and metrics come from process 0; the others report problems only.
    logging.set_verbosity(logging.WARNING)
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  config = FLAGS.config
  try:  # again with the devices, before any mode starts work
    configlib.validate(config, None if FLAGS.mode == 'budget' else
                       jax.device_count(), training=FLAGS.mode == 'train')
    fileio.check_writable(FLAGS.workdir)  # every mode writes there
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None
  if FLAGS.mode == 'train':
    _check_inputs(config, FLAGS.workdir)
  run = {'train': train.train_and_evaluate,
         'eval': functools.partial(eval_mode.evaluate_checkpoint,
                                   name=FLAGS.eval_name),
         'export': functools.partial(eval_mode.export_features,
                                     name=FLAGS.eval_name),
         'budget': _budget_report}[FLAGS.mode]
  try:
    run(config, FLAGS.workdir)
  except health.Interrupted as e:
    sys.stderr.write(f'{e}\n')
    raise SystemExit(130) from None
  except errors.UserError as e:
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  app.run(main, flags_parser=console.parse_flags)
