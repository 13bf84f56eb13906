"""The paper's resource figures, drawn from plain arrays.

Wang et al., CVPR 2018 (DaRe): Figure 3 (error per exit and the learnt
fusion weights), Figure 5 (anytime re-ID), Figure 6 (budgeted stream),
Figure 7 (ranked lists per exit) and Figure 8 (easy and hard queries).

Nothing here runs JAX, a model or a dataset (only their names are
imported): the callers (reports, tools) pass metrics, costs and images as
Python / numpy values, and each figure is written as a PNG (matplotlib with
the Agg backend, imported lazily, no display).

Costs are Mul-Adds; the axes show them scaled by a power of 1000 picked
from the data ("Mul-Adds, x 1e9"). Figures 5 and 6 take costs_source
('traced' or 'authors', COSTS_SOURCES) and say in a caption which counts
they plot.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from dare_jax.budget import curves as curves_lib
from dare_jax.figures import common
from dare_jax.figures import ranked
from dare_jax.models import dare
from dare_jax.retrieval import exits as exits_lib

EMBEDDINGS = dare.EMBEDDINGS
# The exits of the budgeted stream (dare_jax/budget/stream.py).
STREAM_EXITS = curves_lib.DARE_ANSWERS
ROUTINGS = exits_lib.ROUTINGS

DPI = 110


# What the cost axes of Figures 5 and 6 are, per report.COSTS_SOURCES key.
COSTS_SOURCES = {
    'traced': 'Mul-Adds traced from our model (dare_jax/budget/costs.py)',
    'authors': "Mul-Adds: the DaRe authors' Caffe counts (netscope; "
               'DARENet budgeted_stream/main.py)',
}


def costs_caption(costs_source: Optional[str]) -> str:
  """The caption of a cost axis ('' for None); ValueError if unknown."""
  if costs_source is None:
    return ''
  if costs_source not in COSTS_SOURCES:
    raise ValueError(f'costs_source must be one of {sorted(COSTS_SOURCES)};'
                     f' got {costs_source!r}.')
  return 'costs: ' + COSTS_SOURCES[costs_source]


def _layout(fig, caption: str) -> None:
  """tight_layout, with the caption (if any) in a strip at the bottom."""
  if not caption:
    fig.tight_layout()
    return
  strip = 0.3 / fig.get_figheight()  # 0.3 inch
  fig.text(0.01, 0.35 * strip, caption, fontsize=8, color='0.25',
           ha='left', va='center')
  fig.tight_layout(rect=(0, strip, 1, 1))


# ----------------------------------------------------------------- helpers


def cost_scale(max_cost: float) -> tuple[float, str]:
  """(divisor, label suffix) that shows costs up to max_cost in units of a
  power of 1000: 3.2e9 -> (1e9, 'x 1e9'); below 1000 -> (1, '')."""
  max_cost = float(max_cost)
  if not math.isfinite(max_cost) or max_cost < 1000:
    return 1.0, ''
  exp = 3 * int(math.floor(math.log10(max_cost) / 3))
  return 10.0 ** exp, f'x 1e{exp}'


def _cost_label(what: str, suffix: str) -> str:
  return f'{what} (Mul-Adds, {suffix})' if suffix else f'{what} (Mul-Adds)'


def anytime_value(costs: Sequence[float], values: Sequence[float],
                  budget: float) -> Optional[float]:
  """The value of the deepest answer with costs[i] <= budget, or None when
  even the first answer costs more than the budget (costs non-decreasing;
  of equal costs the later answer wins)."""
  costs = np.asarray(costs, np.float64)
  if len(costs) != len(values):
    raise ValueError(f'{len(costs)} costs but {len(values)} values.')
  if costs.ndim != 1 or np.any(np.diff(costs) < 0):
    raise ValueError(f'costs must not decrease; got {costs.tolist()}.')
  i = int(np.searchsorted(costs, float(budget), side='right')) - 1
  return None if i < 0 else values[i]


# --------------------------------------------------------------- Figure 3


def exit_errors(metrics: Mapping[str, Mapping[str, float]],
                fusion_weights: Optional[Sequence[float]],
                out_png: str) -> None:
  """Figure 3: Rank-1 and mAP error (%) per embedding, and the learnt
  fusion weights w_1..w_4 in a second panel (none if fusion_weights is
  None)."""
  plt = common.pyplot()
  names = [n for n in EMBEDDINGS if n in metrics]
  if fusion_weights is None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax_w = None
  else:
    fig, (ax, ax_w) = plt.subplots(
        1, 2, figsize=(11, 4.2), gridspec_kw={'width_ratios': [3, 2]})
  width = 0.38
  top = 0.0
  for i, (key, label) in enumerate((('rank1', 'Rank-1 error'),
                                    ('mAP', 'mAP error'))):
    errs = [100 - 100 * float(metrics[n][key]) for n in names]
    top = max([top] + errs)
    xs = [j + (i - 0.5) * width for j in range(len(names))]
    bars = ax.bar(xs, errs, width, label=label)
    ax.bar_label(bars, fmt='%.1f', fontsize=8)
  ax.set_xticks(range(len(names)), names)
  ax.set(xlabel='embedding', ylabel='error (%)', ylim=(0, max(10, top) * 1.15),
         title='Rank-1 / mAP error per embedding (lower is better)')
  ax.grid(axis='y', alpha=0.3)
  ax.set_axisbelow(True)
  ax.legend(loc='upper right')
  if ax_w is not None:
    ws = [float(w) for w in fusion_weights]
    labels = [f'$w_{i + 1}$' for i in range(len(ws))]
    colors = ['tab:green' if w >= 0 else 'tab:red' for w in ws]
    bars = ax_w.bar(range(len(ws)), ws, 0.6, color=colors)
    ax_w.bar_label(bars, fmt='%.3g', fontsize=8)
    ax_w.axhline(0, color='k', lw=0.8)
    ax_w.set_xticks(range(len(ws)), labels)
    lo, hi = min(ws + [0.0]), max(ws + [0.0])
    pad = 0.15 * max(hi - lo, 1e-6)
    ax_w.set(xlabel='stage', ylabel='weight', ylim=(lo - pad, hi + pad),
             title='learnt fusion weights')
    ax_w.grid(axis='y', alpha=0.3)
    ax_w.set_axisbelow(True)
  fig.tight_layout()
  common.save(fig, out_png, DPI)


# --------------------------------------------------------------- Figure 5


def anytime_curve(curves: Mapping[str, Mapping[str, Sequence]], out_png: str,
                  metric: str = 'rank1',
                  costs_source: Optional[str] = None) -> None:
  """Figure 5: accuracy (%) of the anytime answer against the budget.

  curves: {label: {'costs': cumulative Mul-Adds of the successive answers,
  'values': their rank-1 (or mAP) in [0, 1], 'names': the answers' names}}.
  Each curve is a step function (anytime_value): the deepest answer whose
  cost is <= the budget, nothing below the first cost. costs_source: which
  Mul-Add counts the costs are (a caption; none if None).
  """
  if metric not in ('rank1', 'mAP'):
    raise ValueError(f"metric must be 'rank1' or 'mAP'; got {metric!r}.")
  caption = costs_caption(costs_source)
  plt = common.pyplot()
  max_cost = max([max(map(float, c['costs'])) for c in curves.values()
                  if len(c['costs'])] + [0.0])
  div, suffix = cost_scale(max_cost)
  x_max = 1.05 * max_cost if max_cost > 0 else 1.0
  fig, ax = plt.subplots(figsize=(8, 4.8))
  markers = 'osD^v'
  for k, (label, c) in enumerate(curves.items()):
    costs = [float(x) for x in c['costs']]
    vals = [100 * float(v) for v in c['values']]
    names = list(c.get('names') or [''] * len(costs))
    if not costs:
      continue
    anytime_value(costs, vals, costs[0])  # validates the costs' order
    xs = [x / div for x in costs] + [x_max / div]
    ys = vals + [vals[-1]]
    line, = ax.step(xs, ys, where='post', lw=1.8, label=label)
    ax.plot(xs[:-1], vals, markers[k % len(markers)], color=line.get_color(),
            ms=6)
    for i, (x, y, name) in enumerate(zip(xs, vals, names)):
      last = i == len(vals) - 1  # right-aligned: inside the axes
      ax.annotate(name, (x, y), textcoords='offset points',
                  xytext=(-4 if last else 4, -12 if k % 2 else 5),
                  ha='right' if last else 'left', fontsize=8,
                  color=line.get_color())
  ylabel = 'Rank-1 (%)' if metric == 'rank1' else 'mAP (%)'
  ax.set(xlim=(0, x_max / div), xlabel=_cost_label('budget per query', suffix),
         ylabel=ylabel,
         title=f'anytime re-ID: {ylabel[:-4]} of the deepest answer within '
         'the budget')
  ax.grid(alpha=0.3)
  ax.legend(loc='best')
  _layout(fig, caption)
  common.save(fig, out_png, DPI)


# --------------------------------------------------------------- Figure 6


def stream_curves(results: Mapping[str, Sequence[Mapping]],
                  single_exits: Mapping[str, Sequence[float]],
                  out_png: str,
                  exit_names: Sequence[str] = STREAM_EXITS,
                  costs_source: Optional[str] = None) -> None:
  """Figure 6: budgeted stream re-ID.

  results: {routing: [{'budget', 'realized_cost', 'rank1', 'mAP',
  'exit_fractions'}]}; Rank-1 (%) and mAP (%) against the realised mean
  cost per query, a line per routing. single_exits: {name: (cost, rank1)
  or (cost, rank1, mAP)}, drawn as labelled points (only the 3-tuples in the
  mAP panel). A third panel stacks the exit fractions of the 'margin'
  routing against the budget, when there is one. costs_source: which
  Mul-Add counts the costs are (a caption; none if None).
  """
  caption = costs_caption(costs_source)
  plt = common.pyplot()
  routings = [r for r in ROUTINGS if r in results] + [
      r for r in results if r not in ROUTINGS]
  costs = [float(p['realized_cost']) for r in routings for p in results[r]]
  costs += [float(p['budget']) for r in routings for p in results[r]]
  costs += [float(v[0]) for v in single_exits.values()]
  div, suffix = cost_scale(max(costs + [0.0]))
  margin = [p for p in results.get('margin', [])
            if p.get('exit_fractions') is not None]
  n_panels = 3 if margin else 2
  fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.4))
  styles = {'distance': ('tab:blue', 'o'), 'margin': ('tab:orange', 's'),
            'random': ('tab:gray', '^')}
  for ax, (key, label, idx) in zip(axes, (('rank1', 'Rank-1 (%)', 1),
                                          ('mAP', 'mAP (%)', 2))):
    for r in routings:
      pts = sorted(results[r], key=lambda p: float(p['realized_cost']))
      color, marker = styles.get(r, (None, 'o'))
      ax.plot([float(p['realized_cost']) / div for p in pts],
              [100 * float(p[key]) for p in pts], marker=marker, ms=5,
              lw=1.5, color=color, label=f'{r} routing')
    first = True
    for name, v in single_exits.items():
      if len(v) <= idx:
        continue
      x, y = float(v[0]) / div, 100 * float(v[idx])
      ax.scatter([x], [y], marker='*', s=140, color='k', zorder=5,
                 label='single exit' if first else None)
      first = False
      ax.annotate(name, (x, y), textcoords='offset points', xytext=(5, -11),
                  fontsize=8)
    ax.set(xlabel=_cost_label('mean cost per query', suffix), ylabel=label,
           title=f'budgeted stream: {label[:-4]} vs realised cost')
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize=8)
  if margin:
    ax = axes[2]
    pts = sorted(margin, key=lambda p: float(p['budget']))
    xs = np.array([float(p['budget']) / div for p in pts])
    fr = np.array([[float(f) for f in p['exit_fractions']] for p in pts])
    n = fr.shape[1]
    names = (list(exit_names) if len(exit_names) == n
             else [f'exit {i + 1}' for i in range(n)])
    if len(xs) >= 2:
      ax.stackplot(xs, fr.T, labels=names, alpha=0.85)
      ax.set_xlim(xs[0], xs[-1])
    else:
      bottom = np.zeros(len(xs))
      w = 0.3 * max(abs(xs[0]), 1e-9)
      for i in range(n):
        ax.bar(xs, fr[:, i], w, bottom=bottom, label=names[i])
        bottom += fr[:, i]
      ax.set_xlim(0, 2 * max(xs[0], 1e-9))
    ax.set(ylim=(0, 1), xlabel=_cost_label('budget', suffix),
           ylabel='fraction of queries',
           title='exit fractions, margin routing')
    ax.grid(alpha=0.3)
    ax.legend(loc='upper right', fontsize=8)
  _layout(fig, caption)
  common.save(fig, out_png, DPI)


# ----------------------------------------------------------- Figures 7, 8


def _rows(items: Sequence[Mapping]) -> list[dict]:
  """figures/ranked rows of report examples: per query, one row per exit."""
  rows = []
  for i, it in enumerate(items):
    pid = it.get('query_pid')
    label = f'query {i + 1}' + ('' if pid is None else f'  person {int(pid)}')
    for name, lst in it['rows'].items():
      rows.append({'query': it['query_image'], 'query_label': label,
                   'exit': name,
                   'results': [{'image': img, 'distance': float(d),
                                'match': bool(m)} for img, m, _, d in lst]})
  return rows


def rank_lists(queries: Sequence[Mapping], out_png: str, k: int = 5) -> None:
  """Figure 7: the top-k gallery images of each query at every exit.

  queries: [{'query_image': uint8 [H, W, 3], 'query_pid': int,
  'rows': {exit: [(image, is_match, pid, distance)]}}]; the query is framed
  blue, matches green, the others red (figures/ranked.ranked_panels).
  """
  ranked.ranked_panels(out_png, [('', _rows(queries))],
                       title=f'top-{k} ranked gallery images per exit', k=k)


def easy_hard(easy: Sequence[Mapping], hard: Sequence[Mapping], out_png: str,
              k: int = 3, rule: str = '') -> None:
  """Figure 8: easy queries (left the stream at the first exit) beside hard
  ones (went on to the last exit), as the authors pick them: distance
  routing at q = 0.5 (stream.easy_hard_exits); the query and the top-k of
  every exit given; an empty group shows "none". rule: how they were
  picked, in the title."""
  ranked.ranked_panels(
      out_png, [('easy: left at the first exit (stage 1)', _rows(easy)),
                ('hard: went on to the last exit (fused)', _rows(hard))],
      title=rule, k=k)
