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
