"""Benchmark: CMC/mAP and k-reciprocal re-ranking, JAX against NumPy.

  python -m dare_jax.bench.evaluation [--quick] [--gallery=N] [--json=PATH]

Synthetic Market-1501-sized data (3,368 queries x 15,913 gallery, D=128):
~1,500 identities, each a random centre plus Gaussian noise, random cameras,
a few percent distractors (pid 0) and junk (pid -1) in the gallery, so CMC,
mAP and the neighbour sets behave like a real re-ID embedding's (plain mAP
~0.5, rank-1 ~0.85). Two parts:
  (a) CMC + mAP: metrics.evaluate_features (distances included; cold = first
      call with compilation, warm = second) against a vectorised NumPy
      implementation of the same protocol written here;
  (b) re-ranking: rerank.rerank_features against the authors' dense NumPy
      re_ranking (dare_jax/references/authors_rerank.py, the transcription
      the tests check against, with progress output), at full size
      when the machine has the memory for the authors' N x N arrays.
Both report wall time, peak memory and the largest difference between the
two results. Peak memory: on CPU the growth of the process's resident set
over the run (sampled every 5 ms); on an accelerator JAX's
peak_bytes_in_use (since process start).
"""

from __future__ import annotations

import os
import resource
import threading
import time

from absl import app
from absl import flags
import jax
import numpy as np

from dare_jax import console
from dare_jax import reporting
from dare_jax.evaluation import metrics
from dare_jax.evaluation import rerank
from dare_jax.references import authors_rerank

MARKET = dict(num_q=3368, num_g=15913, dim=128, num_ids=1500)
QUICK = dict(num_q=300, num_g=1500, dim=64, num_ids=150)
NOISE = 1.4  # Plain mAP ~0.5 at Market size; re-ranking has room to help.
K1, K2, LAMBDA = 20, 6, 0.3


# ----------------------------------------------------------------------------
# Data.


def make_dataset(num_q, num_g, dim, num_ids, noise=NOISE, seed=0,
                 distractor_fraction=0.05, junk_fraction=0.03):
  """Clustered features with Market-style ids and cameras (6 cameras)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_ids + 1, dim)).astype(np.float32)
  q_pids = rng.integers(1, num_ids + 1, num_q)
  g_pids = rng.integers(1, num_ids + 1, num_g)
  q = centres[q_pids] + noise * rng.normal(size=(num_q, dim)).astype(
      np.float32)
  g = centres[g_pids] + noise * rng.normal(size=(num_g, dim)).astype(
      np.float32)
  special = rng.permutation(num_g)
  n_dis = int(distractor_fraction * num_g)
  n_junk = int(junk_fraction * num_g)
  # Distractors and junk: features of no identity.
  g[special[:n_dis + n_junk]] = rng.normal(
      size=(n_dis + n_junk, dim)).astype(np.float32) * np.sqrt(1 + noise ** 2)
  g_pids[special[:n_dis]] = 0
  g_pids[special[n_dis:n_dis + n_junk]] = -1
  q_cams = rng.integers(0, 6, num_q)
  g_cams = rng.integers(0, 6, num_g)
  return q, g, q_pids, q_cams, g_pids, g_cams


# ----------------------------------------------------------------------------
# NumPy baselines.


def numpy_distances(q, g, dtype=np.float32, chunk=2048):
  """Euclidean distances [Q, G], expanded form with centring, in chunks."""
  centre = g.astype(dtype).mean(axis=0)
  q = q.astype(dtype) - centre
  g = g.astype(dtype) - centre
  g2 = (g * g).sum(axis=1)
  out = np.empty((len(q), len(g)), np.float32)
  for s in range(0, len(q), chunk):
    qc = q[s:s + chunk]
    d = (qc * qc).sum(axis=1)[:, None] + g2[None, :] - 2.0 * (qc @ g.T)
    out[s:s + chunk] = np.sqrt(np.maximum(d, 0.0))
  return out


def numpy_evaluate(dist, q_pids, q_cams, g_pids, g_cams, ranks=(1, 5, 10),
                   chunk=256):
  """Market-1501 protocol (market AP), vectorised over query chunks; which
  entries are dropped is metrics.removal_mask's (the protocol's one rule).

  Returns (summary dict, per-query AP [Q], valid [Q]).
  """
  num_q, num_g = dist.shape
  first = np.full(num_q, -1, np.int64)
  ap = np.zeros(num_q, np.float64)
  for s in range(0, num_q, chunk):
    e = min(s + chunk, num_q)
    order = np.argsort(dist[s:e], axis=1, kind='stable')
    same_pid, removed = metrics.removal_mask(q_pids[s:e], q_cams[s:e],
                                             g_pids[order], g_cams[order])
    good = same_pid & ~removed
    rank = np.cumsum(~removed, axis=1)  # 1-based among kept entries.
    hit = np.cumsum(good, axis=1)
    n_good = hit[:, -1]
    # Rank is 0 before the first kept entry; only good (kept) entries are
    # read, the clamp just avoids dividing by zero elsewhere.
    r = np.maximum(rank, 1).astype(np.float64)
    k = hit.astype(np.float64)
    prev = np.where(rank > 1, (k - 1) / np.maximum(r - 1, 1), 1.0)
    terms = np.where(good, 0.5 * (prev + k / r), 0.0)
    valid = n_good > 0
    ap[s:e] = np.where(valid, terms.sum(axis=1) / np.maximum(n_good, 1), 0.0)
    fr = np.where(good, rank, num_g + 1).min(axis=1) - 1
    first[s:e] = np.where(valid, fr, -1)
  valid = first >= 0
  out = {f'rank{k}': float(np.mean(first[valid] < k)) for k in ranks}
  out['mAP'] = float(ap[valid].mean())
  out['num_valid_queries'] = int(valid.sum())
  return out, ap, valid


# ----------------------------------------------------------------------------
# Measuring.


def _rss_bytes() -> int:
  try:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
  except OSError:  # No procfs: the lifetime peak is the best there is.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _available_bytes() -> int:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


class PeakMemory:
  """Peak memory growth over a `with` block.

  CPU: resident set size sampled every 5 ms, minus its value at entry.
  Accelerator: JAX's peak_bytes_in_use (a process-lifetime peak).
  """

  def __init__(self):
    self.on_device = jax.default_backend() != 'cpu'
    self.peak_bytes = 0

  def __enter__(self):
    self._start = _rss_bytes()
    self._peak = self._start
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self._thread.start()
    return self

  def _poll(self):
    while not self._stop.wait(0.005):
      self._peak = max(self._peak, _rss_bytes())

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self._peak = max(self._peak, _rss_bytes())
    if self.on_device:
      stats = jax.devices()[0].memory_stats() or {}
      self.peak_bytes = int(stats.get('peak_bytes_in_use', 0))
    else:
      self.peak_bytes = self._peak - self._start
    return False


def _timed(fn):
  with PeakMemory() as mem:
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    seconds = time.perf_counter() - start
  return out, seconds, mem.peak_bytes


def _log(msg):
  print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


# ----------------------------------------------------------------------------
# The benchmark.


def bench_cmc(data):
  q, g, qp, qc, gp, gc = data
  res = {}
  for tag in ('cold', 'warm'):
    _log(f'CMC/mAP JAX ({tag})')
    out, sec, mem = _timed(
        lambda: metrics.evaluate_features(q, g, qp, qc, gp, gc))
    res[f'jax_{tag}'] = dict(seconds=sec, peak_bytes=mem, metrics=out)
  _log('CMC/mAP NumPy')

  def run_numpy():
    return numpy_evaluate(numpy_distances(q, g), qp, qc, gp, gc)
  (np_summary, np_ap, np_valid), sec, mem = _timed(run_numpy)
  res['numpy'] = dict(seconds=sec, peak_bytes=mem, metrics=np_summary)
  jax_summary = res['jax_warm']['metrics']
  per_q = metrics.evaluate_per_query(
      metrics.pairwise_distances(q, g), qp, qc, gp, gc)
  res['max_abs_diff_summary'] = max(
      abs(jax_summary[k] - np_summary[k]) for k in ('rank1', 'rank5',
                                                    'rank10', 'mAP'))
  res['max_abs_diff_per_query_ap'] = float(
      np.abs(per_q['ap'] - np_ap).max())
  res['valid_queries_agree'] = bool(np.array_equal(per_q['valid'], np_valid))
  return res


def bench_rerank(data, run_authors, argsort_kind=None):
  q, g, qp, qc, gp, gc = data
  res = {}
  for tag in ('cold', 'warm'):
    _log(f're-ranking JAX ({tag})')
    stats = {}
    ours, sec, mem = _timed(
        lambda: rerank.rerank_features(q, g, K1, K2, LAMBDA, stats=stats))
    res[f'jax_{tag}'] = dict(seconds=sec, peak_bytes=mem, stats=stats)
  ours = np.asarray(ours)
  plain = metrics.evaluate_ranking(metrics.pairwise_distances(q, g), qp, qc,
                                   gp, gc)
  res['plain_metrics'] = plain
  res['jax_metrics'] = metrics.evaluate_ranking(ours, qp, qc, gp, gc)
  if not run_authors:
    return res
  _log('authors\' NumPy re-ranking: distances (float64, stored float32)')
  start = time.perf_counter()
  d_qg = numpy_distances(q, g, np.float64)
  d_qq = numpy_distances(q, q, np.float64)
  d_gg = numpy_distances(g, g, np.float64)
  res['numpy_distance_seconds'] = time.perf_counter() - start
  t0 = time.perf_counter()
  theirs, sec, mem = _timed(lambda: authors_rerank.re_ranking(
      d_qg, d_qq, d_gg, K1, K2, LAMBDA, argsort_kind=argsort_kind,
      progress=lambda m: _log(f'  authors: {m} '
                              f'({time.perf_counter() - t0:.0f} s)')))
  res['numpy'] = dict(seconds=sec, peak_bytes=mem)
  diff = np.abs(theirs - ours)
  res['max_abs_diff'] = float(diff.max())
  res['fraction_over_1e-5'] = float(np.mean(diff > 1e-5))
  res['numpy_metrics'] = metrics.evaluate_ranking(theirs, qp, qc, gp, gc)
  # Features -> float32 distances in JAX and float64 distances in NumPy
  # can order two near-equal neighbours differently, which moves whole
  # k-reciprocal sets; given the very same distances the two must agree.
  _log('re-ranking JAX from the authors\' distances (dense input)')
  ours_dense, sec, mem = _timed(lambda: rerank.rerank_distances(
      d_qg, d_qq, d_gg, K1, K2, LAMBDA))
  del d_qg, d_qq, d_gg
  res['jax_dense'] = dict(seconds=sec, peak_bytes=mem)
  res['max_abs_diff_same_distances'] = float(
      np.abs(np.asarray(ours_dense) - theirs).max())
  return res


def _mb(b):
  return f'{b / 2**20:9.0f}'


def print_table(result):
  cfg = result['config']
  print()
  print(f"device: {result['device']}; Q={cfg['num_q']} G={cfg['num_g']} "
        f"D={cfg['dim']} ids={cfg['num_ids']}; load average "
        f"{result['load_before']} -> {result['load_after']}")
  cmc = result['cmc']
  print('\n(a) CMC + mAP (distances included)')
  print(f"{'':22s}{'seconds':>9s}{'peak MB':>10s}  rank1   rank5   rank10  mAP")
  for key, name in (('jax_cold', 'JAX cold (compile)'), ('jax_warm',
                                                         'JAX warm'),
                    ('numpy', 'NumPy')):
    r = cmc[key]
    m = r['metrics']
    print(f"{name:22s}{r['seconds']:9.2f}{_mb(r['peak_bytes'])}  "
          f"{m['rank1']:.4f}  {m['rank5']:.4f}  {m['rank10']:.4f}  "
          f"{m['mAP']:.4f}")
  print(f"max |JAX - NumPy|: summary {cmc['max_abs_diff_summary']:.2e}, "
        f"per-query AP {cmc['max_abs_diff_per_query_ap']:.2e}")
  rr = result['rerank']
  print(f'\n(b) re-ranking (k1={K1}, k2={K2}, lambda={LAMBDA})')
  print(f"{'':22s}{'seconds':>9s}{'peak MB':>10s}  rank1   mAP")
  p = rr['plain_metrics']
  print(f"{'(no re-ranking)':22s}{'':9s}{'':10s}  {p['rank1']:.4f}  "
        f"{p['mAP']:.4f}")
  for key, name in (('jax_cold', 'JAX cold (compile)'),
                    ('jax_warm', 'JAX warm')):
    r = rr[key]
    m = rr['jax_metrics']
    print(f"{name:22s}{r['seconds']:9.2f}{_mb(r['peak_bytes'])}  "
          f"{m['rank1']:.4f}  {m['mAP']:.4f}")
  if 'numpy' in rr:
    m = rr['numpy_metrics']
    print(f"{'authors NumPy':22s}{rr['numpy']['seconds']:9.2f}"
          f"{_mb(rr['numpy']['peak_bytes'])}  {m['rank1']:.4f}  "
          f"{m['mAP']:.4f}")
    print(f"max |ours - authors|: {rr['max_abs_diff']:.2e} "
          f"(entries over 1e-5: {rr['fraction_over_1e-5']:.2e}); authors' "
          f"input distances took {rr['numpy_distance_seconds']:.1f} s more")
    r = rr['jax_dense']
    print(f"{'JAX, dense input':22s}{r['seconds']:9.2f}{_mb(r['peak_bytes'])}"
          f"  (authors' distances; compile included)")
    print(f"max |ours(dense input) - authors|: "
          f"{rr['max_abs_diff_same_distances']:.2e} (authors' argsort: "
          f"{result['authors_argsort']}; with float32 distance ties at a "
          "k boundary only 'stable' picks the same neighbours as ours)")
  else:
    print('authors NumPy: skipped (' + rr.get('authors_skipped', '') + ')')
  s = rr['jax_warm']['stats']
  print('JAX stages (warm, s): ' + ', '.join(
      f'{k} {v:.2f}' for k, v in s['seconds'].items()))
  print(f"sparse sizes: set width {s['set_width']}, after query expansion "
        f"{s['expanded_width']}, index entries {s['index_entries']}, "
        f"column length mean {s['mean_column']:.1f} / max "
        f"{s['longest_column']}, Jaccard visits {s['visits']}")


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined when run as a program, so that importing
  this module, as bench/compile_cache.py does, defines none)."""
  flags.DEFINE_bool('quick', False, 'a small problem, for smoke checks')
  flags.DEFINE_integer('gallery', None,
                       'gallery size (identities scale with it)',
                       lower_bound=1)
  flags.DEFINE_integer('queries', None, 'number of queries', lower_bound=1)
  flags.DEFINE_enum('authors', 'auto', ('auto', 'yes', 'no'),
                    "run the authors' dense NumPy re-ranking (auto: when its "
                    'N x N arrays fit in memory)')
  flags.DEFINE_enum('authors-argsort', 'default', ('default', 'stable'),
                    "the authors' argsort: their default quicksort, or stable "
                    '(ties by index, like ours)')
  flags.DEFINE_string('json', None, 'write the results here')


def run(quick=False, gallery=None, queries=None, authors='auto',
        authors_argsort='default', json_path=None):
  """The benchmark with the command line's options; returns its results."""
  cfg = dict(QUICK if quick else MARKET)
  base_g = cfg['num_g']
  if gallery:
    cfg['num_g'] = gallery
    cfg['num_ids'] = max(1, round(cfg['num_ids'] * gallery / base_g))
  if queries:
    cfg['num_q'] = queries
  n = cfg['num_q'] + cfg['num_g']
  # The authors hold ~6 N x N 4-byte arrays at once (distances, V, V_qe,
  # the int64 argsort and its int32 copy) besides the inputs.
  authors_bytes = 8 * 4 * n * n
  run_authors = (authors == 'yes' or
                 (authors == 'auto' and
                  authors_bytes < 0.8 * _available_bytes()))

  result = dict(config=cfg, device=str(jax.devices()[0]),
                backend=jax.default_backend(), noise=NOISE,
                load_before=[round(x, 2) for x in os.getloadavg()])
  _log(f'data: {cfg}')
  data = make_dataset(**cfg)
  result['cmc'] = bench_cmc(data)
  result['rerank'] = bench_rerank(
      data, run_authors,
      None if authors_argsort == 'default' else authors_argsort)
  result['authors_argsort'] = authors_argsort
  if not run_authors:
    result['rerank']['authors_skipped'] = (
        f'needs ~{authors_bytes / 2**30:.0f} GiB' if authors == 'auto'
        else '--authors=no')
  result['load_after'] = [round(x, 2) for x in os.getloadavg()]
  print_table(result)
  if json_path:
    reporting.write_json(json_path, result)
    _log(f'wrote {json_path}')
  return result


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  run(FLAGS.quick, FLAGS.gallery, FLAGS.queries, FLAGS.authors,
      FLAGS['authors-argsort'].value, FLAGS.json)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
