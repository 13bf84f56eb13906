"""The anytime engine exits for real: the exits it chooses equal the
simulation's (budget/exits_lib.route over precomputed features), query for
query, and a stream compiles nothing after warm-up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dare_jax.budget import stream
from dare_jax.inference import engine as engine_lib
from dare_jax.models import dare
from dare_jax.retrieval import exits as exits_lib

# Its module-scoped fixtures are built once: all its tests on one xdist
# worker (.ci/run: --dist loadgroup).
pytestmark = pytest.mark.xdist_group('anytime_engine')

HW = (32, 16)
COSTS = (1.0, 2.2, 3.1, 4.0)  # increasing, as Mul-Adds are


@pytest.fixture(scope='module', name='setup')
def setup_fixture():
  return make_setup()


def make_setup():
  """A small DaRe with random weights and BN statistics, labelled query and
  gallery images, and every exit's embeddings by the full forward."""
  model = dare.DaRe(block='basic', stage_sizes=(1, 1, 1, 1), width=4,
                    head_hidden=16, embedding_dim=8)
  rng = np.random.default_rng(0)
  v = model.init(jax.random.key(0), jnp.zeros((1,) + HW + (3,)), train=False)
  v = jax.device_get(v)
  def stat(path, a):  # running statistics: means near 0, variances near 1
    if jax.tree_util.keystr(path).endswith("['var']"):
      return np.abs(rng.normal(1, 0.3, a.shape)).astype(np.float32)
    return rng.normal(0, 0.2, a.shape).astype(np.float32)
  v = {'params': v['params'],
       'batch_stats': jax.tree_util.tree_map_with_path(stat, v['batch_stats'])}
  num_q, num_g = 40, 60
  xq = rng.normal(size=(num_q,) + HW + (3,)).astype(np.float32)
  xg = rng.normal(size=(num_g,) + HW + (3,)).astype(np.float32)
  g_pids = rng.integers(1, 12, num_g)
  g_pids[:3] = -1  # junk
  g_camids = rng.integers(0, 3, num_g)
  q_pids = rng.integers(1, 12, num_q)
  q_camids = rng.integers(0, 3, num_q)
  full = jax.jit(lambda v, x: model.apply(v, x, train=False))
  feats = {'query_pids': q_pids, 'query_camids': q_camids,
           'gallery_pids': g_pids, 'gallery_camids': g_camids}
  for side, x in (('query', xq), ('gallery', xg)):
    for k, e in jax.device_get(full(v, x)).items():
      feats[f'{side}_{k}'] = e
  return model, v, xq, feats


def _simulated_exits(feats, routing, budget, seed=0):
  """What tools.budgeted routes: budget/stream over the features."""
  retrievals = stream.exit_retrievals(feats, engine_lib.EXITS)
  if routing == 'random':
    return exits_lib.route_random(len(feats['query_pids']), exits_lib.conditional(
        exits_lib.random_fractions(COSTS, budget)), seed)
  conf = np.stack([retrievals[e].confidences(routing)
                   for e in engine_lib.EXITS[:-1]], axis=1)
  return exits_lib.route(conf, exits_lib.conditional(
      exits_lib.exit_fractions(COSTS, budget)))


def _engine(setup, routing, budget, max_batch, **kw):
  model, v, _, feats = setup
  return engine_lib.AnytimeEngine(
      model, v, {e: feats[f'gallery_{e}'] for e in engine_lib.EXITS},
      feats['gallery_pids'], feats['gallery_camids'], COSTS,
      routing=routing, budget=budget, max_batch=max_batch, topk=5, **kw)


def _run(engine, setup, batch):
  _, _, xq, feats = setup
  answers = []
  for lo in range(0, len(xq), batch):
    answers += engine.process(xq[lo:lo + batch],
                              feats['query_pids'][lo:lo + batch],
                              feats['query_camids'][lo:lo + batch])
  return answers


@pytest.mark.slow
@pytest.mark.parametrize('routing', ['distance', 'margin', 'random'])
@pytest.mark.parametrize('batch', [1, 16])
def test_exits_equal_the_simulation(setup, routing, batch):
  budget = (COSTS[0] + COSTS[-1]) / 2
  want = _simulated_exits(setup[3], routing, budget)
  # A budget that mixes the exits (random routing uses the two around it).
  assert len(set(want.tolist())) >= (2 if routing == 'random' else 3)
  answers = _run(_engine(setup, routing, budget, 16), setup, batch)
  assert [a.index for a in answers] == list(range(len(want)))
  np.testing.assert_array_equal([a.exit for a in answers], want)
  # Each answer is its exit's top-5 (all of the gallery, nearest first).
  feats = setup[3]
  for a in answers[:8]:
    name = engine_lib.EXITS[a.exit]
    d = np.sqrt(((feats[f'query_{name}'][a.index].astype(np.float64) -
                  feats[f'gallery_{name}'].astype(np.float64))**2).sum(1))
    np.testing.assert_array_equal(a.results, np.argsort(d, kind='stable')[:5])
    np.testing.assert_allclose(a.distances, np.sort(d)[:5], rtol=1e-4)
    assert a.latency_ms > 0


@pytest.mark.slow
def test_no_compilation_after_warmup(setup):
  engine = _engine(setup, 'margin', 2.5, 16)
  engine.warmup(HW)
  before = dict(engine.runner.traces)
  assert before['stage1'] == len(engine.runner.buckets)  # one per bucket
  answers = _run(engine, setup, 13)  # 13, 13, 13, 1: survivors vary
  assert len({a.exit for a in answers}) >= 3
  assert dict(engine.runner.traces) == before


@pytest.mark.slow
def test_deadline_answers_with_the_deepest_exit_in_time(setup):
  _, _, xq, _ = setup
  deep = _engine(setup, 'distance', None, 16, deadline_ms=1e6)
  deep.warmup(HW)
  assert {a.exit for a in deep.process(xq[:8])} == {len(engine_lib.EXITS) - 1}
  # No time at all: the first exit, computed anyway, answers.
  none = _engine(setup, 'distance', None, 16, deadline_ms=1e-6)
  none.warmup(HW)
  none.process(xq[:8])  # measures the stages
  assert {a.exit for a in none.process(xq[:8])} == {0}


@pytest.mark.slow
def test_bench_anytime_rows():
  """bench/early_exit on the smoke model: the fields scripts read, and the
  predicted saving is what the realised exits cost (no timing thresholds)."""
  from configs import smoke  # pylint: disable=g-import-not-at-top
  from dare_jax.bench import early_exit as bench_early_exit  # pylint: disable=g-import-not-at-top
  from dare_jax.budget import costs as costs_lib  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  rows = bench_early_exit.run(config, [1, 2], [0.5], num_queries=6,
                           num_gallery=20, repeats=1,
                           runtimes=('jax', 'onnx'))
  assert [(r['runtime'], r['batch'], r['mode']) for r in rows] == [
      (rt, b, m) for rt in ('jax', 'onnx') for b in (1, 2)
      for m in ('batch', 'queued')]
  c = costs_lib.exit_costs(dare.from_config(config.model),
                           tuple(config.data.input_size))
  costs = np.array([c[e] for e in engine_lib.EXITS], np.float64)
  for r in rows:
    np.testing.assert_allclose(sum(r['exit_fractions']), 1.0)
    cost = np.dot(r['exit_fractions'], costs)
    np.testing.assert_allclose(r['predicted_saving'], 1 - cost / costs[-1])
    np.testing.assert_allclose(r['budget'], (costs[0] + costs[-1]) / 2)
    assert r['ms_per_query'] > 0 and r['full_ms_per_query'] > 0
    np.testing.assert_allclose(
        r['realized_saving'], 1 - r['ms_per_query'] / r['full_ms_per_query'])


@pytest.mark.slow
@pytest.mark.parametrize('routing', ['distance', 'margin', 'random'])
def test_queued_stream_exits_equal_the_simulation(setup, routing):
  """submit/flush: survivors of several micro-batches continue together at
  full batch; the exits are still the simulation's, and nothing compiles
  after warm-up."""
  _, _, xq, feats = setup
  budget = (COSTS[0] + COSTS[-1]) / 2
  want = _simulated_exits(feats, routing, budget)
  engine = _engine(setup, routing, budget, 8)
  engine.warmup(HW)
  before = dict(engine.runner.traces)
  answers = []
  for lo in range(0, len(xq), 5):  # micro-batches of 5 into buckets of 8
    answers += engine.submit(xq[lo:lo + 5], feats['query_pids'][lo:lo + 5],
                             feats['query_camids'][lo:lo + 5])
  answers += engine.flush()
  assert dict(engine.runner.traces) == before
  assert (2, 8) in engine._stage_ms  # pylint: disable=protected-access
  answers.sort(key=lambda a: a.index)
  assert [a.index for a in answers] == list(range(len(want)))
  np.testing.assert_array_equal([a.exit for a in answers], want)
  for a in answers[:6]:
    name = engine_lib.EXITS[a.exit]
    d = np.sqrt(((feats[f'query_{name}'][a.index].astype(np.float64) -
                  feats[f'gallery_{name}'].astype(np.float64))**2).sum(1))
    np.testing.assert_array_equal(a.results, np.argsort(d, kind='stable')[:5])


@pytest.mark.parametrize('routing', ['distance', 'margin'])
def test_onnx_stages_exit_as_the_simulation(setup, routing):
  """The stages in onnxruntime (one ONNX model each): the same exits, per
  micro-batch and queued, and answers equal to JAX's to 1e-4."""
  model, v, xq, feats = setup
  budget = (COSTS[0] + COSTS[-1]) / 2
  want = _simulated_exits(feats, routing, budget)
  runner = engine_lib.OnnxStageRunner(model, v, HW, max_batch=16)
  engine = _engine(setup, routing, budget, 16, runner=runner)
  answers = _run(engine, setup, 16)
  np.testing.assert_array_equal([a.exit for a in answers], want)
  queued = _engine(setup, routing, budget, 16, runner=runner)
  got = []
  for lo in range(0, len(xq), 7):
    got += queued.submit(xq[lo:lo + 7], feats['query_pids'][lo:lo + 7],
                         feats['query_camids'][lo:lo + 7])
  got = sorted(got + queued.flush(), key=lambda a: a.index)
  np.testing.assert_array_equal([a.exit for a in got], want)
  ref = _run(_engine(setup, routing, budget, 16), setup, 16)
  for a, b in zip(answers, ref):
    np.testing.assert_array_equal(a.results, b.results)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-4,
                               atol=1e-5)


def _normalized_reference(feats, name):
  """float64 [Q, G] Euclidean distances of the L2-normalised embeddings,
  computed here from the features alone."""
  def unit(a):
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)
  q, g = unit(feats[f'query_{name}']), unit(feats[f'gallery_{name}'])
  return np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))


@pytest.mark.slow
def test_protocol_reaches_the_simulation_and_the_engine(setup):
  """With eval.normalize (the dataset configs' protocol) the simulation at
  the full budget scores as the evaluator does on normalised features, and
  the engine's answers are the normalised ranking, query for query; the raw
  ranking differs (so the test sees the protocol)."""
  from dare_jax.retrieval import protocol  # pylint: disable=g-import-not-at-top
  from tests import metrics_reference  # pylint: disable=g-import-not-at-top
  _, _, _, feats = setup
  proto = protocol.Protocol(normalize=True)
  ids = [feats[k] for k in ('query_pids', 'query_camids', 'gallery_pids',
                            'gallery_camids')]
  ref = _normalized_reference(feats, 'fused')
  want = metrics_reference.evaluate(ref, *ids, ranks=(1,))
  sim, = stream.simulate(feats, engine_lib.EXITS, COSTS, [COSTS[-1]],
                         'margin', proto=proto)
  assert sim['exit_fractions'] == [0, 0, 0, 1]
  np.testing.assert_allclose([sim['rank1'], sim['mAP']],
                             [want['rank1'], want['mAP']], rtol=1e-6)
  engine = _engine(setup, 'margin', COSTS[-1], 16, proto=proto)
  answers = _run(engine, setup, 8)
  assert {a.exit for a in answers} == {len(engine_lib.EXITS) - 1}
  for a in answers:
    np.testing.assert_array_equal(a.results,
                                  np.argsort(ref[a.index], kind='stable')[:5])
  raw = _run(_engine(setup, 'margin', COSTS[-1], 16), setup, 8)
  assert any((a.results != b.results).any() for a, b in zip(answers, raw))
  # Below the full budget the engine still chooses the simulation's exits.
  budget = (COSTS[0] + COSTS[-1]) / 2
  retrievals = stream.exit_retrievals(feats, engine_lib.EXITS, proto)
  conf = np.stack([retrievals[e].confidences('margin')
                   for e in engine_lib.EXITS[:-1]], axis=1)
  want_exits = exits_lib.route(conf, exits_lib.conditional(
      exits_lib.exit_fractions(COSTS, budget)))
  got = _run(_engine(setup, 'margin', budget, 16, proto=proto), setup, 16)
  np.testing.assert_array_equal([a.exit for a in got], want_exits)
