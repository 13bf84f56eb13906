"""Anytime answers: the deepest exit within the budget, by hand."""

import pytest

from dare_jax.budget import curves as curves_lib

COSTS = {'stage1': 10, 'stage2': 25, 'stage3': 40, 'stage4': 60, 'fused': 61}
METRICS = {n: {'rank1': r, 'mAP': r / 2} for n, r in
           (('stage1', .5), ('stage2', .6), ('stage3', .7), ('stage4', .8),
            ('fused', .85))}


@pytest.mark.parametrize('budget,want', [
    (9.99, None), (10, 0.5), (24, 0.5), (25, 0.6), (60.9, 0.7), (61, 0.85),
    (1e12, 0.85)])
def test_dare_answers_with_the_deepest_affordable_exit(budget, want):
  curve = curves_lib.dare_curve(COSTS, METRICS)
  assert curve['costs'] == [10, 25, 40, 61]
  assert curves_lib.value_at(curve, budget) == want


def test_ensemble_costs_accumulate():
  curve = curves_lib.ensemble_curve([('r18', 10, {'rank1': .4, 'mAP': .3}),
                                  ('r34', 20, {'rank1': .5, 'mAP': .4}),
                                  ('r50', 25, {'rank1': .6, 'mAP': .5})])
  assert curve['costs'] == [10, 30, 55]
  assert curves_lib.value_at(curve, 29, 'mAP') == .3
  assert curves_lib.value_at(curve, 55) == .6
  with pytest.raises(ValueError, match='increase'):
    curves_lib.deepest_answer([3, 3], 5)
