"""Benchmarks, run as modules: python -m dare_jax.bench.<name> --help."""

from typing import Any, Callable, Mapping, Sequence


def format_columns(columns: Sequence[tuple[str, str, str]],
                   rows: Sequence[Mapping[str, Any]],
                   value: Callable[[str, Any], Any] = lambda k, v: v) -> str:
  """A right-aligned table: one (title, row key, format) per column, a
  title line, then one line per row; None prints as n/a, other values go
  through value(key, v) before their format."""
  cells = [[t for t, _, _ in columns]]
  cells += [['n/a' if r[k] is None else f.format(value(k, r[k]))
             for _, k, f in columns] for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  return '\n'.join('  '.join(c.rjust(w) for c, w in zip(row, widths))
                   for row in cells)
