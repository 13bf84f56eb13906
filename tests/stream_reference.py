"""Plain NumPy reference for the budgeted stream (a test helper).

Written from the rules of the DaRe simulation, loop by loop, and not from
dare_jax.budget.stream (which it must not import):
  * p_s ~ q^(s-1) with q the positive real root of
    sum_s (C_s - B) q^(s-1) = 0, found here with np.roots;
  * pi_s = p_s / (1 - sum_{t<s} p_t), 1 at the last exit or when nothing
    is left;
  * at each exit before the last, a query appends its confidence to the
    list of that exit, sorts the list descending and leaves if its
    confidence is >= the entry at floor((n - 1) * pi_s); an exit with
    pi_s = 0 lets everyone through;
  * confidences on the gallery without junk (pid -1) and the query's own
    camera (same pid and camid, camid -1 never equal);
  * random routing: one generator, np.random.default_rng(seed), seeded once
    for the whole run; budget after budget, query after query, it hands out
    one uniform per exit (S of them, the last unused), and the query leaves
    at the first exit s whose uniform is < pi_s (the authors seed np.random
    once and draw on across the budgets);
  * Figure 8 (the authors' budgeted_stream/README.md): distance routing with
    p_s ~ q^(s-1) at q = 0.5; easy = left at the first exit, hard = reached
    the last.
"""

from __future__ import annotations

import math

import numpy as np


def fractions(costs, budget):
  """Eq. 3 with np.roots."""
  costs = [float(c) for c in costs]
  n = len(costs)
  p = [0.0] * n
  if budget <= costs[0]:
    p[0] = 1.0
    return np.array(p)
  if budget >= costs[-1]:
    p[-1] = 1.0
    return np.array(p)
  # np.roots wants the highest power first: (C_n - B) q^(n-1) + ...
  coefficients = [costs[s] - budget for s in range(n - 1, -1, -1)]
  positive = [r.real for r in np.roots(coefficients)
              if abs(r.imag) <= 1e-9 * max(1.0, abs(r)) and r.real > 0]
  assert len(positive) == 1, positive  # Descartes: one sign change
  q = positive[0]
  weights = [q**s for s in range(n)]
  total = sum(weights)
  return np.array([w / total for w in weights])


def random_fractions(costs, budget):
  n = len(costs)
  p = [0.0] * n
  if budget <= costs[0]:
    p[0] = 1.0
  elif budget >= costs[-1]:
    p[-1] = 1.0
  else:
    for s in range(n - 1):
      if costs[s] <= budget < costs[s + 1]:
        p[s] = (costs[s + 1] - budget) / (costs[s + 1] - costs[s])
        p[s + 1] = 1.0 - p[s]
        break
  return np.array(p)


def conditional(p):
  n = len(p)
  pi = []
  for s in range(n):
    left = 1.0 - sum(p[:s])
    if s == n - 1 or left <= 0:
      pi.append(1.0)
    else:
      pi.append(min(1.0, p[s] / left))
  return pi


def _same_camera(a, b):
  return a != -1 and b != -1 and a == b


def _remaining(i, q_pids, q_camids, g_pids, g_camids):
  out = []
  for j in range(len(g_pids)):
    if g_pids[j] == -1:
      continue
    if g_pids[j] == q_pids[i] and _same_camera(g_camids[j], q_camids[i]):
      continue
    out.append(j)
  return out


def confidence(dist_QxG, q_pids, q_camids, g_pids, g_camids, kind):
  """One confidence per query, one gallery entry at a time."""
  out = []
  for i in range(len(q_pids)):
    kept = _remaining(i, q_pids, q_camids, g_pids, g_camids)
    if not kept:
      out.append(-math.inf)
      continue
    best = kept[0]
    for j in kept:
      if dist_QxG[i][j] < dist_QxG[i][best]:
        best = j
    d1 = float(dist_QxG[i][best])
    if kind == 'distance':
      out.append(-d1)
      continue
    second = math.inf
    for j in kept:
      if g_pids[j] != g_pids[best]:
        second = min(second, float(dist_QxG[i][j]))
    out.append(second - d1)
  return out


def route(conf_per_exit, pi):
  """conf_per_exit[s][q]; returns the 0-based exit of every query."""
  num_s = len(pi)
  num_q = len(conf_per_exit[0]) if conf_per_exit else 0
  seen = [[] for _ in range(num_s)]
  exits = []
  for q in range(num_q):
    chosen = num_s - 1
    for s in range(num_s - 1):
      if pi[s] == 0:
        continue
      c = conf_per_exit[s][q]
      seen[s].append(c)
      ordered = sorted(seen[s], reverse=True)
      threshold = ordered[int(math.floor((len(ordered) - 1) * pi[s]))]
      if c >= threshold:
        chosen = s
        break
    exits.append(chosen)
  return exits


def route_random(num_q, pi_per_budget, seed):
  """[budget][q] exits of the random routing, one scalar draw at a time."""
  rng = np.random.default_rng(seed)
  out = []
  for pi in pi_per_budget:
    exits = []
    for _ in range(num_q):
      u = [rng.random() for _ in range(len(pi))]
      chosen = len(pi) - 1
      for s in range(len(pi) - 1):
        if u[s] < pi[s]:
          chosen = s
          break
      exits.append(chosen)
    out.append(exits)
  return out


def easy_hard(conf_per_exit, num_exits, q=0.5):
  """(exits, easy, hard) of Figure 8's rule."""
  weights = [q**s for s in range(num_exits)]
  p = [w / sum(weights) for w in weights]
  exits = route(conf_per_exit, conditional(p))
  easy = [i for i, e in enumerate(exits) if e == 0]
  hard = [i for i, e in enumerate(exits) if e == num_exits - 1]
  return exits, easy, hard
