"""The paper's resource figures (budget/figures.py): the pure helpers by
hand, and that every figure is written as a readable PNG."""

import numpy as np
from PIL import Image
import pytest

from dare_jax.figures import budget as figures


def _assert_png(path, min_width=400):
  assert path.exists()
  with Image.open(path) as im:
    assert im.format == 'PNG'
    assert im.size[0] > min_width and im.size[1] > 200
    im.load()


def _image(rng, h, w):
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------- helpers


def test_anytime_value_picks_the_deepest_affordable_answer():
  costs, values = [10.0, 20.0, 40.0], [0.5, 0.6, 0.8]
  assert figures.anytime_value(costs, values, 0) is None
  assert figures.anytime_value(costs, values, 9.999) is None
  assert figures.anytime_value(costs, values, 10) == 0.5      # at a cost
  assert figures.anytime_value(costs, values, 15) == 0.5      # between
  assert figures.anytime_value(costs, values, 20) == 0.6
  assert figures.anytime_value(costs, values, 39.9) == 0.6
  assert figures.anytime_value(costs, values, 40) == 0.8
  assert figures.anytime_value(costs, values, 1e12) == 0.8    # beyond
  # A single answer; equal costs: the later (deeper) answer wins.
  assert figures.anytime_value([5.0], [0.3], 4) is None
  assert figures.anytime_value([5.0], [0.3], 5) == 0.3
  assert figures.anytime_value([1, 2, 2], ['a', 'b', 'c'], 2) == 'c'


def test_anytime_value_rejects_bad_inputs():
  with pytest.raises(ValueError):
    figures.anytime_value([2.0, 1.0], [0.1, 0.2], 3)
  with pytest.raises(ValueError):
    figures.anytime_value([1.0, 2.0], [0.1], 3)


def test_cost_scale_is_a_power_of_1000():
  assert figures.cost_scale(3.2e9) == (1e9, 'x 1e9')
  assert figures.cost_scale(999e6) == (1e6, 'x 1e6')
  assert figures.cost_scale(1000) == (1e3, 'x 1e3')
  assert figures.cost_scale(12.0) == (1.0, '')
  assert figures.cost_scale(0.0) == (1.0, '')


# ----------------------------------------------------------------- figures


def _metrics():
  return {n: {'rank1': 0.5 + 0.08 * i, 'mAP': 0.3 + 0.08 * i}
          for i, n in enumerate(figures.EMBEDDINGS)}


def test_exit_errors(tmp_path):
  figures.exit_errors(_metrics(), [0.4, -0.2, 1.1, -0.05],
                      str(tmp_path / 'fig3.png'))
  _assert_png(tmp_path / 'fig3.png')
  # Without fusion weights (one panel), and only some embeddings.
  m = {k: v for k, v in _metrics().items() if k in ('stage1', 'fused')}
  figures.exit_errors(m, None, str(tmp_path / 'fig3b.png'))
  _assert_png(tmp_path / 'fig3b.png')


def test_anytime_curve(tmp_path):
  curves = {
      'DaRe': {'costs': [0.6e9, 1.3e9, 2.5e9, 3.9e9],
               'values': [0.45, 0.62, 0.78, 0.86],
               'names': ['stage1', 'stage2', 'stage3', 'fused']},
      'TriNet ensemble (18, 34, 50)': {'costs': [1.8e9, 5.4e9, 9.5e9],
                                       'values': [0.7, 0.79, 0.85],
                                       'names': ['R18', 'R34', 'R50']},
      'single point': {'costs': [2e9], 'values': [0.5], 'names': ['one']},
  }
  figures.anytime_curve(curves, str(tmp_path / 'fig5_rank1.png'))
  figures.anytime_curve(curves, str(tmp_path / 'fig5_map.png'), metric='mAP')
  _assert_png(tmp_path / 'fig5_rank1.png')
  _assert_png(tmp_path / 'fig5_map.png')
  with pytest.raises(ValueError):
    figures.anytime_curve(curves, str(tmp_path / 'x.png'), metric='top5')


def _stream_results():
  costs = [0.6e9, 1.3e9, 2.5e9, 3.9e9]
  out = {}
  for j, routing in enumerate(('distance', 'margin', 'random')):
    pts = []
    for b in np.linspace(costs[0], costs[-1], 6):
      t = (b - costs[0]) / (costs[-1] - costs[0])
      fr = np.array([1 - t, t * (1 - t), t * (1 - t) / 2, t], float)
      fr = fr / fr.sum()
      pts.append({'budget': float(b), 'realized_cost': float(b * 0.98),
                  'rank1': 0.45 + 0.4 * t ** (0.5 + 0.3 * j),
                  'mAP': 0.25 + 0.4 * t ** (0.5 + 0.3 * j),
                  'exit_fractions': fr.tolist()})
    out[routing] = pts
  return out


def test_stream_curves(tmp_path):
  singles = {'stage1': (0.6e9, 0.45, 0.25), 'stage2': (1.3e9, 0.62, 0.38),
             'stage3': (2.5e9, 0.78, 0.55), 'fused': (3.9e9, 0.86, 0.65)}
  figures.stream_curves(_stream_results(), singles,
                        str(tmp_path / 'fig6.png'))
  _assert_png(tmp_path / 'fig6.png', min_width=1000)  # three panels
  # 2-tuples (no mAP for the single exits), no margin routing, one point.
  res = {'distance': _stream_results()['distance'][:1]}
  figures.stream_curves(res, {k: v[:2] for k, v in singles.items()},
                        str(tmp_path / 'fig6b.png'))
  _assert_png(tmp_path / 'fig6b.png')
  # The fraction panel with a single budget.
  res = {'margin': _stream_results()['margin'][2:3]}
  figures.stream_curves(res, singles, str(tmp_path / 'fig6c.png'))
  _assert_png(tmp_path / 'fig6c.png')


def _query(rng, exits, k, pid):
  sizes = ((256, 128), (96, 48))
  rows = {}
  for e in exits:
    rows[e] = [(_image(rng, *sizes[(i + pid) % 2]), bool(rng.random() < 0.5),
                int(rng.integers(0, 50)), float(rng.random()))
               for i in range(k)]
  return {'query_image': _image(rng, *sizes[pid % 2]), 'query_pid': pid,
          'rows': rows}


@pytest.mark.slow
def test_rank_lists(tmp_path):
  rng = np.random.default_rng(2)
  exits = ('stage1', 'stage2', 'stage3', 'fused')
  queries = [_query(rng, exits, 5, pid) for pid in (3, 8, 11)]
  # A row shorter than k leaves blank cells.
  queries[1]['rows']['stage2'] = queries[1]['rows']['stage2'][:2]
  figures.rank_lists(queries, str(tmp_path / 'fig7.png'), k=5)
  _assert_png(tmp_path / 'fig7.png')


def test_easy_hard(tmp_path):
  rng = np.random.default_rng(3)
  easy = [_query(rng, ('stage1',), 3, pid) for pid in (1, 2)]
  hard = [_query(rng, ('stage1', 'stage2', 'stage3', 'fused'), 3, 5)]
  figures.easy_hard(easy, hard, str(tmp_path / 'fig8.png'), k=3)
  _assert_png(tmp_path / 'fig8.png')
  figures.easy_hard([], hard, str(tmp_path / 'fig8_no_easy.png'), k=3)
  _assert_png(tmp_path / 'fig8_no_easy.png')
  figures.easy_hard([], [], str(tmp_path / 'fig8_none.png'), k=3)
  _assert_png(tmp_path / 'fig8_none.png')
