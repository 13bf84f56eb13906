"""The budgeted stream as the DaRe authors simulate it (Wang et al., CVPR
2018, sec. 3.3): queries arrive one by one, in file order, and each leaves
at an exit. Who leaves where -- eq. 3's fractions, the online threshold rule
and the confidences -- is the retrieval core's (retrieval/exits.py), which
the deployed engine calls too; this module runs it over a features file.

* The random baseline's draws come from ONE stream,
  np.random.default_rng(seed), created once per simulation: each budget, in
  the order given, takes a fresh [Q, S] block of uniforms from it (row q,
  column s; query q leaves at the first s with u < pi_s). So the budgets are
  independent draws and the whole run is fixed by the seed, as in the
  authors' simulation (budgeted_stream/main.py seeds np.random once and
  draws on across all budgets); a single budget's block is
  default_rng(seed).random((Q, S)).
* Figure 8's easy and hard queries (easy_hard_exits): the authors' README
  (budgeted_stream/README.md) takes the exit history of distance routing at
  q = 0.5, i.e. p_s ~ 0.5^(s-1); easy = the queries that leave at the first
  exit, hard = those that go on to the last.

Each query is answered with the distances of its exit under the run's
protocol (retrieval/protocol.py); the report per budget holds the realised
exit fractions and mean cost, and rank-1 / mAP over the valid queries (a
query with no good gallery image counts in the cost and fractions only, as
the metrics leave it out).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np

from dare_jax import errors
from dare_jax.budget import curves as curves_lib
from dare_jax.evaluation import metrics
from dare_jax.retrieval import exits as exits_lib
from dare_jax.retrieval import features as features_lib
from dare_jax.retrieval import protocol as protocol_lib

DEFAULT_EXITS = curves_lib.DARE_ANSWERS


# Figure 8 (budgeted_stream/README.md: the exit history at q = 0.5, distance
# confidence).
EASY_HARD_Q = 0.5
EASY_HARD_ROUTING = 'distance'


def easy_hard_exits(conf_QxS: np.ndarray, num_exits: int,
                    q: float = EASY_HARD_Q
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Figure 8's split: (exit_q int [Q], easy, hard int indices in stream
  order). The stream is routed (route) on conf_QxS, the confidences of
  EASY_HARD_ROUTING ('distance') at the exits but the last, with the
  fractions of q (q_fractions); easy = left at the first exit, hard = went
  on to the last."""
  pi_S = exits_lib.conditional(exits_lib.q_fractions(num_exits, q))
  exit_q = exits_lib.route(conf_QxS, pi_S)
  return (exit_q, np.flatnonzero(exit_q == 0),
          np.flatnonzero(exit_q == int(num_exits) - 1))


@dataclasses.dataclass(frozen=True, eq=False)
class ExitRetrieval:
  """One exit's retrieval under the protocol, computed once and shared by
  the stream, the metrics and the figures of a report.

  Attributes:
    name: the embedding.
    dist_QxG: float32 [Q, G] distances under the run's protocol
      (retrieval/protocol.py: metric, normalisation).
    per_query: metrics.evaluate_per_query's dict for them.
    q_pids, q_camids, g_pids, g_camids: the features file's ids.
  """
  name: str
  dist_QxG: np.ndarray
  per_query: Mapping[str, np.ndarray]
  q_pids: np.ndarray
  q_camids: np.ndarray
  g_pids: np.ndarray
  g_camids: np.ndarray
  # confidences(kind), filled on first use.
  _confidences: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def ids(self) -> tuple[np.ndarray, ...]:
    return self.q_pids, self.q_camids, self.g_pids, self.g_camids

  def confidences(self, kind: str) -> np.ndarray:
    """float64 [Q] confidences (exits.confidences), cached."""
    if kind not in self._confidences:
      self._confidences[kind] = exits_lib.confidences(
          self.dist_QxG, *self.ids, kind=kind)
    return self._confidences[kind]

  def summary(self, ranks: Sequence[int] = (1, 5, 10)) -> dict:
    """metrics.summarize of the per-query results (evaluate_ranking's)."""
    return metrics.summarize(self.per_query, ranks)

  def top1_correct(self) -> np.ndarray:
    """bool [Q]: the first gallery image left is a match (rank-1 hit)."""
    return self.per_query['first_hit_rank'] == 0

  def ranked(self, q: int) -> np.ndarray:
    """int [G'] query q's gallery by distance (ties: gallery order), junk
    and the query's own camera out."""
    d = self.dist_QxG[q].astype(np.float64)
    _, removed_1xG = metrics.removal_mask(
        self.q_pids[q:q + 1], self.q_camids[q:q + 1], self.g_pids,
        self.g_camids)
    order = np.argsort(np.where(removed_1xG[0], np.inf, d), kind='stable')
    return order[:int(np.count_nonzero(~removed_1xG[0]))]


def check_exits(feats: Mapping[str, np.ndarray], exits: Sequence[str]):
  for name in exits:
    for side in ('query', 'gallery'):
      if f'{side}_{name}' not in feats:
        raise errors.DataError(f'No embedding {name!r} in the features '
                               f'(need query_{name} and gallery_{name}).')


def exit_retrievals(feats: Mapping[str, np.ndarray], exits: Sequence[str],
                    proto: Optional[protocol_lib.Protocol] = None
                    ) -> dict[str, ExitRetrieval]:
  """{name: ExitRetrieval} for each exit of a features dict, in order,
  ranked under the run's protocol (metric, normalisation, AP; the defaults
  when None)."""
  proto = proto or protocol_lib.Protocol()
  check_exits(feats, exits)
  ids = [np.asarray(feats[k]) for k in features_lib.ID_KEYS]
  out = {}
  for name in exits:
    dist = np.asarray(proto.distances(feats[f'query_{name}'],
                                      feats[f'gallery_{name}']))
    out[name] = ExitRetrieval(
        name, dist, metrics.evaluate_per_query(dist, *ids, ap=proto.ap),
        *ids)
  return out


def _check_stream(routing: str, num_exits: int, costs_S, budgets):
  """(costs as an array, budgets as floats), or ConfigError."""
  if routing not in exits_lib.ROUTINGS:
    raise errors.ConfigError(f'Unknown routing {routing!r}; expected one of '
                             f'{exits_lib.ROUTINGS}.')
  c = exits_lib.check_costs(costs_S)
  if num_exits != c.size:
    raise errors.ConfigError(f'{num_exits} exits but {c.size} costs.')
  return c, [exits_lib.check_budget(b) for b in budgets]


def simulate(feats: Mapping[str, np.ndarray], exits: Sequence[str],
             costs_S: Sequence[float], budgets: Sequence[float],
             routing: str = 'distance', seed: int = 0,
             proto: Optional[protocol_lib.Protocol] = None) -> list[dict]:
  """The budgeted stream at each budget.

  Args:
    feats: a features dict (dare_jax/retrieval/features.py schema).
    exits: the S embedding names, cheapest first.
    costs_S: their cumulative costs C_1 < ... < C_S.
    budgets: average budgets per query, reported in this order.
    routing: 'distance', 'margin' or 'random'.
    seed: the random routing's stream, seeded once (each budget, in order,
      draws a fresh block from it).
    proto: the retrieval protocol (metric, normalisation, AP).

  Returns:
    [{'budget', 'exit_fractions': [S] realised, 'realized_cost', 'rank1',
      'mAP'}] one per budget (rank1 / mAP None if no query is valid).
  """
  exits = list(exits)
  c, budgets = _check_stream(routing, len(exits), costs_S, budgets)
  retrievals = exit_retrievals(feats, exits, proto)  # after the cheap checks
  return simulate_retrievals([retrievals[e] for e in exits], c, budgets,
                             routing=routing, seed=seed)


def simulate_retrievals(retrievals: Sequence[ExitRetrieval],
                        costs_S: Sequence[float], budgets: Sequence[float],
                        routing: str = 'distance',
                        seed: int = 0) -> list[dict]:
  """simulate() from each exit's precomputed retrieval (cheapest first; the
  AP kind is theirs)."""
  retrievals = list(retrievals)
  c, budgets = _check_stream(routing, len(retrievals), costs_S, budgets)
  num_q = retrievals[0].q_pids.size
  per_exit = [r.per_query for r in retrievals]
  if routing == 'random':
    conf_QxS = np.zeros((num_q, 0))
  else:
    conf_cols = [r.confidences(routing) for r in retrievals[:-1]]
    conf_QxS = (np.stack(conf_cols, axis=1) if conf_cols else
                np.zeros((num_q, 0)))
  # One stream for all the budgets: each draws a fresh block from it.
  rng = np.random.default_rng(seed)
  results = []
  for b in budgets:
    if routing == 'random':
      pi_S = exits_lib.conditional(exits_lib.random_fractions(c, b))
      exit_q = exits_lib.route_random(num_q, pi_S, rng)
    else:
      pi_S = exits_lib.conditional(exits_lib.exit_fractions(c, b))
      exit_q = exits_lib.route(conf_QxS, pi_S)
    results.append(_report(b, exit_q, per_exit, c))
  return results


def _report(budget, exit_q, per_exit, costs_S) -> dict:
  rows = np.arange(exit_q.size)
  combined = {k: np.stack([pq[k] for pq in per_exit])[exit_q, rows]
              for k in ('first_hit_rank', 'ap', 'num_good', 'valid')}
  fractions = np.bincount(exit_q, minlength=len(per_exit)) / max(
      exit_q.size, 1)
  out = {'budget': budget, 'exit_fractions': fractions.tolist(),
         'realized_cost': float(np.mean(costs_S[exit_q])) if exit_q.size
                          else 0.0,
         'rank1': None, 'mAP': None}
  if np.any(combined['valid']):
    summary = metrics.summarize(combined, ranks=(1,))
    out['rank1'], out['mAP'] = summary['rank1'], summary['mAP']
  return out
