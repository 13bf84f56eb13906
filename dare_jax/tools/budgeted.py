r"""The budgeted stream over a features file (dare_jax/budget/stream.py).

  python -m dare_jax.tools.budgeted FEATURES.npz \
      --exits=stage1,stage2,stage3,fused --costs=C1,C2,C3,C4 \
      --budgets=B1,B2,... [--routing=distance|margin|random] [--seed=0] \
      [--metric=euclidean] [--normalize] [--ap=market|standard]

The distances are those of the file's protocol (retrieval/protocol.py: how
the run scored it); --metric, --normalize and --ap override it.

Costs are the cumulative Mul-Adds per image of each exit
(`python -m dare_jax.tools.costs --config=...`), budgets the average
Mul-Adds per query. Prints a JSON list to stdout, one object per budget in
the given order:
  {"budget", "exit_fractions": [S], "realized_cost", "rank1", "mAP"}
Bad flags or files: one line `error: ...` on stderr, exit status 1.
"""


from absl import app
from absl import flags

from dare_jax import console
from dare_jax import errors
from dare_jax.budget import stream
from dare_jax.retrieval import exits as exits_lib
from dare_jax.retrieval import features as features_lib
from dare_jax.tools import cli

# Plain strings, parsed below, so that every bad value gets the same
# one-line error (absl's own parse errors print several lines).
flags.DEFINE_string('exits', ','.join(stream.DEFAULT_EXITS),
                    'Embedding names, cheapest exit first.')
flags.DEFINE_string('costs', None, 'Cumulative cost of each exit, '
                    'comma-separated, increasing.')
flags.DEFINE_string('budgets', None, 'Average budgets per query, '
                    'comma-separated.')
flags.DEFINE_string('routing', 'distance', 'distance, margin or random.')
flags.DEFINE_string('seed', '0', 'Seed of the random routing\'s stream '
                    '(seeded once; each budget, in order, draws on).')
cli.define_protocol_flags()
FLAGS = flags.FLAGS


def _numbers(flag: str, text) -> list[float]:
  if not text or not text.strip():
    raise errors.ConfigError(f'--{flag} is required (comma-separated numbers).')
  try:
    return [float(v) for v in text.split(',')]
  except ValueError:
    raise errors.ConfigError(f'--{flag}={text!r}: not a comma-separated '
                             'list of numbers.') from None


def _parse():
  exits = [e.strip() for e in FLAGS.exits.split(',')]
  if not all(exits):
    raise errors.ConfigError(f'--exits={FLAGS.exits!r} has an empty name.')
  costs = _numbers('costs', FLAGS.costs)
  if len(costs) != len(exits):
    raise errors.ConfigError(f'--costs has {len(costs)} values but --exits '
                             f'names {len(exits)} exits.')
  exits_lib.check_costs(costs)
  budgets = _numbers('budgets', FLAGS.budgets)
  if FLAGS.routing not in exits_lib.ROUTINGS:
    raise errors.ConfigError(f'--routing={FLAGS.routing!r}: expected one of '
                             f'{", ".join(exits_lib.ROUTINGS)}.')
  try:
    seed = int(FLAGS.seed)
  except ValueError:
    raise errors.ConfigError(
        f'--seed={FLAGS.seed!r}: not an integer.') from None
  if seed < 0:
    raise errors.ConfigError(f'--seed={seed}: must be >= 0.')
  return exits, costs, budgets, seed


def main(argv):
  console.start()
  def compute():
    if len(argv) != 2:
      raise errors.ConfigError(
          'usage: python -m dare_jax.tools.budgeted FEATURES.npz '
          '--costs=... --budgets=... [--flags]')
    exits, costs, budgets, seed = _parse()
    feats = features_lib.load_features(argv[1])
    stream.check_exits(feats, exits)
    return stream.simulate(feats, exits, costs, budgets,
                           routing=FLAGS.routing, seed=seed,
                           proto=cli.protocol_of(feats, argv[1]))
  return cli.emit_json(compute, indent=2)


if __name__ == '__main__':
  app.run(main, flags_parser=console.parse_flags)
