"""Ranked-list figures (inference/figures.py): what is picked, checked by
hand, and that the drawing puts its coloured frames where they belong."""

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from dare_jax import errors
from dare_jax.data.types import Split
from dare_jax.figures import ranked as figures

# Query 0: person 1 seen by camera 0; query 1: person 2 by camera 1; query 2:
# person 1 by an unknown camera (-1), for which nothing is same-camera.
Q_PIDS = np.array([1, 2, 1])
Q_CAMIDS = np.array([0, 1, -1])
G_PIDS = np.array([1, 1, 2, -1, 0, 2])
G_CAMIDS = np.array([0, 1, 1, 0, 2, 0])
DIST_QxG = np.array([
    [0.1, 0.5, 0.3, 0.05, 0.4, 0.2],
    [0.9, 0.2, 0.1, 0.3, 0.6, 0.6],   # g4 and g5 tie
    [0.7, 0.6, 0.5, 0.4, 0.3, 0.2],
], np.float32)


def _by_hand_ranking(q):
  """Plain NumPy: drop junk and same-person-same-camera, stable sort."""
  keep = [g for g in range(len(G_PIDS))
          if G_PIDS[g] != -1 and not (
              G_PIDS[g] == Q_PIDS[q] and G_CAMIDS[g] == Q_CAMIDS[q] and
              Q_CAMIDS[q] >= 0)]
  return [keep[i] for i in np.argsort(DIST_QxG[q, keep], kind='stable')]


# ------------------------------------------------------------- ranked_rows


def test_ranked_rows_by_hand():
  rows = figures.ranked_rows(DIST_QxG, Q_PIDS, Q_CAMIDS, G_PIDS, G_CAMIDS,
                             [1, 0, 2], topk=3)
  assert [r[0] for r in rows] == [1, 0, 2]
  # Query 1: g2 (same person, same camera) and g3 (junk) are gone; g4 and
  # g5 tie at 0.6 and keep gallery order.
  q, g, d, m = rows[0]
  assert g == [1, 4, 5]
  np.testing.assert_allclose(d, [0.2, 0.6, 0.6], rtol=1e-6)
  assert m == [False, False, True]
  # Query 0: g0 (same person, same camera) and g3 (junk) are gone.
  _, g, d, m = rows[1]
  assert g == [5, 2, 4]
  np.testing.assert_allclose(d, [0.2, 0.3, 0.4], rtol=1e-6)
  assert m == [False, False, False]
  # Query 2: unknown camera, only the junk entry goes.
  _, g, d, m = rows[2]
  assert g == [5, 4, 2]
  assert m == [False, False, False]


def test_ranked_rows_match_a_plain_numpy_ranking():
  rows = figures.ranked_rows(jnp.asarray(DIST_QxG), Q_PIDS, Q_CAMIDS, G_PIDS,
                             G_CAMIDS, np.arange(3), topk=10)
  for q, g, d, m in rows:
    want = _by_hand_ranking(q)
    assert g == want  # fewer than topk survive
    np.testing.assert_allclose(d, DIST_QxG[q, want], rtol=1e-6)
    assert m == [bool(G_PIDS[i] == Q_PIDS[q]) for i in want]
  assert rows[0][3] == [False, False, False, True]   # g1 is person 1, cam 1
  assert rows[2][3] == [False, False, False, True, True]
  assert figures.ranked_rows(DIST_QxG, Q_PIDS, Q_CAMIDS, G_PIDS, G_CAMIDS,
                             [], topk=3) == []


# ---------------------------------------------------------- worst_and_best


def test_worst_and_best_with_ties_and_overlap():
  ap = np.array([0.5, 0.1, 0.9, 0.1, 0.9, 0.3])
  # Ties go to the lower index at both ends.
  assert figures.worst_and_best(ap, 1).tolist() == [1, 2]
  assert figures.worst_and_best(ap, 2).tolist() == [1, 3, 2, 4]
  # n > Q/2: the best are taken from what the worst left, nothing twice.
  assert figures.worst_and_best(ap, 4).tolist() == [1, 3, 5, 0, 2, 4]
  assert figures.worst_and_best(ap, 10).tolist() == [1, 3, 5, 0, 2, 4]
  assert figures.worst_and_best(ap[:5], 3).tolist() == [1, 3, 0, 2, 4]
  assert figures.worst_and_best(np.zeros(0), 10).tolist() == []
  assert figures.worst_and_best(ap, 0).tolist() == []


# ------------------------------------------------------------ ranked_lists


def _gray(h=32, w=16, v=128):
  return np.full((h, w, 3), v, np.uint8)


def _row(matches, label='AP 0.12  person 5'):
  return {'query': _gray(), 'query_label': label, 'exit': 'fused',
          'results': [{'image': _gray(), 'distance': 0.5 + 0.1 * j,
                       'match': m} for j, m in enumerate(matches)]}


def _read_rgb(path):
  with Image.open(path) as im:
    assert im.format == 'PNG'
    return np.asarray(im.convert('RGB')).astype(int)


def _strong(rgb, channel):
  others = [c for c in range(3) if c != channel]
  return ((rgb[..., channel] > 150) & (rgb[..., others[0]] < 70) &
          (rgb[..., others[1]] < 70))


def test_ranked_lists_size_and_frame_colours(tmp_path):
  out = str(tmp_path / 'ranked.png')
  rows = [_row([True, False, None]), _row([None, None, None])]
  assert figures.ranked_lists(out, rows, title='a title') == out
  assert not (tmp_path / 'ranked.png.tmp.png').exists()
  rgb = _read_rgb(out)
  # 1.1 in per column (query, 0.4 gap, 3 results), 2.2 in per row plus 0.5
  # in of title, at 100 dpi.
  h, w = rgb.shape[:2]
  assert abs(w - 1.1 * 4.4 * 100) <= 1 and abs(h - (2 * 2.2 + 0.5) * 100) <= 1
  green, red = _strong(rgb, 1), _strong(rgb, 0)
  assert green.sum() > 50 and red.sum() > 50
  col = 1.1 * 100  # pixels per column
  ys, xs = np.nonzero(green)
  assert xs.min() >= 1.4 * col - 5 and xs.max() <= 2.4 * col + 5
  assert ys.max() <= (0.5 + 2.2) * 100  # first row only
  ys, xs = np.nonzero(red)
  assert xs.min() >= 2.4 * col - 5 and xs.max() <= 3.4 * col + 5
  assert ys.max() <= (0.5 + 2.2) * 100


def test_ranked_lists_without_matches_has_no_green_or_red(tmp_path):
  out = str(tmp_path / 'none.png')
  # K differs by row; no title.
  figures.ranked_lists(out, [_row([None] * 4), _row([None] * 2)])
  rgb = _read_rgb(out)
  h, w = rgb.shape[:2]
  assert abs(w - 1.1 * 5.4 * 100) <= 1 and abs(h - 2 * 2.2 * 100) <= 1
  assert not _strong(rgb, 1).any() and not _strong(rgb, 0).any()


def test_ranked_lists_refuses_empty_rows_and_bad_images(tmp_path):
  out = tmp_path / 'empty.png'
  with pytest.raises(errors.DataError, match='No rows'):
    figures.ranked_lists(str(out), [])
  assert not out.exists()
  bad = _row([True])
  bad['results'][0]['image'] = np.zeros((8, 8), np.uint8)
  with pytest.raises(errors.DataError, match='result 0'):
    figures.ranked_lists(str(out), [bad])


# ------------------------------------------------------ write_ranked_lists


def _split(pids, camids, rng, tracklets=None):
  n = len(pids)
  return Split(pids=np.asarray(pids, np.int64),
               camids=np.asarray(camids, np.int64),
               images=rng.integers(0, 256, (n, 24, 12, 3), dtype=np.uint8),
               tracklets=tracklets)


def test_write_ranked_lists_of_an_evaluated_dataset(tmp_path):
  rng = np.random.default_rng(0)
  query = _split([1, 2, 3], [0, 0, 0], rng)
  gallery = _split([1, 2, 3, 1, 0], [1, 1, 1, 0, 2], rng)
  feats = {'query_pids': query.pids, 'query_camids': query.camids,
           'gallery_pids': gallery.pids, 'gallery_camids': gallery.camids,
           'query_stage4': rng.normal(size=(3, 4)).astype(np.float32),
           'gallery_stage4': rng.normal(size=(5, 4)).astype(np.float32)}
  out = str(tmp_path / 'ranked_lists.png')
  assert figures.write_ranked_lists(out, feats, query, gallery,
                                    image_hw=(24, 12), n=2, topk=3) == out
  h, w = _read_rgb(out).shape[:2]
  # Three queries (two worst, then the one left), three results each.
  assert abs(w - 1.1 * 4.4 * 100) <= 1
  assert abs(h - (3 * 2.2 + 0.5) * 100) <= 1
  video = _split([1, 1, 2], [0, 0, 0], rng, tracklets=np.array([0, 0, 1]))
  assert figures.write_ranked_lists(str(tmp_path / 'v.png'), feats, video,
                                    gallery, image_hw=(24, 12)) is None
  assert not (tmp_path / 'v.png').exists()
