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

from dare_jax import fileio
from dare_jax.budget import anytime
from dare_jax.budget import stream
from dare_jax.models import dare

EMBEDDINGS = dare.EMBEDDINGS
# The exits of the budgeted stream (dare_jax/budget/stream.py).
STREAM_EXITS = anytime.DARE_ANSWERS
ROUTINGS = stream.ROUTINGS

DPI = 110
# Frame colours (RGB, uint8) of the ranked-list figures.
QUERY_COLOR = (40, 90, 220)
MATCH_COLOR = (0, 170, 0)
MISS_COLOR = (220, 0, 0)
# Every image is letterboxed into a cell of this size (re-ID crops are
# about twice as tall as wide), then framed.
CELL_HW = (128, 64)
FRAME = 5


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


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


def _save(plt, fig, out_png: str) -> None:
  fileio.save_figure(fig, out_png, dpi=DPI)
  plt.close(fig)


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


def framed(image, color, width: int) -> np.ndarray:
  """image (uint8 [H, W, 3], [H, W, 1] or [H, W]) as uint8 [H+2w, W+2w, 3]
  with a border of `width` pixels of `color` (RGB 0..255) around it."""
  img = np.asarray(image)
  if img.ndim == 2:
    img = img[..., None]
  if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
    raise ValueError(f'expected an [H, W, 3] image; got {img.shape}.')
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  img = img[..., :3]
  if img.dtype != np.uint8:
    img = np.clip(img, 0, 255).astype(np.uint8)
  width = int(width)
  if width < 0:
    raise ValueError(f'width must be >= 0; got {width}.')
  h, w = img.shape[:2]
  out = np.empty((h + 2 * width, w + 2 * width, 3), np.uint8)
  out[...] = np.asarray(color, np.uint8).reshape(1, 1, 3)
  out[width:width + h, width:width + w] = img
  return out


def letterbox(image, hw: tuple[int, int] = CELL_HW,
              fill: int = 255) -> np.ndarray:
  """image resized (aspect kept, PIL bilinear) and centred in a [h, w, 3]
  uint8 cell padded with `fill`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = framed(image, (0, 0, 0), 0)  # -> uint8 [H, W, 3]
  h, w = hw
  scale = min(h / img.shape[0], w / img.shape[1])
  nh = max(1, int(round(img.shape[0] * scale)))
  nw = max(1, int(round(img.shape[1] * scale)))
  small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
  out = np.full((h, w, 3), fill, np.uint8)
  top, left = (h - nh) // 2, (w - nw) // 2
  out[top:top + nh, left:left + nw] = small
  return out


def _cell(image, color) -> np.ndarray:
  return framed(letterbox(image), color, FRAME)


# --------------------------------------------------------------- Figure 3


def exit_errors(metrics: Mapping[str, Mapping[str, float]],
                fusion_weights: Optional[Sequence[float]],
                out_png: str) -> None:
  """Figure 3: Rank-1 and mAP error (%) per embedding, and the learnt
  fusion weights w_1..w_4 in a second panel (none if fusion_weights is
  None)."""
  plt = _pyplot()
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
  _save(plt, fig, out_png)


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
  plt = _pyplot()
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
    for x, y, name in zip(xs, vals, names):
      ax.annotate(name, (x, y), textcoords='offset points',
                  xytext=(4, -12 if k % 2 else 5), fontsize=8,
                  color=line.get_color())
  ylabel = 'Rank-1 (%)' if metric == 'rank1' else 'mAP (%)'
  ax.set(xlim=(0, x_max / div), xlabel=_cost_label('budget per query', suffix),
         ylabel=ylabel,
         title=f'anytime re-ID: {ylabel[:-4]} of the deepest answer within '
         'the budget')
  ax.grid(alpha=0.3)
  ax.legend(loc='best')
  _layout(fig, caption)
  _save(plt, fig, out_png)


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
  plt = _pyplot()
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
  _save(plt, fig, out_png)


# ----------------------------------------------------------- Figures 7, 8


def _hide_axes(ax) -> None:
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_frame_on(False)


def _rank_rows(fig, items: Sequence[Mapping], k: int,
               query_titles: Sequence[str], top: float, bottom: float,
               n_rows: int = 0) -> None:
  """A grid in fig (a Figure or SubFigure): per item one row per exit, the
  query in the first column of its first row, then the top-k framed green
  (a match) or red; the exit name labels the row. n_rows pads the grid
  with empty rows (so that two groups side by side share a row height)."""
  rows = [(i, name, lst) for i, it in enumerate(items)
          for name, lst in it['rows'].items()]
  axes = fig.subplots(max(n_rows, len(rows)), k + 1, squeeze=False,
                      gridspec_kw={'wspace': 0.08, 'hspace': 0.45,
                                   'left': 0.17, 'right': 0.98,
                                   'top': top, 'bottom': bottom})
  for ax in axes[len(rows):].ravel():
    ax.set_visible(False)
  # A thin rule between the rows of consecutive items.
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top
  for r in range(1, len(rows)):
    if rows[r][0] != rows[r - 1][0]:
      y = 0.5 * (axes[r - 1, 0].get_position().y0 +
                 axes[r, 0].get_position().y1)
      fig.add_artist(Line2D([0.02, 0.98], [y, y], color='0.6', lw=0.8,
                            transform=fig.transSubfigure))
  prev = None
  for r, (i, name, lst) in enumerate(rows):
    ax_q = axes[r, 0]
    _hide_axes(ax_q)
    if i != prev:
      ax_q.imshow(_cell(items[i]['query_image'], QUERY_COLOR))
      ax_q.set_title(query_titles[i], fontsize=8, color='navy')
    prev = i
    ax_q.set_ylabel(name, fontsize=9, rotation=0, ha='right', va='center',
                    labelpad=4)
    for j in range(k):
      ax = axes[r, j + 1]
      _hide_axes(ax)
      if j >= len(lst):
        continue
      image, is_match, pid, dist = lst[j]
      ax.imshow(_cell(image, MATCH_COLOR if is_match else MISS_COLOR))
      ax.set_title(f'{j + 1}: id {int(pid)}\nd={float(dist):.3g}',
                   fontsize=7, color='green' if is_match else 'firebrick')


def _query_title(item: Mapping, i: int) -> str:
  pid = item.get('query_pid')
  return f'query {i + 1}' + ('' if pid is None else f'\nid {int(pid)}')


def rank_lists(queries: Sequence[Mapping], out_png: str, k: int = 5) -> None:
  """Figure 7: the top-k gallery images of each query at every exit.

  queries: [{'query_image': uint8 [H, W, 3], 'query_pid': int,
  'rows': {exit: [(image, is_match, pid, distance)]}}]; the query is framed
  blue, matches green, the others red.
  """
  plt = _pyplot()
  n_rows = max(1, sum(len(q['rows']) for q in queries))
  fig = plt.figure(figsize=(1.0 * (k + 1) + 1.2, 1.75 * n_rows + 1.3))
  height = fig.get_figheight()
  if not queries or n_rows == 0 or not any(q['rows'] for q in queries):
    ax = fig.add_subplot()
    _hide_axes(ax)
    ax.text(0.5, 0.5, 'none', ha='center', va='center', fontsize=14)
  else:
    _rank_rows(fig, queries, k,
               [_query_title(q, i) for i, q in enumerate(queries)],
               top=1 - 1.25 / height, bottom=0.1 / height)
  fig.suptitle(f'top-{k} ranked gallery images per exit\n'
               '(query blue; green: same identity, red: different)',
               fontsize=10, y=1 - 0.12 / height, va='top')
  _save(plt, fig, out_png)


def easy_hard(easy: Sequence[Mapping], hard: Sequence[Mapping], out_png: str,
              k: int = 3, rule: str = '') -> None:
  """Figure 8: easy queries (left the stream at the first exit) beside hard
  ones (went on to the last exit), as the authors pick them: distance
  routing at q = 0.5 (stream.easy_hard_exits); the query and the top-k of
  every exit given; an empty group shows "none". rule: a caption saying how
  they were picked (none if empty)."""
  plt = _pyplot()
  groups = (('easy: left at the first exit (stage 1)', list(easy)),
            ('hard: went on to the last exit (fused)', list(hard)))
  n_rows = max([1] + [sum(len(it['rows']) for it in g) for _, g in groups])
  fig = plt.figure(figsize=(2 * (1.0 * (k + 1) + 1.2),
                            1.75 * n_rows + 1.3 + (0.3 if rule else 0.0)))
  subs = fig.subfigures(1, 2, wspace=0.02)
  height = fig.get_figheight()
  strip = 0.3 / height if rule else 0.0
  for sub, (title, items) in zip(subs, groups):
    sub.suptitle(title, fontsize=10, fontweight='bold',
                 y=1 - 0.12 / height, va='top')
    if not items or not any(it['rows'] for it in items):
      ax = sub.add_subplot()
      _hide_axes(ax)
      ax.text(0.5, 0.5, 'none', ha='center', va='center', fontsize=14,
              color='gray')
    else:
      _rank_rows(sub, items, k,
                 [_query_title(it, i) for i, it in enumerate(items)],
                 top=1 - 1.1 / height, bottom=0.1 / height + strip,
                 n_rows=n_rows)
  if rule:
    fig.text(0.01, 0.4 * strip, rule, fontsize=8, color='0.25', ha='left',
             va='center')
  _save(plt, fig, out_png)
