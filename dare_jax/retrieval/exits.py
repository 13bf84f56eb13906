"""Who leaves the anytime stream where: the exit fractions of eq. 3, the
online threshold rule and the confidences, written once. The paper's
simulation (budget/stream.py) and the deployed engine (inference/engine.py)
both call them, so they choose the same exits query for query (tested).

As the DaRe authors define them (Wang et al., CVPR 2018, sec. 3.3 / eq. 3):

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
* The online rule (ExitRule), over the stream in arrival order: at exit
  s < S a query computes its confidence c, appends it to the confidences
  seen so far at that exit, sorts them descending and takes the threshold
  at index floor((n - 1) * pi_s) (n counts the query itself); it leaves if
  c >= threshold. The first query to reach an exit therefore leaves there.
  An exit with pi_s = 0 (p_s = 0) lets every query through: the rule would
  still let out a query whose confidence is a new maximum, and a budget of
  C_S must answer every query with the last exit.
* Confidences (nearest_two, then confidence_of), on the gallery left after
  removing junk (pid -1) and the query's own camera (same pid and camid;
  camid -1 never matches), as the metrics do (evaluation/metrics.py):
    distance: c = -(distance to the nearest remaining gallery image);
    margin:   c = (distance to the nearest remaining image whose identity
              differs from the top-1's) - (top-1 distance); this one reads
              the gallery labels.
  A query with no remaining gallery image gets c = -inf (it never looks
  confident); a margin with a single remaining identity is +inf.
* Random routing (the baseline): the two exits around B (C_s <= B <=
  C_{s+1}) share the queries linearly, p_s = (C_{s+1} - B) / (C_{s+1} - C_s),
  p_{s+1} = 1 - p_s; each query leaves exit s with probability pi_s
  (route_random: one [Q, S] block of uniforms per call).
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np

from dare_jax import errors
from dare_jax.evaluation import metrics

# The paper's anytime answers, the exits of the stream: the fusion is the
# last (it is stage 4's cost plus four multiply-adds).
DARE_EXITS = ('stage1', 'stage2', 'stage3', 'fused')
ROUTINGS = ('distance', 'margin', 'random')
CONFIDENCES = ('distance', 'margin')  # The routings that read confidences.
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


def check_budget(budget) -> float:
  b = float(budget)
  if not math.isfinite(b):
    raise errors.ConfigError(f'A budget must be finite; got {budget!r}.')
  return b


def _checked(costs_S, budget):
  """(costs, budget, p): p is every query at the first exit for B <= C_1,
  at the last for B >= C_S, and None between (the caller's case)."""
  c = check_costs(costs_S)
  b = check_budget(budget)
  p = None
  if b <= c[0] or b >= c[-1]:
    p = np.zeros_like(c)
    p[0 if b <= c[0] else -1] = 1.0
  return c, b, p


def exit_fractions(costs_S: Sequence[float], budget: float) -> np.ndarray:
  """Eq. 3: float64 [S] fractions p_s ~ q^(s-1) with sum_s p_s C_s = B."""
  c, b, p = _checked(costs_S, budget)
  if p is not None:
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
  c, b, p = _checked(costs_S, budget)
  if p is None:
    p = np.zeros_like(c)
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
  simulation (route) and the deployed engine (inference/engine.py) both ask
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


def q_fractions(num_exits: int, q: float) -> np.ndarray:
  """float64 [S] p_s = q^(s-1) / sum_t q^(t-1): the exit fractions of a
  given q (the authors' --q_list mode; their budget is sum_s p_s C_s)."""
  q = float(q)
  if not (math.isfinite(q) and q > 0) or int(num_exits) < 1:
    raise errors.ConfigError(f'q must be positive and finite with at least '
                             f'one exit; got q={q!r}, {num_exits} exits.')
  w = q ** np.arange(int(num_exits), dtype=np.float64)
  return w / w.sum()


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
    d1, d2 = nearest_two(d, gp, np, second=kind == 'margin')
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


def nearest_two(d_QxG, g_pids_G, xp=np, second: bool = True):
  """(d1 [Q], d2 [Q] or None): the nearest distance of each row, and the
  nearest among the gallery entries of another identity than that nearest
  one's. d_QxG holds inf where the protocol removed an entry. xp: numpy
  (the simulation) or jax.numpy (the engine, on the device); ties take the
  first index, as a stable sort."""
  top_Q = xp.argmin(d_QxG, axis=1)
  d1_Q = xp.take_along_axis(d_QxG, top_Q[:, None], axis=1)[:, 0]
  if not second:
    return d1_Q, None
  other_QxG = xp.where(g_pids_G[None, :] == g_pids_G[top_Q][:, None], xp.inf,
                       d_QxG)
  return d1_Q, xp.min(other_QxG, axis=1)
