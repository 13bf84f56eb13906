"""Ranked-list figures: each query beside its nearest gallery images.

The re-ID way to look at what a model gets wrong, drawn by one function,
ranked_panels, for --mode=eval (ranked_lists.png), tools/search --figure and
the paper's Figures 7 and 8 (figures/budget.py). One figure row per query
and exit:

  [label]                  #1       #2             #K
  +-------+            +-------+ +-------+     +-------+
  | query |   (gap)    | crop  | | crop  | ... | crop  |
  +-------+            +-------+ +-------+     +-------+
  [exit]                0.532    0.618          0.977

The query has a blue frame, its label above (wrapped to the column) and
the embedding (exit) name below. The K results, nearest first, have their
rank above and their distance below; a thick green frame marks a true match
(same person), red a false one, none an unknown. The figure is
COLUMN_INCHES wide per crop column (K results, the query and a GAP_COLUMNS
gap) and ROW_INCHES tall per row, plus TITLE_INCHES for a title, at DPI dots
per inch. Panels (Figure 8: easy | hard) stand side by side, each under its
heading; an empty panel says "none".

worst_and_best and ranked_rows pick what to show (pure NumPy, no images);
write_ranked_lists puts the pieces together for an evaluated dataset, as
run_evaluation does for ranked_lists.png.
"""

from __future__ import annotations

import os
import textwrap
from typing import Mapping, Optional, Sequence

from absl import logging
import numpy as np

from dare_jax import errors
from dare_jax.data import types
from dare_jax.evaluation import metrics
from dare_jax.figures import common
from dare_jax.retrieval import features as features_lib
from dare_jax.retrieval import protocol as protocol_lib

COLUMN_INCHES = 1.1
ROW_INCHES = 2.2
GAP_COLUMNS = 0.4  # between the query and its results, in crop columns
TITLE_INCHES = 0.5
DPI = 100

QUERY_COLOR = '#2060c0'
MATCH_COLOR = '#00b000'
MISMATCH_COLOR = '#e00000'
_QUERY_FRAME_PT = 2.5
_RESULT_FRAME_PT = 4.0
# Room within a row for the text above and below a crop.
_TEXT_ABOVE_INCHES = 0.3
_TEXT_BELOW_INCHES = 0.3
_CROP_PAD_INCHES = 0.08  # each side of a crop, inside its column
_LABEL_CHARS = 18  # per line of a query label, about a column at 7 pt


# ----------------------------------------------------------------------------
# What to show.


def worst_and_best(ap_Q, n: int = 10) -> np.ndarray:
  """The n lowest-AP queries, lowest first, then the n highest, highest first.

  Ties go to the lower index. No query is picked twice: with fewer than 2n
  queries the best are the highest of those not among the worst.

  Args:
    ap_Q: float [Q] average precision per query.
    n: queries per end.

  Returns:
    int64 [min(2n, Q)] query indices.
  """
  ap_Q = np.asarray(ap_Q, np.float64)
  if ap_Q.ndim != 1:
    raise errors.DataError(f'ap_Q must be 1-D; got shape {ap_Q.shape}.')
  n = max(0, int(n))
  worst = np.argsort(ap_Q, kind='stable')[:n]
  rest = np.setdiff1d(np.arange(len(ap_Q)), worst)
  best = rest[np.argsort(-ap_Q[rest], kind='stable')][:n]
  return np.concatenate([worst, best]).astype(np.int64)


def ranked_rows(dist_QxG, q_pids, q_camids, g_pids, g_camids,
                query_indices: Sequence[int], topk: int = 10) -> list[tuple]:
  """The top-k gallery entries of some queries, as the protocol ranks them.

  Gallery entries the protocol removes (junk, pid -1; the query's person seen
  by the query's camera) are skipped; ties in distance keep gallery order
  (a stable sort, as the evaluator's).

  Args:
    dist_QxG: float [Q, G] distances (NumPy or JAX; only the chosen rows are
      read back).
    q_pids, q_camids: int [Q] query person and camera ids.
    g_pids, g_camids: int [G] gallery person and camera ids.
    query_indices: the queries to rank, in the order wanted.
    topk: results per query (fewer when fewer gallery entries survive).

  Returns:
    [(query index, [gallery indices], [distances], [match])], one tuple per
    query index, nearest first; match is True when the gallery person is the
    query's.
  """
  idx_R = np.asarray(query_indices, np.int64).reshape(-1)
  if not idx_R.size:
    return []
  dist_RxG = np.asarray(dist_QxG[idx_R], np.float64)
  q_pids_R = np.asarray(q_pids)[idx_R]
  q_camids_R = np.asarray(q_camids)[idx_R]
  g_pids_G, g_camids_G = np.asarray(g_pids), np.asarray(g_camids)
  same_pid_RxG, removed_RxG = metrics.removal_mask(q_pids_R, q_camids_R,
                                                   g_pids_G, g_camids_G)
  rows = []
  for r, qi in enumerate(idx_R):
    kept_K = np.flatnonzero(~removed_RxG[r])
    order_K = kept_K[np.argsort(dist_RxG[r, kept_K], kind='stable')][:topk]
    rows.append((int(qi), [int(g) for g in order_K],
                 [float(d) for d in dist_RxG[r, order_K]],
                 [bool(m) for m in same_pid_RxG[r, order_K]]))
  return rows


# ----------------------------------------------------------------------------
# Drawing.


def _check_image(image, what: str) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or not image.size:
    raise errors.DataError(f'{what} must be an [H, W, 3] image; got shape '
                           f'{image.shape}.')
  return image


def _frame(ax, color: Optional[str], width_pt: float) -> None:
  ax.set_xticks([])
  ax.set_yticks([])
  for spine in ax.spines.values():
    if color is None:
      spine.set_visible(False)
    else:
      spine.set_edgecolor(color)
      spine.set_linewidth(width_pt)


def ranked_lists(out_png: str, rows: Sequence[Mapping], title: str = '') -> str:
  """Draws ranked lists (see the module docstring) and writes a PNG.

  Args:
    out_png: where to write; written atomically (a temporary file, renamed).
    rows: one dict per figure row: {'query': uint8 [H, W, 3], 'query_label':
      str, 'exit': str, 'results': [{'image': uint8 [h, w, 3], 'distance':
      float, 'match': True | False | None}, ...]}, results nearest first.
    title: a title over the figure; none when empty.

  Returns:
    out_png.

  Raises:
    errors.DataError: no rows, or an image that is not [H, W, 3].
  """
  if not rows:
    raise errors.DataError(f'No rows to draw in {out_png}.')
  return ranked_panels(out_png, [('', rows)], title)


def ranked_panels(out_png: str, panels: Sequence[tuple[str, Sequence[Mapping]]],
                  title: str = '', k: Optional[int] = None) -> str:
  """ranked_lists' rows in panels side by side: [(heading, rows)], each
  panel k result columns wide (default: the longest row), as tall as the
  longest panel; a panel without rows says "none"."""
  if not panels:
    raise errors.DataError(f'No panel to draw in {out_png}.')
  k = k or max([len(r['results']) for _, rows in panels for r in rows] + [1])
  n_rows = max([len(rows) for _, rows in panels] + [1])
  headed = any(h for h, _ in panels)
  panel_cols = 1 + GAP_COLUMNS + k
  gap_cols = GAP_COLUMNS if len(panels) > 1 else 0.0
  title_in = (TITLE_INCHES if title else 0.0) + (TITLE_INCHES if headed
                                                 else 0.0)
  width_in = COLUMN_INCHES * (len(panels) * panel_cols +
                              (len(panels) - 1) * gap_cols)
  height_in = ROW_INCHES * n_rows + title_in
  plt = common.pyplot()
  fig = plt.figure(figsize=(width_in, height_in), dpi=DPI)
  if title:
    fig.suptitle(title, y=1 - 0.5 * TITLE_INCHES / height_in, fontsize=10)
  crop_w = (COLUMN_INCHES - 2 * _CROP_PAD_INCHES) / width_in
  crop_h = (ROW_INCHES - _TEXT_ABOVE_INCHES - _TEXT_BELOW_INCHES) / height_in

  def crop_axes(r, column):
    left = (column * COLUMN_INCHES + _CROP_PAD_INCHES) / width_in
    top_in = title_in + r * ROW_INCHES + _TEXT_ABOVE_INCHES
    bottom = 1 - top_in / height_in - crop_h
    # imshow's equal aspect shrinks the box to the image, centred, so the
    # frame (the axes' spines) hugs the crop.
    return fig.add_axes((left, bottom, crop_w, crop_h))

  try:
    for p, (heading, rows) in enumerate(panels):
      c0 = p * (panel_cols + gap_cols)
      centre = (c0 + 0.5 * panel_cols) * COLUMN_INCHES / width_in
      if heading:
        fig.text(centre, 1 - (title_in - 0.5 * TITLE_INCHES) / height_in,
                 heading, ha='center', va='center', fontsize=9,
                 fontweight='bold')
      if not rows:
        fig.text(centre, 1 - (title_in + 0.5 * ROW_INCHES) / height_in,
                 'none', ha='center', va='center', fontsize=12, color='gray')
      for r, row in enumerate(rows):
        ax = crop_axes(r, c0)
        ax.imshow(_check_image(row['query'], f'Row {r} query'))
        _frame(ax, QUERY_COLOR, _QUERY_FRAME_PT)
        ax.set_title(textwrap.fill(str(row.get('query_label', '')),
                                   _LABEL_CHARS, break_on_hyphens=False),
                     fontsize=7, pad=3)
        ax.set_xlabel(str(row.get('exit', '')), fontsize=7, labelpad=3)
        for j, res in enumerate(row['results'][:k]):
          ax = crop_axes(r, c0 + 1 + GAP_COLUMNS + j)
          ax.imshow(_check_image(res['image'], f'Row {r} result {j}'))
          match = res.get('match')
          color = None if match is None else (
              MATCH_COLOR if match else MISMATCH_COLOR)
          _frame(ax, color, _RESULT_FRAME_PT)
          ax.set_title(f'#{j + 1}', fontsize=7, pad=3)
          ax.set_xlabel(f'{float(res["distance"]):.3f}', fontsize=7,
                        labelpad=3)
  except Exception:
    plt.close(fig)
    raise
  return common.save(fig, out_png, DPI)


# ----------------------------------------------------------------------------
# An evaluated dataset's figure.


def write_ranked_lists(out_png: str, feats: Mapping[str, np.ndarray],
                       query: types.Split, gallery: types.Split, *,
                       image_hw: Sequence[int],
                       proto: protocol_lib.Protocol = protocol_lib.Protocol(),
                       n: int = 10, topk: int = 10) -> Optional[str]:
  """The n worst and n best queries by AP, each with its top-k gallery.

  Ranks by the 'fused' embedding when feats has one, else by the last
  embedding in feats. Queries without a true match in the gallery (not valid
  under the protocol) are left out.

  Args:
    out_png: where to write.
    feats: features.npz-style arrays (retrieval/features.py).
    query, gallery: the splits feats was computed from (images or paths).
    image_hw: (H, W) to load image files at.
    proto: the run's retrieval protocol (config.eval).
    n: queries per end (worst, best).
    topk: results per query.

  Returns:
    out_png, or None when there is no figure to draw: video splits (their
    items are tracklets) or no valid query.
  """
  if query.tracklets is not None or gallery.tracklets is not None:
    logging.info('Video splits: no %s.', os.path.basename(out_png))
    return None
  names = features_lib.embedding_names(feats)
  name = 'fused' if 'fused' in names else names[-1]
  ids = [np.asarray(feats[k]) for k in features_lib.ID_KEYS]
  dist_QxG = proto.distances(feats[f'query_{name}'], feats[f'gallery_{name}'])
  per_query = metrics.evaluate_per_query(dist_QxG, *ids, ap=proto.ap)
  valid_V = np.flatnonzero(per_query['valid'])
  if not valid_V.size:
    logging.info('No valid query: no %s.', os.path.basename(out_png))
    return None
  chosen = valid_V[worst_and_best(per_query['ap'][valid_V], n)]
  q_pids = ids[0]
  rows = []
  for qi, g_idx, dists, matches in ranked_rows(dist_QxG, *ids, chosen, topk):
    rows.append({
        'query': common.item_image(query, qi, image_hw),
        'query_label': (f'AP {per_query["ap"][qi]:.2f}  '
                        f'person {int(q_pids[qi])}'),
        'exit': name,
        'results': [{'image': common.item_image(gallery, g, image_hw),
                     'distance': d, 'match': m}
                    for g, d, m in zip(g_idx, dists, matches)]})
  return ranked_lists(
      out_png, rows,
      title=f'{name}: the worst, then the best queries by AP (of '
            f'{valid_V.size} valid), top {topk} of the gallery')
