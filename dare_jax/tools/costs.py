r"""Mul-Adds of one image at each exit of a config's model.

  python -m dare_jax.tools.costs --config=configs/market.py \
      [--config.data.input_size='(384,128)'] [--config.model.depth=101]

Prints one JSON object to stdout:
  {"stage1": int, "stage2": int, "stage3": int, "stage4": int, "fused": int}
cumulative per exit (see dare_jax/budget/costs.py for what is counted).
The numbers come from tracing the model; nothing is initialised or run.
"""


from absl import app
from absl import flags
from ml_collections import config_flags

from dare_jax import console
from dare_jax.tools import cli
from dare_jax.budget import costs

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                lock_config=True)
flags.mark_flags_as_required(['config'])


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  return cli.emit_json(lambda: costs.config_exit_costs(FLAGS.config))


if __name__ == '__main__':
  app.run(main, flags_parser=console.parse_flags)
