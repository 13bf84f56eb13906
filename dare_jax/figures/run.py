"""A run's own figures: training curves and accuracy per exit next to
metrics.json, and the engine's time-accuracy plot (bench/early_exit)."""

from __future__ import annotations

import json
from typing import Mapping

from dare_jax import fileio
from dare_jax.figures import common
from dare_jax.models.dare import EMBEDDINGS


def read_train_log(path: str) -> list[dict]:
  """The records of train_log.jsonl; a resumed run's repeats keep the last."""
  by_step = {}
  for line in fileio.read_text(path).splitlines():
    if line.strip():
      rec = json.loads(line)
      by_step[rec['step']] = rec
  return [by_step[s] for s in sorted(by_step)]


def training_curves(records: list[dict], out_png: str) -> None:
  """Loss of every exit against the step, the learning rate beside it."""
  plt = common.pyplot()
  fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
  steps = [r['step'] for r in records]
  for name in EMBEDDINGS:
    key = f'loss_{name}'
    if records and key in records[0]:
      ax.plot(steps, [r[key] for r in records], label=name, lw=1.2)
  ax.set(xlabel='step', ylabel='batch-hard soft-margin loss', yscale='log',
         title='training loss per exit')
  ax.legend()
  ax.grid(alpha=0.3)
  ax_lr.plot(steps, [r['lr'] for r in records], color='k')
  ax_lr.set(xlabel='step', ylabel='learning rate', yscale='log',
            title='learning rate')
  ax_lr.grid(alpha=0.3)
  fig.tight_layout()
  common.save(fig, out_png, 110)


def exit_accuracy(metrics: Mapping[str, Mapping[str, float]],
                  out_png: str) -> None:
  """Rank-1 and mAP of every exit and the fusion, as grouped bars."""
  plt = common.pyplot()
  names = [n for n in EMBEDDINGS if n in metrics]
  fig, ax = plt.subplots(figsize=(7, 4))
  width = 0.38
  for i, (key, label) in enumerate((('rank1', 'Rank-1'), ('mAP', 'mAP'))):
    vals = [100 * metrics[n][key] for n in names]
    xs = [j + (i - 0.5) * width for j in range(len(names))]
    bars = ax.bar(xs, vals, width, label=label)
    ax.bar_label(bars, fmt='%.1f', fontsize=8)
  ax.set_xticks(range(len(names)), names)
  ax.set(ylabel='%', ylim=(0, 105))
  # Below the exit names, in a row: inside the axes any corner can cover a
  # bar.
  ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.09), ncol=2,
            frameon=False)
  ax.set_title('accuracy per exit')
  fig.tight_layout()
  common.save(fig, out_png, 110)


def write_run_figures(workdir: str, metrics) -> list[str]:
  """training.png (if there is a train log) and exits.png in workdir."""
  written = []
  log = fileio.join(workdir, 'train_log.jsonl')
  if fileio.exists(log):
    records = read_train_log(log)
    if records:
      written.append(fileio.join(workdir, 'training.png'))
      training_curves(records, written[-1])
  written.append(fileio.join(workdir, 'exits.png'))
  exit_accuracy(metrics, written[-1])
  return written


def time_accuracy(result: Mapping, out_png: str, runtime: str = 'jax',
                  batch: int = 1, title: str = '') -> None:
  """Measured ms per query (x) against Rank-1 (y): each routing's budgets as
  a line, each exit alone and the full forward as points (bench/early_exit's
  --bundle result, one runtime and batch size)."""
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  rows = [r for r in result['rows']
          if r['runtime'] == runtime and r['batch'] == batch]
  exits = [r for r in result['exits']
           if r['runtime'] == runtime and r['batch'] == batch]
  styles = {'margin': ('C0', 'o'), 'distance': ('C1', 's'),
            'random': ('C2', '^')}
  for routing in dict.fromkeys(r['routing'] for r in rows):
    pts = [(r['ms_per_query'], 100 * r['rank1']) for r in sorted(
        (r for r in rows if r['routing'] == routing),
        key=lambda r: r['budget'])]  # in budget order
    color, marker = styles.get(routing, ('C3', 'x'))
    ax.plot(*zip(*pts), marker=marker, color=color, lw=1.4,
            label=f'DaRe, {routing} routing')
  for e in exits:
    full = e['exit'] == 'full'
    ax.scatter(e['ms_per_query'], 100 * e['rank1'], marker='*' if full else
               'D', s=140 if full else 45, color='k' if full else 'C7',
               zorder=3)
    ax.annotate('full model' if full else (
        'fused (stage by stage)' if e['exit'] == 'fused' else e['exit']),
                (e['ms_per_query'], 100 * e['rank1']),
                textcoords='offset points',
                xytext=(-30, 9) if full else (6, -10), fontsize=8)
  ax.set(xlabel=f'measured ms per query ({runtime}, batch {batch})',
         ylabel='Rank-1 (%)', title=title or 'anytime re-ID: time vs accuracy')
  ax.text(0.01, 0.99, 'lines: budgets in increasing order', fontsize=7,
          transform=ax.transAxes, va='top', color='0.4')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize=8)
  ax.margins(x=0.12, y=0.08)
  fig.tight_layout()
  common.save(fig, out_png, 120)
