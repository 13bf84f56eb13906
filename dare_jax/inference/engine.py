"""Real anytime inference: queries that leave early do not run later stages.

StageRunner splits the DaRe eval forward into its stages (stage continuation,
models/dare.py): stage 1 runs on images, stage s > 1 on stage s-1's carry,
each stage jitted once per batch bucket (powers of two up to max_batch; a
smaller batch is padded), so survivor counts that change from batch to batch
compile nothing new after warm-up.

AnytimeEngine answers a stream of queries against a gallery whose per-exit
embeddings stay on the device:

  budget mode   (routing 'distance' | 'margin' | 'random'): queries arrive in
                micro-batches; stage 1 runs on the batch; each query's
                confidence against that exit's gallery is computed on the
                device (exits.nearest_two, the two distances the
                confidences are made of; the host takes their difference in
                float64 with exits.confidence_of, as the simulation does);
                eq. 3's exit rule (exits.ExitRule) decides who leaves, query
                by query in arrival order, as the simulation does; the
                survivors' carries (and earlier embeddings, for 'fused') are
                compacted into the next bucket and continue.
  deadline mode (deadline_ms = T): every query of a micro-batch is answered
                with the deepest exit completed within T ms of the batch's
                start; a stage is not started when its measured time (the
                last one at that bucket) would overrun T.

Each query gets its answer (top-K of its exit's distances), its exit and its
measured latency (wall clock from its batch's start to its answer on the
host, with block_until_ready).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import math
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dare_jax import errors
from dare_jax.evaluation import metrics
from dare_jax.models import dare
from dare_jax.retrieval import exits as exits_lib
from dare_jax.retrieval import protocol as protocol_lib

EXITS = exits_lib.DARE_EXITS  # stage1, stage2, stage3, fused


def buckets_up_to(max_batch: int) -> tuple[int, ...]:
  """1, 2, 4, ... up to the first power of two >= max_batch."""
  if max_batch < 1:
    raise errors.ConfigError(f'max_batch={max_batch} must be >= 1.')
  return tuple(1 << i for i in range(int(math.ceil(math.log2(max_batch)))
                                     + 1))


class StageRunner:
  """The four stages, the fusion and the compaction, jitted per bucket.

  traces counts how often each function was traced (a trace = a
  compilation); after warm-up over the buckets it stops growing.
  """

  def __init__(self, model: dare.DaRe, variables, max_batch: int = 64):
    self.model, self.variables = model, variables
    self.buckets = buckets_up_to(max_batch)
    self.traces = collections.Counter()

    def stage(s, variables, x):
      self.traces[f'stage{s}'] += 1
      out, carry = model.apply(variables, x, train=False, first_exit=s,
                               num_exits=s, return_carry=True)
      return carry, out[dare.EXITS[s - 1]]

    def fuse(variables, e1, e2, e3, e4):
      self.traces['fuse'] += 1
      return dare.fuse(variables, dict(zip(dare.EXITS, (e1, e2, e3, e4))))

    def gather(tree, idx):
      self.traces['gather'] += 1
      return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), tree)

    def scatter(buffer, tree, src, dst):
      self.traces['scatter'] += 1
      return jax.tree.map(lambda b, t: b.at[dst].set(t[src]), buffer,
                          {k: tree[k] for k in buffer})

    def head(buffer):
      self.traces['head'] += 1
      return jax.tree.map(lambda b: b[:-1], buffer)

    self._scatter = jax.jit(scatter)
    self._head = jax.jit(head)
    self._zeros = lambda tree, n: jax.tree.map(
        lambda a: jnp.zeros((n,) + a.shape[1:], a.dtype), tree)
    self._stage = {s: jax.jit(functools.partial(stage, s))
                   for s in range(1, 5)}
    self._fuse = jax.jit(fuse)
    self._gather = jax.jit(gather)

  def bucket(self, n: int) -> int:
    i = bisect.bisect_left(self.buckets, n)
    if i == len(self.buckets):
      raise errors.ConfigError(f'A batch of {n} is larger than max_batch='
                               f'{self.buckets[-1]}.')
    return self.buckets[i]

  def pad(self, x_NxHxWx3: np.ndarray) -> np.ndarray:
    """Zero rows up to the bucket of N."""
    n = len(x_NxHxWx3)
    b = self.bucket(n)
    if b == n:
      return x_NxHxWx3
    pad = np.zeros((b - n,) + x_NxHxWx3.shape[1:], x_NxHxWx3.dtype)
    return np.concatenate([x_NxHxWx3, pad])

  def stage(self, s: int, x_or_carry):
    """(carry, embedding [B, D]) of stage s (1..4) on a bucket-sized batch."""
    return self._stage[s](self.variables, x_or_carry)

  def fuse(self, e1, e2, e3, e4):
    return self._fuse(self.variables, e1, e2, e3, e4)

  def scatter(self, buffer, tree, rows: Sequence[int], at: int):
    """buffer (max_batch + 1 rows; the last one takes the padding) with
    tree's rows `rows` written at at, at + 1, ...; a zero buffer shaped
    like tree when buffer is None."""
    cap = self.buckets[-1]
    if buffer is None:
      buffer = self._zeros(tree, cap + 1)
    nb = self.bucket(len(rows))
    src = np.zeros((nb,), np.int32)
    dst = np.full((nb,), cap, np.int32)
    src[:len(rows)] = rows
    dst[:len(rows)] = np.arange(at, at + len(rows))
    return self._scatter(buffer, tree, jnp.asarray(src), jnp.asarray(dst))

  def head(self, buffer):
    """The max_batch rows of a buffer (without its padding row)."""
    return self._head(buffer)

  def compact(self, tree, keep: Sequence[int]):
    """The rows `keep` of every array of tree, padded (with row keep[0]) to
    the bucket of len(keep)."""
    b = self.bucket(len(keep))
    idx = np.full((b,), keep[0], np.int32)
    idx[:len(keep)] = keep
    return self._gather(tree, jnp.asarray(idx))


def export_stage_onnx(model: dare.DaRe, variables, input_shape,
                      s: int) -> bytes:
  """Stage s of the eval forward as an ONNX model: input 'x' ['B', *shape]
  (images for s = 1, else stage s-1's carry), outputs 'carry' and 'emb'."""
  # pylint: disable=g-import-not-at-top
  from dare_jax.inference import bundle as bundle_lib
  # pylint: enable=g-import-not-at-top
  host = jax.device_get(variables)
  model = dare.for_onnx(model)

  def fn(x):
    out, carry = model.apply(host, x, train=False, first_exit=s, num_exits=s,
                             return_carry=True)
    return carry, out[dare.EXITS[s - 1]]
  return bundle_lib.to_onnx(fn, input_shape, f'dare_stage{s}',
                            ('carry', 'emb'))


class OnnxStageRunner(StageRunner):
  """StageRunner's interface on onnxruntime: one ONNX model per stage
  (exported here), host numpy arrays, the fusion and compaction in numpy.
  onnxruntime takes any batch, so nothing compiles per bucket; batches are
  still padded to buckets so both runtimes run the same shapes."""

  def __init__(self, model: dare.DaRe, variables, input_hw,
               max_batch: int = 64, threads: int = 0):
    # pylint: disable=g-import-not-at-top
    from dare_jax.inference import bundle as bundle_lib
    # pylint: enable=g-import-not-at-top
    self.model, self.variables = model, variables
    self.buckets = buckets_up_to(max_batch)
    self.traces = collections.Counter()
    self._w = np.asarray(jax.device_get(variables['params']['fusion']),
                         np.float32)
    shape = tuple(input_hw) + (3,)
    self._sessions = {}
    for s in range(1, 5):
      self._sessions[s] = bundle_lib.onnx_session(
          export_stage_onnx(model, variables, shape, s), threads,
          spin=False)
      carry = jax.eval_shape(
          lambda x, s=s: model.apply(variables, x, train=False, first_exit=s,
                                     num_exits=s, return_carry=True)[1],
          jax.ShapeDtypeStruct((1,) + shape, jnp.float32))
      shape = carry.shape[1:]

  def stage(self, s: int, x_or_carry):
    carry, emb = self._sessions[s].run(
        ['carry', 'emb'], {'x': np.ascontiguousarray(x_or_carry, np.float32)})
    return carry, emb

  def fuse(self, e1, e2, e3, e4):
    return sum(self._w[s] * e for s, e in enumerate((e1, e2, e3, e4)))

  def compact(self, tree, keep: Sequence[int]):
    b = self.bucket(len(keep))
    idx = np.full((b,), keep[0], np.int64)
    idx[:len(keep)] = keep
    return {k: np.asarray(v)[idx] for k, v in tree.items()}

  def scatter(self, buffer, tree, rows: Sequence[int], at: int):
    cap = self.buckets[-1]
    if buffer is None:
      buffer = {k: np.zeros((cap + 1,) + np.shape(v)[1:], np.asarray(v).dtype)
                for k, v in tree.items()}
    else:
      buffer = {k: v.copy() for k, v in buffer.items()}
    for k in buffer:
      buffer[k][at:at + len(rows)] = np.asarray(tree[k])[list(rows)]
    return buffer

  def head(self, buffer):
    return {k: v[:-1] for k, v in buffer.items()}


@functools.partial(jax.jit, static_argnames=('topk', 'proto'))
def _exit_stats(q_BxD, g_GxD, q_pids_B, q_camids_B, g_pids_G, g_camids_G,
                topk, proto=protocol_lib.Protocol()):
  """On the device, per query: the nearest remaining distance, the nearest
  of another identity than the top-1's (the two numbers the confidences of
  retrieval/exits.py are made of), the top-K gallery indices and distances,
  all under the run's protocol (metric, normalisation)."""
  dist_BxG = proto.distances(q_BxD, g_GxD)
  _, removed_BxG = metrics.removal_mask(q_pids_B, q_camids_B, g_pids_G,
                                        g_camids_G)
  d1_B, d2_B = exits_lib.nearest_two(
      jnp.where(removed_BxG, jnp.inf, dist_BxG), g_pids_G, jnp)
  neg, idx_BxK = jax.lax.top_k(-dist_BxG, topk)
  return d1_B, d2_B, idx_BxK, -neg, dist_BxG


@dataclasses.dataclass
class Answer:
  index: int  # in arrival order
  exit: int  # 0-based into the engine's exits
  latency_ms: float
  results: np.ndarray  # int [K] gallery indices, nearest first
  distances: np.ndarray  # float32 [K]
  dist_G: Optional[np.ndarray] = None  # the exit's distances (labelled)


class AnytimeEngine:
  """Early exit for real over a gallery of per-exit embeddings.

  Args:
    model, variables: the DaRe (eval mode).
    gallery: {exit name: [G, D]} for the exits (stage1, stage2, stage3,
      fused), kept on the device.
    g_pids, g_camids: int [G] gallery ids (-1 junk; unknown: zeros / -1).
    costs: the exits' cumulative Mul-Adds.
    routing: distance, margin or random; budget: average Mul-Adds per query
      (budget mode), or deadline_ms (deadline mode; routing unused).
    topk: results per query; max_batch: the largest micro-batch.
    keep_distances: hand each answer its exit's [G] distances (for
      Rank-1 / mAP of labelled queries).
    runner: a StageRunner of this model and max_batch to reuse.
    proto: the retrieval protocol (Bundle.protocol);
      raw Euclidean distances when None.
  """

  def __init__(self, model, variables, gallery, g_pids, g_camids, costs, *,
               routing: str = 'distance', budget: Optional[float] = None,
               deadline_ms: Optional[float] = None, topk: int = 10,
               max_batch: int = 16, seed: int = 0,
               keep_distances: bool = False,
               runner: Optional[StageRunner] = None,
               proto: Optional[protocol_lib.Protocol] = None):
    if (budget is None) == (deadline_ms is None):
      raise errors.ConfigError('Give a budget or a deadline, not both.')
    if routing not in exits_lib.ROUTINGS:
      raise errors.ConfigError(f'routing={routing!r}: use one of '
                               f'{", ".join(exits_lib.ROUTINGS)}.')
    missing = [e for e in EXITS if e not in gallery]
    if missing:
      raise errors.DataError(f'The gallery lacks {", ".join(missing)}; the '
                             f'engine answers with {", ".join(EXITS)}.')
    # A runner (its compiled stages) can be shared by engines of one model;
    # an OnnxStageRunner runs the stages in onnxruntime.
    self.runner = runner or StageRunner(model, variables, max_batch)
    # How the run ranks (bundle.json's metric and normalisation).
    self.proto = proto or protocol_lib.Protocol()
    self.gallery = {e: jnp.asarray(gallery[e], jnp.float32) for e in EXITS}
    self.g_pids = jnp.asarray(g_pids, jnp.int32)
    self.g_camids = jnp.asarray(g_camids, jnp.int32)
    self.num_g = int(self.g_pids.shape[0])
    self.topk = min(topk, self.num_g)
    self.costs = exits_lib.check_costs(costs)
    self.routing, self.deadline_ms = routing, deadline_ms
    self.budget = budget
    self.keep_distances = keep_distances
    if budget is not None:
      fractions = (exits_lib.random_fractions if routing == 'random' else
                   exits_lib.exit_fractions)(self.costs, budget)
      self.pi = exits_lib.conditional(fractions)
    else:
      self.pi = None
    self.router = (exits_lib.ExitRule(self.pi) if self.pi is not None
                   else None)
    self._rng = np.random.default_rng(seed)
    self._u: list[np.ndarray] = []
    # Queued streaming: per exit s >= 1, the waiting queries and their rows.
    self._queue = {s: [] for s in range(1, len(EXITS))}
    self._buffer: dict = {}
    self._t_arrive: dict = {}
    self._stage_ms = {}  # (stage, bucket) -> the last measured ms
    self._arrived = 0
    self.timing = collections.Counter()  # seconds: where the time goes

  def warmup(self, input_hw) -> None:
    """Compiles what a stream can ask for: every stage, the fusion, the
    confidences at every bucket, every compaction into a smaller bucket."""
    h, w = input_hw
    for b in self.runner.buckets:
      ids = jnp.zeros((b,), jnp.int32)
      rows = {'carry': jnp.zeros((b, h, w, 3), jnp.float32), 'pids': ids,
              'camids': ids}
      for s in range(len(EXITS)):
        stage = s + 1  # 'fused' (s = 3) follows stage 4
        rows['carry'], emb = self.runner.stage(stage, rows['carry'])
        rows[f'e{stage}'] = emb
        if s == len(EXITS) - 1:
          emb = self.runner.fuse(rows['e1'], rows['e2'], rows['e3'], emb)
        jax.block_until_ready(self._stats(s, emb, ids, ids))
        if s < len(EXITS) - 1:
          for n in self.runner.buckets:
            if n <= b:
              jax.block_until_ready(self.runner.compact(rows, list(range(n))))
              if self.deadline_ms is None:  # what submit() and flush() use
                buf = self.runner.scatter(None, rows, list(range(n)), 0)
                jax.block_until_ready(self.runner.head(buf))
                for m in self.runner.buckets:
                  jax.block_until_ready(self.runner.compact(
                      buf, list(range(m))))

  # -- one micro-batch --------------------------------------------------------

  def _stats(self, s_exit: int, emb, q_pids, q_camids):
    return _exit_stats(emb, self.gallery[EXITS[s_exit]], q_pids, q_camids,
                       self.g_pids, self.g_camids, self.topk, self.proto)

  def _input_rows(self, x_NxHxWx3, q_pids, q_camids):
    n = len(x_NxHxWx3)
    qp = np.full((n,), -2, np.int32) if q_pids is None else np.asarray(
        q_pids, np.int32)
    qc = np.full((n,), -1, np.int32) if q_camids is None else np.asarray(
        q_camids, np.int32)
    x = self.runner.pad(np.asarray(x_NxHxWx3, np.float32))
    rows = {'carry': x, 'pids': self.runner.pad(qp),
            'camids': self.runner.pad(qc)}
    if isinstance(self.runner, OnnxStageRunner):
      return rows  # host arrays
    return {k: jnp.asarray(v) for k, v in rows.items()}

  def _run_exit(self, s: int, rows: dict):
    """Stage s's compute, its exit's statistics and their host copy:
    (rows with the new carry and embedding, (d1, d2, idx, dist, dist_all))."""
    stage = s + 1  # 'fused' (s = 3) follows stage 4
    b = len(rows['carry'])
    ts = time.perf_counter()
    rows = dict(rows)
    rows['carry'], emb = self.runner.stage(stage, rows['carry'])
    rows[f'e{stage}'] = emb
    if s == len(EXITS) - 1:  # 'fused' after stage 4
      emb = self.runner.fuse(rows['e1'], rows['e2'], rows['e3'], emb)
    stats = self._stats(s, emb, rows['pids'], rows['camids'])
    jax.block_until_ready(stats)
    t_stage = time.perf_counter()
    self._stage_ms[(stage, b)] = 1e3 * (t_stage - ts)
    self.timing['stage compute + confidence'] += t_stage - ts
    host = jax.device_get(stats[:4] + (
        stats[4] if self.keep_distances else None,))
    self.timing['host round trips'] += time.perf_counter() - t_stage
    return rows, host

  def _leaves(self, s: int, q: int, d1, d2) -> bool:
    """Budget mode: does query q (arrival index) leave at exit s?"""
    if s == len(EXITS) - 1:
      return True
    if self.routing == 'random':
      return bool(self._draws(q)[s] < self.pi[s])
    return self.router.leaves(
        s, float(exits_lib.confidence_of(self.routing, d1, d2)))

  def process(self, x_NxHxWx3: np.ndarray, q_pids=None, q_camids=None
              ) -> list[Answer]:
    """Answers a micro-batch of normalised images, in arrival order; its
    survivors continue together, compacted into smaller buckets.

    q_pids / q_camids: int [N] when the queries are labelled (the protocol
    then removes their own camera's images from the confidences); unknown
    queries remove junk only.
    """
    n = len(x_NxHxWx3)
    t0 = time.perf_counter()
    first = self._arrived
    self._arrived += n
    rows = self._input_rows(x_NxHxWx3, q_pids, q_camids)
    alive = list(range(n))  # rows of the original batch, arrival order
    answers: dict[int, Answer] = {}
    for s in range(len(EXITS)):
      stage = s + 1  # 'fused' (s = 3) follows stage 4
      if self.deadline_ms is not None and s > 0:
        est = self._stage_ms.get((stage, len(rows['carry'])))
        if est is not None and (1e3 * (time.perf_counter() - t0) + est >
                                self.deadline_ms):
          break  # the previous exit's answers stand
      rows, (d1, d2, idx, dist, dist_all) = self._run_exit(s, rows)
      t_host = time.perf_counter()
      if self.deadline_ms is not None:
        if s > 0 and 1e3 * (t_host - t0) > self.deadline_ms:
          break  # finished late: the previous exit's answers stand
        leaving = list(range(len(alive)))  # replaces the previous answer
      else:
        leaving = [r for r in range(len(alive))
                   if self._leaves(s, first + alive[r], d1[r], d2[r])]
      now = 1e3 * (time.perf_counter() - t0)
      for r in leaving:
        q = alive[r]
        answers[q] = Answer(first + q, s, now, idx[r], dist[r],
                            None if dist_all is None else dist_all[r])
      self.timing['routing'] += time.perf_counter() - t_host
      if self.deadline_ms is not None:
        continue  # everyone goes on while time is left
      if len(leaving) == len(alive):
        break
      tc = time.perf_counter()
      stay = sorted(set(range(len(alive))) - set(leaving))
      alive = [alive[r] for r in stay]
      rows = self.runner.compact(rows, stay)
      self.timing['compaction'] += time.perf_counter() - tc
    return [answers[q] for q in range(n)]

  # -- queued: every stage runs on full batches ------------------------------

  def submit(self, x_NxHxWx3: np.ndarray, q_pids=None, q_camids=None
             ) -> list[Answer]:
    """Budget mode with queues: stage 1 runs on the micro-batch; survivors
    wait at the next stage until max_batch of them (from any micro-batches)
    fill it, so every stage runs at full batch. Returns the answers
    completed by this call (arrival indices tell whose); flush() ends the
    stream. Exits are those of process(): each exit still sees its queries
    in arrival order. Latency counts from submit() to the answer.
    """
    if self.deadline_ms is not None:
      raise errors.ConfigError('Queued streaming is for a budget; a '
                               'deadline answers each micro-batch itself.')
    n = len(x_NxHxWx3)
    now = time.perf_counter()
    queries = list(range(self._arrived, self._arrived + n))
    self._arrived += n
    self._t_arrive.update({q: now for q in queries})
    out: list[Answer] = []
    self._step(0, self._input_rows(x_NxHxWx3, q_pids, q_camids), queries,
               out)
    return out

  def flush(self) -> list[Answer]:
    """Runs every waiting query to its exit (partial batches)."""
    out: list[Answer] = []
    for s in range(1, len(EXITS)):
      queries = self._queue[s]
      if queries:
        tc = time.perf_counter()
        rows = self.runner.compact(self._buffer[s], list(range(len(queries))))
        self.timing['compaction'] += time.perf_counter() - tc
        self._queue[s] = []
        self._step(s, rows, queries, out)
    return out

  def _step(self, s: int, rows: dict, queries: list[int],
            out: list[Answer]) -> None:
    """Exit s on rows (their first len(queries) are the queries, in
    arrival order): answers the leaving, queues the rest at s + 1."""
    rows, (d1, d2, idx, dist, dist_all) = self._run_exit(s, rows)
    t_host = time.perf_counter()
    stay = []
    for r, q in enumerate(queries):
      if self._leaves(s, q, d1[r], d2[r]):
        out.append(Answer(q, s, 1e3 * (time.perf_counter() -
                                       self._t_arrive.pop(q)), idx[r],
                          dist[r], None if dist_all is None else dist_all[r]))
      else:
        stay.append(r)
    self.timing['routing'] += time.perf_counter() - t_host
    cap = self.runner.buckets[-1]
    while stay:
      queue = self._queue[s + 1]
      take = stay[:cap - len(queue)]
      stay = stay[len(take):]
      tc = time.perf_counter()
      self._buffer[s + 1] = self.runner.scatter(
          self._buffer.get(s + 1), rows, take, len(queue))
      self.timing['compaction'] += time.perf_counter() - tc
      queue += [queries[r] for r in take]
      if len(queue) == cap:  # a full batch: run it now
        self._queue[s + 1] = []
        self._step(s + 1, self.runner.head(self._buffer[s + 1]), queue, out)

  def _draws(self, q: int) -> np.ndarray:
    """Query q's uniforms: row q of default_rng(seed).random((Q, S)), drawn
    in arrival order (as budget/exits_lib.route_random draws them)."""
    while len(self._u) <= q:
      self._u.append(self._rng.random(len(EXITS)))
    return self._u[q]
