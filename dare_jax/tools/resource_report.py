r"""The resource report of a trained DaRe, with a TriNet ensemble beside it.

  python -m dare_jax.tools.resource_report --config=configs/synthetic.py \
      --workdir=runs/synthetic \
      --baseline=configs/trinet_synthetic.py:s@runs/trinet_s \
      --baseline=configs/trinet_synthetic.py:m@runs/trinet_m \
      --baseline=configs/trinet_synthetic.py:l@runs/trinet_l

Each workdir must hold features.npz (written by train, eval or export).
Writes budget_report.json and fig3/5/6/7/8 PNGs into --workdir and prints a
summary; `python -m dare_jax.main --mode=budget` is the same without the
baselines. --costs_source=authors plots the DaRe authors' Caffe Mul-Add counts
instead of the traced ones (a ResNet-50 DaRe at 256x128, no baselines;
dare_jax/budget/report.py); the report's "costs_source" says which.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dare_jax import console
from dare_jax import errors
from dare_jax.budget import report

config_flags.DEFINE_config_file('config', None, 'The DaRe run\'s config.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'The DaRe run (features.npz).')
flags.DEFINE_multi_string('baseline', [],
                          'CONFIG.py[:VARIANT]@WORKDIR of a trained TriNet, '
                          'in the ensemble\'s order (cheapest first).')
flags.DEFINE_enum('costs_source', None, list(report.COSTS_SOURCES),
                  'Mul-Add counts of Figures 5 / 6: traced from the model, '
                  "or the authors' Caffe counts (ResNet-50 DaRe at 256x128, "
                  'no baselines). Default: the config\'s budget.costs_source '
                  '(traced).')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    baselines = [report.parse_baseline(b) for b in FLAGS.baseline]
    data = report.compute_report(FLAGS.config, FLAGS.workdir, baselines,
                                 costs_source=FLAGS.costs_source)
    result = report.write_report(data, FLAGS.workdir)
  except errors.UserError as e:
    logging.error('%s', e)
    raise SystemExit(f'error: {e}') from None
  for line in report.summary_lines(result):
    print(line)


if __name__ == '__main__':
  app.run(main, flags_parser=console.parse_flags)
