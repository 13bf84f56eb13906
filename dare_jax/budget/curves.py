"""Anytime re-ID (Section 4.1, Figure 5 of the paper).

A query must be answered within a budget B of Mul-Adds; the model has
computed its exits in order, so the answer is the embedding of the deepest
exit whose cumulative cost is <= B, and there is no answer below the first
exit's cost. A sequential ensemble (TriNet ResNet-18, then -34, then -50)
answers the same way with the cumulative costs of its members. Queries
arrive one by one, so re-ranking does not apply.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from dare_jax.retrieval import exits as exits_lib

# The anytime answers of a DaRe: each exit's embedding, then the fusion
# (which costs the full forward plus the weighted sum).
DARE_ANSWERS = exits_lib.DARE_EXITS


def deepest_answer(costs: Sequence[float], budget: float) -> Optional[int]:
  """Index of the deepest answer with costs[i] <= budget (costs increasing),
  or None when even the first costs more than the budget."""
  costs = np.asarray(costs, np.float64)
  if costs.ndim != 1 or np.any(np.diff(costs) <= 0):
    raise ValueError(f'costs must increase strictly; got {costs.tolist()}.')
  i = int(np.searchsorted(costs, float(budget), side='right')) - 1
  return None if i < 0 else i


def dare_curve(exit_costs: Mapping[str, int],
               metrics: Mapping[str, Mapping[str, float]],
               answers: Sequence[str] = DARE_ANSWERS) -> dict:
  """{'names', 'costs', 'rank1', 'mAP'}: one entry per anytime answer."""
  return {'names': list(answers),
          'costs': [int(exit_costs[a]) for a in answers],
          'rank1': [float(metrics[a]['rank1']) for a in answers],
          'mAP': [float(metrics[a]['mAP']) for a in answers]}


def ensemble_curve(members: Sequence[tuple[str, int, Mapping[str, float]]]
                   ) -> dict:
  """The sequential ensemble: members (name, own cost, metrics of its
  embedding) in evaluation order; the k-th answer costs the first k
  members together."""
  costs = np.cumsum([int(c) for _, c, _ in members]).tolist()
  return {'names': [n for n, _, _ in members], 'costs': costs,
          'rank1': [float(m['rank1']) for _, _, m in members],
          'mAP': [float(m['mAP']) for _, _, m in members]}


def value_at(curve: Mapping, budget: float, key: str = 'rank1'
             ) -> Optional[float]:
  """The curve's metric at `budget` (None below its first answer)."""
  i = deepest_answer(curve['costs'], budget)
  return None if i is None else curve[key][i]
