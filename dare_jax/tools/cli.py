"""What the JSON-printing tools share: one object on stdout, or one line
`error: ...` on stderr and exit status 1 for anything the user can fix."""

import sys
from typing import Any, Callable

from dare_jax import errors
from dare_jax import reporting


def emit_json(compute: Callable[[], Any], indent=None) -> int:
  """Runs compute() and prints its result as JSON; returns the exit status."""
  try:
    out = compute()
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  sys.stdout.write(reporting.dumps(out, indent=indent) + '\n')
  return 0


# The retrieval protocol's flags, shared by the tools that score a features
# file. Unset, each takes the value the file records (retrieval/protocol.py:
# how the run scored it); set, it overrides it.
_PROTOCOL_FLAGS = ('metric', 'normalize', 'ap', 'k1', 'k2', 'lambda')


def define_protocol_flags(rerank: bool = False) -> None:
  """--metric, --normalize, --ap (and with rerank --k1, --k2, --lambda)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from dare_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum('metric', None, list(metrics.METRICS),
                    "The distance (default: the file's protocol, as the run "
                    'scored it; euclidean for a file without one).')
  flags.DEFINE_bool('normalize', None, 'L2-normalise the embeddings first '
                    "(default: the file's protocol).")
  flags.DEFINE_enum('ap', None, list(metrics.AP_KINDS),
                    'market: the official Market-1501 (trapezoidal) AP; '
                    'standard: mean precision at each hit (torchreid, '
                    "fast-reid) (default: the file's protocol).")
  if rerank:
    flags.DEFINE_integer('k1', None, 'Re-ranking: k of the k-reciprocal '
                         "sets (default: the file's protocol, 20).")
    flags.DEFINE_integer('k2', None, 'Re-ranking: neighbours in query '
                         "expansion (default: the file's, 6).")
    flags.DEFINE_float('lambda', None, 'Re-ranking: weight of the original '
                       "distance (default: the file's, 0.3).")


def protocol_of(feats, path: str):
  """The file's protocol with the protocol flags given on the command line
  applied over it."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from dare_jax.retrieval import protocol as protocol_lib  # pylint: disable=g-import-not-at-top
  given = {('lambda_value' if f == 'lambda' else f): flags.FLAGS[f].value
           for f in _PROTOCOL_FLAGS
           if f in flags.FLAGS and flags.FLAGS[f].value is not None}
  return protocol_lib.Protocol.of_run(feats, path).replace(**given)
