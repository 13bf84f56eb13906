"""The budgeted stream: queries arrive one by one and each leaves at an exit.

As the DaRe authors simulate it (Wang et al., CVPR 2018, sec. 3.3 / eq. 3):

* Exits e_1..e_S (the paper: stage1, stage2, stage3, fused) with cumulative
  per-image costs C_1 < ... < C_S (dare_jax/budget/costs.py).
* For an average budget B the fraction of queries leaving at exit s is
  p_s proportional to q^(s-1), with q > 0 the root of
      sum_s (C_s - B) q^(s-1) = 0,
  i.e. the expected cost sum_s p_s C_s equals B. The coefficients are
  negative for the exits cheaper than B and positive for the dearer ones;
  with increasing costs their signs change exactly once, so by Descartes'
  rule of signs there is exactly ONE positive root (the others are negative
  or complex): that is q, found by bisection (f(0) = C_1 - B < 0 and f
  grows without bound). B <= C_1 sends every query to the first exit,
  B >= C_S to the last.
* The conditional probability of leaving at exit s, having reached it:
  pi_s = p_s / (1 - sum_{t<s} p_t) = p_s / sum_{t>=s} p_t (1 once nothing is
  left; 1 at the last exit).
* Routing over the stream, in file order: at exit s < S a query computes its
  confidence c, appends it to the confidences seen so far at that exit,
  sorts them descending and takes the threshold at index
  floor((n - 1) * pi_s) (n counts the query itself); it leaves if
  c >= threshold. The first query to reach an exit therefore leaves there.
  An exit with pi_s = 0 (p_s = 0) lets every query through: the rule would
  still let out a query whose confidence is a new maximum, and a budget of
  C_S must answer every query with the last exit.
* Confidences, on the gallery left after removing junk (pid -1) and the
  query's own camera (same pid and camid; camid -1 never matches), as the
  metrics do (dare_jax/evaluation/metrics.py):
    distance: c = -(distance to the nearest remaining gallery image);
    margin:   c = (distance to the nearest remaining image whose identity
              differs from the top-1's) - (top-1 distance); this one reads
              the gallery labels.
  A query with no remaining gallery image gets c = -inf (it never looks
  confident); a margin with a single remaining identity is +inf.
* Random routing (the baseline): the two exits around B (C_s <= B <=
  C_{s+1}) share the queries linearly, p_s = (C_{s+1} - B) / (C_{s+1} - C_s),
  p_{s+1} = 1 - p_s; each query leaves exit s with probability pi_s. The
  draws come from ONE stream, np.random.default_rng(seed), created once per
  simulation: each budget, in the order given, takes a fresh [Q, S] block
  of uniforms from it (row q, column s; query q leaves at the first s with
  u < pi_s). So the budgets are independent draws and the whole run is
  fixed by the seed, as in the authors' simulation (budgeted_stream/main.py
  seeds np.random once and draws on across all budgets); a single budget's
  block is default_rng(seed).random((Q, S)).
* Figure 8's easy and hard queries (easy_hard_exits): the authors' README
  (budgeted_stream/README.md) takes the exit history of distance routing at
  q = 0.5, i.e. p_s ~ 0.5^(s-1); easy = the queries that leave at the first
  exit, hard = those that go on to the last.

Each query is answered with the distances of its exit; the report per
budget holds the realised exit fractions and mean cost, and rank-1 / mAP
over the valid queries (a query with no good gallery image counts in the
cost and fractions only, as the metrics leave it out).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

from dare_jax import errors
from dare_jax.budget import anytime
from dare_jax.evaluation import features as features_lib
from dare_jax.evaluation import metrics
from dare_jax.evaluation import protocol as protocol_lib

ROUTINGS = ('distance', 'margin', 'random')
CONFIDENCES = ('distance', 'margin')  # The routings that read confidences.
DEFAULT_EXITS = anytime.DARE_ANSWERS
# Confidences are computed this many gallery entries at a time per query
# chunk: [chunk, G] float64 intermediates stay near 8 MiB.
_CHUNK_ELEMENTS = 1 << 20


def check_costs(costs_S: Sequence[float]) -> np.ndarray:
  """float64 [S]; raises errors.ConfigError unless finite, positive,
  increasing."""
  c = np.asarray(costs_S, np.float64)
  if c.ndim != 1 or c.size < 1:
    raise errors.ConfigError(
        f'costs must be a non-empty list; got {costs_S!r}.')
  if not np.all(np.isfinite(c)) or np.any(c <= 0):
    raise errors.ConfigError(
        f'costs must be positive and finite; got {c.tolist()}.')
  if np.any(np.diff(c) <= 0):
    raise errors.ConfigError('costs must increase strictly from exit to exit '
                             f'(cumulative costs); got {c.tolist()}.')
  return c


def _check_budget(budget) -> float:
  b = float(budget)
  if not math.isfinite(b):
    raise errors.ConfigError(f'A budget must be finite; got {budget!r}.')
  return b


def exit_fractions(costs_S: Sequence[float], budget: float) -> np.ndarray:
  """Eq. 3: float64 [S] fractions p_s ~ q^(s-1) with sum_s p_s C_s = B."""
  c = check_costs(costs_S)
  b = _check_budget(budget)
  p = np.zeros_like(c)
  if b <= c[0]:
    p[0] = 1.0
    return p
  if b >= c[-1]:
    p[-1] = 1.0
    return p
  powers = np.arange(c.size, dtype=np.float64)
  coef = c - b

  def f(q):
    # The polynomial over sum_s q^(s-1) (same sign, bounded): the error of
    # the expected cost, computed in log space so no power overflows.
    logw = powers * math.log(q)
    w = np.exp(logw - logw.max())
    return float(np.dot(coef, w) / np.sum(w))

  lo, hi = 0.0, 1.0
  while f(hi) < 0:
    lo, hi = hi, hi * 2.0
  for _ in range(2000):
    mid = 0.5 * (lo + hi)
    if mid in (lo, hi):
      break
    if f(mid) < 0:
      lo = mid
    else:
      hi = mid
  q = 0.5 * (lo + hi)
  logw = powers * math.log(q)
  w = np.exp(logw - logw.max())
  return w / w.sum()


def random_fractions(costs_S: Sequence[float], budget: float) -> np.ndarray:
  """The random baseline: float64 [S], the two exits around B share it."""
  c = check_costs(costs_S)
  b = _check_budget(budget)
  p = np.zeros_like(c)
  if b <= c[0]:
    p[0] = 1.0
  elif b >= c[-1]:
    p[-1] = 1.0
  else:
    s = int(np.searchsorted(c, b, side='right')) - 1  # c[s] <= b < c[s+1]
    p[s] = (c[s + 1] - b) / (c[s + 1] - c[s])
    p[s + 1] = 1.0 - p[s]
  return p


def conditional(p_S: Sequence[float]) -> np.ndarray:
  """pi_s = p_s / (1 - sum_{t<s} p_t): float64 [S], 1 at the last exit and
  once nothing is left."""
  p = np.asarray(p_S, np.float64)
  left = 1.0 - np.concatenate([[0.0], np.cumsum(p)[:-1]])
  pi = np.ones_like(p)
  ok = left > 0
  pi[ok] = np.minimum(p[ok] / left[ok], 1.0)
  pi[-1] = 1.0
  return pi


class ExitRule:
  """The online exit rule of the module docstring, written once: the
  simulation (route) and the deployed engine (inference/anytime) both ask
  it, one query at a time in arrival order. At exit s < S it keeps the
  confidences seen there; a query leaves when its confidence is at least
  the one at index floor((n - 1) * pi_s) of them sorted descending (n
  counting itself); pi_s = 0 lets everyone through; the last exit takes
  every query left."""

  def __init__(self, pi_S: Sequence[float]):
    self.pi = np.asarray(pi_S, np.float64)
    self._neg = [[] for _ in self.pi]  # ascending negated confidences

  def leaves(self, s: int, c: float) -> bool:
    if s == self.pi.size - 1:
      return True
    if self.pi[s] <= 0:
      return False  # nobody leaves here (see the module docstring)
    seen = self._neg[s]
    bisect.insort(seen, -float(c))
    return c >= -seen[math.floor((len(seen) - 1) * self.pi[s])]


def route(conf_QxS: np.ndarray, pi_S: Sequence[float]) -> np.ndarray:
  """Routes the stream (rows in arrival order): int [Q] 0-based exit.

  conf_QxS: float [Q, S] (or [Q, S - 1]) confidence of each query at each
  exit; the last exit's column is never read.
  """
  conf = np.asarray(conf_QxS, np.float64)
  num_s = np.asarray(pi_S).size
  if conf.ndim != 2 or conf.shape[1] < num_s - 1:
    raise ValueError(f'conf_QxS must be [Q, >= {num_s - 1}]; got '
                     f'{conf.shape}.')
  rule = ExitRule(pi_S)
  exit_q = np.full((conf.shape[0],), num_s - 1, np.int64)
  for q in range(conf.shape[0]):
    for s in range(num_s - 1):
      if rule.leaves(s, conf[q, s]):
        exit_q[q] = s
        break
  return exit_q


def route_random(num_q: int, pi_S: Sequence[float],
                 rng: int | np.random.Generator = 0) -> np.ndarray:
  """int [Q] 0-based exit: query q leaves exit s with probability pi_s.

  rng: a np.random.Generator, which this call advances by one [Q, S] block
  of uniforms (the simulation passes the same one for every budget), or an
  int seed for a fresh default_rng(seed).
  """
  pi = np.asarray(pi_S, np.float64)
  if not isinstance(rng, np.random.Generator):
    rng = np.random.default_rng(rng)
  u_QxS = rng.random((num_q, pi.size))
  leaves_QxS = u_QxS < pi[None, :]
  leaves_QxS[:, -1] = True
  return np.argmax(leaves_QxS, axis=1)


# Figure 8 (budgeted_stream/README.md: the exit history at q = 0.5, distance
# confidence).
EASY_HARD_Q = 0.5
EASY_HARD_ROUTING = 'distance'


def q_fractions(num_exits: int, q: float) -> np.ndarray:
  """float64 [S] p_s = q^(s-1) / sum_t q^(t-1): the exit fractions of a
  given q (the authors' --q_list mode; their budget is sum_s p_s C_s)."""
  q = float(q)
  if not (math.isfinite(q) and q > 0) or int(num_exits) < 1:
    raise errors.ConfigError(f'q must be positive and finite with at least '
                             f'one exit; got q={q!r}, {num_exits} exits.')
  w = q ** np.arange(int(num_exits), dtype=np.float64)
  return w / w.sum()


def easy_hard_exits(conf_QxS: np.ndarray, num_exits: int,
                    q: float = EASY_HARD_Q
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Figure 8's split: (exit_q int [Q], easy, hard int indices in stream
  order). The stream is routed (route) on conf_QxS, the confidences of
  EASY_HARD_ROUTING ('distance') at the exits but the last, with the
  fractions of q (q_fractions); easy = left at the first exit, hard = went
  on to the last."""
  exit_q = route(conf_QxS, conditional(q_fractions(num_exits, q)))
  return (exit_q, np.flatnonzero(exit_q == 0),
          np.flatnonzero(exit_q == int(num_exits) - 1))


def confidences(dist_QxG, q_pids, q_camids, g_pids, g_camids,
                kind: str = 'distance') -> np.ndarray:
  """float64 [Q] confidence of each query ('distance' or 'margin')."""
  if kind not in CONFIDENCES:
    raise errors.ConfigError(f'Unknown confidence {kind!r}; expected '
                             'distance or margin.')
  dist = np.asarray(dist_QxG)
  num_q, num_g = dist.shape
  qp, qc = np.asarray(q_pids), np.asarray(q_camids)
  gp, gc = np.asarray(g_pids), np.asarray(g_camids)
  out = np.empty((num_q,), np.float64)
  chunk = max(1, _CHUNK_ELEMENTS // max(num_g, 1))
  for a in range(0, num_q, chunk):
    b = min(a + chunk, num_q)
    _, removed_CxG = metrics.removal_mask(qp[a:b], qc[a:b], gp, gc)
    d = np.where(removed_CxG, np.inf, dist[a:b].astype(np.float64))
    if num_g == 0:
      out[a:b] = -np.inf
      continue
    top = np.argmin(d, axis=1)  # first index on ties, as a stable sort
    d1 = d[np.arange(b - a), top]
    d2 = (np.min(np.where(gp[None, :] == gp[top][:, None], np.inf, d),
                 axis=1) if kind == 'margin' else None)  # distance: unused
    out[a:b] = confidence_of(kind, d1, d2)
  return out


def confidence_of(kind: str, d1, d2):
  """The confidences, written once (the simulation and the engine call
  it): from d1, the nearest remaining distance, and d2, the nearest of
  another identity than the top-1's (arrays or scalars, float64).
  distance: -d1; margin: d2 - d1 (inf when one identity is left); -inf
  when nothing is left (d1 = inf)."""
  d1 = np.asarray(d1, np.float64)
  nothing = np.isinf(d1)
  if kind == 'distance':
    c = -d1  # d2 is not read
  else:
    c = np.asarray(d2, np.float64) - np.where(nothing, 0.0, d1)
  return np.where(nothing, -np.inf, c)


@dataclasses.dataclass(frozen=True, eq=False)
class ExitRetrieval:
  """One exit's retrieval under the protocol, computed once and shared by
  the stream, the metrics and the figures of a report.

  Attributes:
    name: the embedding.
    dist_QxG: float32 [Q, G] distances under the run's protocol
      (evaluation/protocol.py: metric, normalisation).
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
    """float64 [Q] confidences (module function `confidences`), cached."""
    if kind not in self._confidences:
      self._confidences[kind] = confidences(self.dist_QxG, *self.ids,
                                            kind=kind)
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


def _check_exits(feats: Mapping[str, np.ndarray], exits: Sequence[str]):
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
  _check_exits(feats, exits)
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
  if routing not in ROUTINGS:
    raise errors.ConfigError(f'Unknown routing {routing!r}; expected one of '
                             f'{ROUTINGS}.')
  c = check_costs(costs_S)
  if num_exits != c.size:
    raise errors.ConfigError(f'{num_exits} exits but {c.size} costs.')
  return c, [_check_budget(b) for b in budgets]


def simulate(feats: Mapping[str, np.ndarray], exits: Sequence[str],
             costs_S: Sequence[float], budgets: Sequence[float],
             routing: str = 'distance', seed: int = 0,
             proto: Optional[protocol_lib.Protocol] = None) -> list[dict]:
  """The budgeted stream at each budget.

  Args:
    feats: a features dict (dare_jax/evaluation/features.py schema).
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
      exit_q = route_random(num_q, conditional(random_fractions(c, b)), rng)
    else:
      exit_q = route(conf_QxS, conditional(exit_fractions(c, b)))
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
