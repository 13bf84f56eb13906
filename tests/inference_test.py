"""Deployment: the ONNX and StableHLO forms equal the Flax forward, tools/embed
equals --mode=export, and embed + search work end to end from outside the
repository, on made-up images and on real CUHK01 crops."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import smoke
from dare_jax import errors
from dare_jax import eval_mode
from dare_jax.evaluation import rerank as rerank_lib
from dare_jax.budget import stream
from dare_jax.inference import engine as engine_lib
from dare_jax.inference import bundle as bundle_lib
from dare_jax.inference import gallery
from dare_jax.inference import images
from dare_jax.inference import streaming
from dare_jax.models import dare
from dare_jax.retrieval import exits as exits_lib
from dare_jax.retrieval import protocol as protocol_lib
from dare_jax.tools import export_bundle
from tests import checkpoints

# Its module-scoped fixtures are built once: all its tests on one xdist
# worker (.ci/run: --dist loadgroup).
pytestmark = pytest.mark.xdist_group('inference')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'data')
CUHK01 = os.path.join(SHARED, 'cuhk01', 'campus')


def _random_stats(v, seed):
  rng = np.random.default_rng(seed)

  def stat(path, x):
    if jax.tree_util.keystr(path).endswith("['var']"):
      return np.abs(rng.normal(1, 0.3, x.shape)).astype(np.float32)
    return rng.normal(0, 0.2, x.shape).astype(np.float32)
  v = jax.device_get(v)
  return {'params': v['params'],
          'batch_stats': jax.tree_util.tree_map_with_path(stat,
                                                          v['batch_stats'])}


# Small widths of both backbones; DenseNet needs 32x pooling room.
BACKBONES = {
    'resnet': (dict(block='basic', stage_sizes=(1, 1, 1, 1), width=4),
               (32, 16)),
    'densenet': (dict(block='', stage_sizes=(2, 2, 2, 2), width=8,
                      backbone='densenet', growth_rate=4), (64, 32)),
}


@pytest.mark.slow
@pytest.mark.parametrize('backbone', sorted(BACKBONES))
def test_onnx_and_stablehlo_equal_the_flax_forward(backbone, tmp_path):
  fields, hw = BACKBONES[backbone]
  model = dare.DaRe(head_hidden=16, embedding_dim=8, **fields)
  v = _random_stats(model.init(jax.random.key(0), jnp.zeros((1,) + hw + (3,)),
                               train=False), seed=1)
  x = np.random.default_rng(2).normal(size=(3,) + hw + (3,)).astype(
      np.float32)
  want = jax.device_get(model.apply(v, x, train=False))

  # ONNX in onnxruntime, at a batch size the export never saw.
  session = bundle_lib.onnx_session(bundle_lib.export_onnx(model, v, hw))
  assert [i.name for i in session.get_inputs()] == [bundle_lib.ONNX_INPUT]
  assert session.get_inputs()[0].shape[0] == 'B'  # a dynamic batch
  got = bundle_lib.onnx_forward(session)(x)
  assert set(got) == set(dare.EMBEDDINGS)
  for k in want:
    scale = np.abs(want[k]).max()
    np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * scale)

  # The jax.export artifact, reloaded in a fresh process (numpy and jax
  # only), at another batch size than traced.
  out = tmp_path / 'b'
  out.mkdir()
  np.savez(out / bundle_lib.PARAMS, **bundle_lib.flatten(v))
  (out / bundle_lib.STABLEHLO).write_bytes(
      bundle_lib.export_forward(model, v, hw))
  np.save(tmp_path / 'x.npy', x)
  proc = subprocess.run(
      [sys.executable, '-c', checkpoints.FRESH_PROCESS, str(out),
       str(tmp_path / 'x.npy'), str(tmp_path / 'y.npz')],
      capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
      check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == '', proc.stdout
  with np.load(tmp_path / 'y.npz') as y:
    for k in want:
      np.testing.assert_allclose(y[k], want[k], rtol=1e-5,
                                 atol=1e-5 * np.abs(want[k]).max())


# ----------------------------------------------------------------------------
# A folder dataset of made-up images and a bundle of a smoke-sized DaRe.


def _write_images(folder, names, seed, size=(40, 20)):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for n in names:
    px = rng.integers(0, 256, size + (3,), np.uint8)
    px[: size[0] // 2] //= 2  # some structure, so views differ
    Image.fromarray(px).save(os.path.join(folder, n))


@pytest.fixture(scope='module')
def made_up(tmp_path_factory):
  """(config, workdir, bundle dir, dataset root) with a trained-looking
  checkpoint (random weights, non-trivial BN statistics)."""
  tmp = tmp_path_factory.mktemp('made_up')
  root = str(tmp / 'data')
  # Market names: person, camera; PNGs at another size than the input, so
  # the resize and the 10 crops both matter.
  _write_images(os.path.join(root, 'bounding_box_train'),
                [f'{p:04d}_c{c}_{i}.png' for p in (1, 2) for c in (1, 2)
                 for i in range(2)], seed=0)
  _write_images(os.path.join(root, 'query'),
                [f'{p:04d}_c1_q.png' for p in (3, 4, 5)], seed=1)
  _write_images(os.path.join(root, 'bounding_box_test'),
                [f'{p:04d}_c2_{i}.png' for p in (3, 4, 5, 6) for i in range(2)],
                seed=2, size=(36, 18))
  config, workdir, _, _ = checkpoints.random_checkpoint(tmp)
  config = smoke.get_config()
  config.data.dataset = 'folder'
  config.data.root = root
  config.eval.batch_size = 8  # the query's batch is padded
  out = str(tmp / 'bundle')
  export_bundle.export(config, workdir, out)
  return config, workdir, out, root


@pytest.mark.slow
def test_embed_equals_mode_export(made_up, tmp_path):
  config, workdir, bundle_dir, root = made_up
  path = eval_mode.export_features(config, workdir)
  with np.load(path) as z:
    want = dict(z)
  for what, folder in (('query', 'query'), ('gallery', 'bounding_box_test')):
    out = str(tmp_path / f'{what}.npz')
    printed = gallery.embed_to_file(bundle_dir, os.path.join(root, folder), out,
                               batch=3, progress=False)
    assert printed['embedded'] == len(want[f'{what}_pids'])
    with np.load(out) as got:
      assert list(got['gallery_paths']) == sorted(
          os.path.join(root, folder, f)
          for f in os.listdir(os.path.join(root, folder)))
      for name in dare.EMBEDDINGS:
        w = want[f'{what}_{name}']
        np.testing.assert_allclose(got[f'gallery_{name}'], w, rtol=1e-5,
                                   atol=1e-5 * np.abs(w).max())
  # tta=1 (the whole image resized) differs from the 10-view mean, and the ONNX
  # runtime gives the tta=10 embeddings too.
  one = gallery.embed_to_file(bundle_dir, os.path.join(root, 'query'),
                         str(tmp_path / 'q1.npz'), tta=1, progress=False)
  assert one['tta'] == 1
  with np.load(tmp_path / 'q1.npz') as z1, \
      np.load(tmp_path / 'query.npz') as z10:
    assert np.abs(z1['gallery_fused'] - z10['gallery_fused']).max() > 1e-3
  gallery.embed_to_file(bundle_dir, os.path.join(root, 'query'),
                   str(tmp_path / 'qo.npz'), runtime='onnx', progress=False)
  with np.load(tmp_path / 'qo.npz') as zo:
    for name in dare.EMBEDDINGS:
      w = want[f'query_{name}']
      np.testing.assert_allclose(zo[f'gallery_{name}'], w, rtol=1e-4,
                                 atol=1e-4 * np.abs(w).max())
  # A tools/embed file from before the one schema (bare names, paths,
  # person, camera) reads as the same gallery.
  with np.load(tmp_path / 'query.npz') as z:
    old = {k[len('gallery_'):] if k.startswith('gallery_') else k: z[k]
           for k in z.files if k != 'protocol'}
  np.savez(tmp_path / 'old.npz', **old)
  new, legacy = gallery.load(str(tmp_path / 'query.npz')), gallery.load(
      str(tmp_path / 'old.npz'))
  assert legacy.inputs == new.inputs and legacy.bundle == new.bundle
  for name in dare.EMBEDDINGS:
    np.testing.assert_array_equal(legacy.embeddings[name],
                                  new.embeddings[name])


@pytest.mark.slow
def test_append_embeds_only_new_images(made_up, tmp_path):
  _, _, bundle_dir, root = made_up
  g = os.path.join(root, 'bounding_box_test')
  first = sorted(os.listdir(g))[:5]
  lst = tmp_path / 'first.txt'
  lst.write_text(''.join(os.path.join(g, f) + '\n' for f in first))
  out = str(tmp_path / 'g.npz')
  assert gallery.embed_to_file(bundle_dir, str(lst), out,
                          progress=False)['embedded'] == 5
  before = gallery.load(out)
  printed = gallery.embed_to_file(bundle_dir, g, out, append=True, progress=False)
  assert printed['embedded'] == len(os.listdir(g)) - 5
  assert printed['images'] == len(os.listdir(g))
  after = gallery.load(out)
  assert after.inputs.paths[:5] == before.inputs.paths
  for k in dare.EMBEDDINGS:  # old rows untouched, bit for bit
    np.testing.assert_array_equal(after.embeddings[k][:5],
                                  before.embeddings[k])
  # Appending the same images again embeds nothing.
  again = gallery.embed_to_file(bundle_dir, g, out, append=True, progress=False)
  assert again['embedded'] == 0 and again['images'] == len(os.listdir(g))
  # Whole-gallery embedding equals the appended file row for row.
  full = str(tmp_path / 'full.npz')
  gallery.embed_to_file(bundle_dir, g, full, progress=False)
  f = gallery.load(full)
  order = [f.inputs.paths.index(p) for p in after.inputs.paths]
  np.testing.assert_allclose(after.embeddings['fused'],
                             f.embeddings['fused'][order], rtol=1e-6,
                             atol=1e-6)


@pytest.mark.slow
def test_search_is_exact_and_ordered(made_up, tmp_path):
  _, _, bundle_dir, root = made_up
  b = bundle_lib.Bundle.load(bundle_dir)
  g_npz, q_npz = str(tmp_path / 'g.npz'), str(tmp_path / 'q.npz')
  gallery.embed_to_file(bundle_dir, os.path.join(root, 'bounding_box_test'),
                   g_npz, progress=False)
  gallery.embed_to_file(bundle_dir, os.path.join(root, 'query'), q_npz,
                   progress=False)
  out = gallery.search_files(bundle_dir, g_npz, q_npz, topk=4, exit_name='all',
                           json_out=str(tmp_path / 'r.json'), progress=False)
  assert json.loads((tmp_path / 'r.json').read_text()) == out
  g, q = gallery.load(g_npz, b), gallery.load(q_npz, b)
  assert len(out) == len(q) * len(b.embedding_names)
  for r in out:
    i = q.inputs.paths.index(r['query'])
    # float64 Euclidean distances, written out here.
    d = np.sqrt(((q.embeddings[r['exit']][i].astype(np.float64) -
                  g.embeddings[r['exit']].astype(np.float64))**2).sum(1))
    order = np.argsort(d, kind='stable')[:4]
    assert [h['path'] for h in r['results']] == [g.inputs.paths[j]
                                                 for j in order]
    np.testing.assert_allclose([h['distance'] for h in r['results']],
                               d[order], rtol=1e-4)
    assert all(h['person'] is None for h in r['results'])
  # Chunking the queries changes the order of nothing (a matmul of another
  # shape may round the last bit differently).
  idx1, d1 = gallery.search(q.embeddings['fused'], g.embeddings['fused'], 3)
  idx2, d2 = gallery.search(q.embeddings['fused'], g.embeddings['fused'], 3,
                            chunk=1)
  np.testing.assert_array_equal(idx1, idx2)
  np.testing.assert_allclose(d1, d2, rtol=1e-6)
  # Re-ranked search: the order of the re-ranked distances.
  with pytest.raises(errors.ConfigError, match='k1=20 needs at least 21'):
    gallery.search_files(bundle_dir, g_npz, q_npz, rerank=True, progress=False)
  opts = {'k1': 4, 'k2': 2, 'lambda_value': 0.3}
  idx, dist = gallery.search(q.embeddings['fused'], g.embeddings['fused'], 3,
                             proto=protocol_lib.Protocol(**opts), rerank=True)
  want = np.asarray(rerank_lib.rerank_features(
      q.embeddings['fused'], g.embeddings['fused'], **opts))
  np.testing.assert_array_equal(idx, np.argsort(want, 1, kind='stable')[:, :3])
  np.testing.assert_allclose(dist, np.sort(want, 1)[:, :3], rtol=1e-6)


def test_bad_inputs_say_what_to_do(made_up, tmp_path):
  _, _, bundle_dir, root = made_up
  empty = tmp_path / 'empty'
  (empty / 'sub').mkdir(parents=True)
  (empty / 'sub' / 'notes.txt').write_text('x')
  with pytest.raises(errors.DataError, match=r'no images.*\.jpg, \.jpeg'):
    images.read_inputs(str(empty))
  with pytest.raises(errors.DataNotFoundError, match='no such'):
    images.read_inputs(str(tmp_path / 'nope'))
  out = str(tmp_path / 'q.npz')
  gallery.embed_to_file(bundle_dir, os.path.join(root, 'query'), out,
                   progress=False)
  with pytest.raises(errors.ConfigError, match='--overwrite'):
    gallery.embed_to_file(bundle_dir, os.path.join(root, 'query'), out,
                     progress=False)
  # An npz of another dimension names both.
  z = dict(np.load(out))
  z.update({f'gallery_{k}': np.zeros((len(z['gallery_paths']), 5),
                                     np.float32) for k in dare.EMBEDDINGS})
  np.savez(tmp_path / 'd5.npz', **z)
  with pytest.raises(errors.DataError, match='dimension 5.*dimension 16'):
    gallery.search_files(bundle_dir, str(tmp_path / 'd5.npz'), out,
                       progress=False)
  with pytest.raises(errors.ConfigError,
                     match='stage1, stage2, stage3, stage4, fused'):
    gallery.search_files(bundle_dir, out, out, exit_name='stage9',
                       progress=False)
  (tmp_path / 'r.json').write_text('[]')
  with pytest.raises(errors.ConfigError, match='--overwrite'):
    gallery.search_files(bundle_dir, out, out, progress=False,
                       json_out=str(tmp_path / 'r.json'))
  # A broken image: named, or skipped and counted.
  bad = tmp_path / 'bad'
  _write_images(str(bad), ['a.png', 'c.png'], seed=5)
  (bad / 'b.jpg').write_bytes(b'not an image')
  with pytest.raises(errors.DataError, match=r'b\.jpg.*--bad_images=skip'):
    gallery.embed_to_file(bundle_dir, str(bad), str(tmp_path / 'x.npz'),
                     progress=False)
  printed = gallery.embed_to_file(bundle_dir, str(bad), str(tmp_path / 'x.npz'),
                             bad_images='skip', progress=False)
  assert (printed['embedded'], printed['skipped']) == (2, 1)
  assert not os.path.exists(tmp_path / 'x.tmp.npz')
  # A CSV with a bad integer names the line and the field.
  (tmp_path / 'l.csv').write_text('path,person,camera\na.png,1,0\nc.png,x,1\n')
  with pytest.raises(errors.DataError, match=r'l\.csv:3: person=.x'):
    images.read_inputs(str(tmp_path / 'l.csv'))
  # Features of another bundle are refused.
  z = dict(np.load(out))
  z['bundle'] = np.array('0' * 16)
  np.savez(tmp_path / 'other.npz', **z)
  with pytest.raises(errors.DataError, match='another bundle'):
    gallery.search_files(bundle_dir, str(tmp_path / 'other.npz'), out,
                       progress=False)


def _cli(tool, *args, cwd):
  return subprocess.run([sys.executable, '-m', f'dare_jax.tools.{tool}',
                         *args], cwd=cwd, capture_output=True, text=True,
                        timeout=600, check=False,
                        env={**os.environ, 'PYTHONPATH': ROOT})


def _check_cli_run(bundle_dir, gallery_in, query_in, tmp_path, labelled):
  """embed + search + figure through the CLIs, from a folder outside the
  repository."""
  cwd = tmp_path / 'elsewhere'
  cwd.mkdir()
  proc = _cli('embed', bundle_dir, gallery_in, '--out=g.npz', '--batch=8',
              cwd=str(cwd))
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = json.loads(proc.stdout)
  assert printed['embedded'] > 0
  assert 'images/s' in proc.stderr  # progress
  proc = _cli('search', bundle_dir, '--gallery=g.npz', f'--query={query_in}',
              '--topk=5', '--exit=all', '--json=r.json', '--figure=r.png',
              cwd=str(cwd))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads((cwd / 'r.json').read_text())
  assert out and all(len(r['results']) == 5 for r in out)
  assert {r['exit'] for r in out} == set(dare.EMBEDDINGS)
  assert out[0]['query'] in proc.stdout
  with Image.open(cwd / 'r.png') as im:
    assert im.size[0] > 200 and im.size[1] > 100
  if labelled:
    assert all(isinstance(h['person'], int) for r in out
               for h in r['results'])
  again = _cli('search', bundle_dir, '--gallery=g.npz', f'--query={query_in}',
               '--json=r.json', cwd=str(cwd))
  assert again.returncode == 1
  assert again.stderr.strip().splitlines()[-1].startswith('error:')
  assert '--overwrite' in again.stderr and 'Traceback' not in again.stderr
  return out


@pytest.mark.slow
def test_cli_end_to_end_on_made_up_images(made_up, tmp_path):
  _, _, bundle_dir, root = made_up
  _check_cli_run(bundle_dir, os.path.join(root, 'bounding_box_test'),
                 os.path.join(root, 'query'), tmp_path, labelled=False)


@pytest.mark.skipif(not os.path.isdir(CUHK01),
                    reason='../shared/data/cuhk01 is absent')
@pytest.mark.slow
def test_cli_end_to_end_on_cuhk01_crops(made_up, tmp_path):
  """Real 60x160 crops, labelled CSVs: camera B queries, camera A gallery."""
  _, _, bundle_dir, _ = made_up
  people = range(1, 13)

  def write(name, cams):
    with open(tmp_path / name, 'w', newline='') as f:
      w = csv.writer(f)
      w.writerow(['path', 'person', 'camera'])
      for p in people:
        for i in cams:
          w.writerow([os.path.join(CUHK01, f'{p:04d}{i:03d}.png'), p,
                      0 if i <= 2 else 1])
    return str(tmp_path / name)
  gallery_csv, query_csv = write('g.csv', (1, 2)), write('q.csv', (3,))
  out = _check_cli_run(bundle_dir, gallery_csv, query_csv, tmp_path,
                       labelled=True)
  assert len(out) == len(people) * len(dare.EMBEDDINGS)


def test_inference_imports_nothing_of_training():
  """inference/ and its tools: no train.py, builder, optimiser, checkpoint
  library, TensorFlow or configs/, and not the paper's simulation (budget/):
  the engine takes the exit rule from the retrieval core."""
  code = ('import sys\n'
          'import dare_jax.inference.bundle, dare_jax.inference.gallery\n'
          'import dare_jax.inference.images, dare_jax.figures.ranked\n'
          'import dare_jax.inference.engine, dare_jax.inference.streaming\n'
          'import dare_jax.tools.embed, dare_jax.tools.search\n'
          'print(",".join(sorted(m for m in sys.modules if m.startswith((\n'
          '    "dare_jax.train", "dare_jax.builder", "dare_jax.optim",\n'
          '    "dare_jax.budget", "tensorflow", "configs", "optax",\n'
          '    "orbax")))))\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, timeout=300, check=False, cwd='/',
                        env={**os.environ, 'PYTHONPATH': ROOT})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == ''


@pytest.mark.slow
@pytest.mark.parametrize('routing', ['distance', 'margin'])
def test_stream_exits_equal_tools_budgeted_on_embed_features(
    made_up, tmp_path, routing):
  """tools/stream really exits early; its exits equal the simulation's
  (budget/exits_lib.route, what tools.budgeted runs) on the features embed
  writes for the same images (queries at --tta=1: one view each, as the
  stream sees them), query for query, at batch 1 and 16."""
  _, _, bundle_dir, _ = made_up
  rng = np.random.default_rng(7)

  def labelled(name, n, seed):
    folder = tmp_path / name
    _write_images(str(folder), [f'{i:03d}.png' for i in range(n)], seed)
    with open(tmp_path / f'{name}.csv', 'w', newline='') as f:
      w = csv.writer(f)
      w.writerow(['path', 'person', 'camera'])
      for i in range(n):
        w.writerow([f'{name}/{i:03d}.png', int(rng.integers(1, 8)),
                    int(rng.integers(0, 3))])
    return str(tmp_path / f'{name}.csv')
  q_csv, g_csv = labelled('q', 24, 11), labelled('g', 30, 12)
  gallery.embed_to_file(bundle_dir, q_csv, str(tmp_path / 'q.npz'), tta=1,
                   progress=False)
  gallery.embed_to_file(bundle_dir, g_csv, str(tmp_path / 'g.npz'),
                   progress=False)
  b = bundle_lib.Bundle.load(bundle_dir)
  q, g = gallery.load(str(tmp_path / 'q.npz')), gallery.load(
      str(tmp_path / 'g.npz'))
  feats = {'query_pids': q.inputs.person, 'query_camids': q.inputs.camera,
           'gallery_pids': g.inputs.person, 'gallery_camids': g.inputs.camera}
  for side, f in (('query', q), ('gallery', g)):
    feats.update({f'{side}_{k}': v for k, v in f.embeddings.items()})
  costs = [b.exit_costs[e] for e in engine_lib.EXITS]
  budget = (costs[0] + costs[-1]) / 2
  retrievals = stream.exit_retrievals(feats, engine_lib.EXITS)
  conf = np.stack([retrievals[e].confidences(routing)
                   for e in engine_lib.EXITS[:-1]], axis=1)
  want = exits_lib.route(conf, exits_lib.conditional(
      exits_lib.exit_fractions(costs, budget)))
  assert len(set(want.tolist())) >= 2
  sim, = stream.simulate(feats, engine_lib.EXITS, costs, [budget], routing)
  runs = [(1, 'batch', 'jax'), (16, 'batch', 'jax'), (4, 'queued', 'jax')]
  if routing == 'distance':
    runs.append((8, 'queued', 'onnx'))
  for batch, mode, runtime in runs:
    out = streaming.stream_files(
        bundle_dir, str(tmp_path / 'g.npz'), q_csv, budget=budget,
        routing=routing, batch=batch, mode=mode, runtime=runtime, topk=3,
        progress=False, json_out=str(tmp_path / f's{batch}{mode}.json'))
    got = [engine_lib.EXITS.index(r['exit']) for r in out['queries']]
    np.testing.assert_array_equal(got, want)
    assert [r['path'] for r in out['queries']] == list(q.inputs.paths)
    s = out['summary']
    assert s['budget'] == budget and s['mean_latency_ms'] > 0
    np.testing.assert_allclose([s['rank1'], s['mAP']],
                               [sim['rank1'], sim['mAP']], rtol=1e-6)
    np.testing.assert_allclose(s['realized_cost'], sim['realized_cost'])
    np.testing.assert_allclose(
        s['exit_fractions'], np.bincount(want, minlength=4) / len(want))


@pytest.mark.slow
def test_stream_cli_deadline_and_errors(made_up, tmp_path):
  _, _, bundle_dir, root = made_up
  cwd = tmp_path / 'elsewhere'
  cwd.mkdir()
  gal = os.path.join(root, 'bounding_box_test')
  proc = _cli('stream', bundle_dir, f'--gallery={gal}',
              f'--queries={os.path.join(root, "query")}', '--deadline-ms=1e4',
              '--routing=distance', '--batch=2', '--json=s.json', cwd=str(cwd))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads((cwd / 's.json').read_text())
  assert json.loads(proc.stdout) == out['summary']
  assert len(out['queries']) == 3 and out['summary']['deadline_ms'] == 1e4
  # Ten seconds is time enough for every stage: the last exit answers.
  assert {q['exit'] for q in out['queries']} == {'fused'}
  assert all(q['latency_ms'] > 0 and len(q['results']) == 8
             for q in out['queries'])
  bad = _cli('stream', bundle_dir, f'--gallery={gal}', f'--queries={gal}',
             cwd=str(cwd))
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr
  assert '--budget=MUL_ADDS or --deadline-ms' in bad.stderr
  # Margin routing, asked for, on a gallery without person ids (the default,
  # auto, takes distance there: tests/mistakes_test.py).
  margin = _cli('stream', bundle_dir, f'--gallery={gal}', f'--queries={gal}',
                '--budget=1e9', '--routing=margin', cwd=str(cwd))
  assert margin.returncode == 1 and '--routing=distance' in margin.stderr


@pytest.mark.slow
def test_full_budget_stream_answers_as_search(made_up, tmp_path):
  """At a budget >= C_4 the engine answers every query with the fused
  embedding, ranked under the bundle's protocol: its top-1 equals
  tools/search's (queries at --tta=1, the stream's one view) for every
  query. The bundle says eval.normalize=True (the dataset configs'
  protocol), and the raw ranking answers some query differently, so the
  test sees the protocol."""
  _, _, bundle_dir, root = made_up
  nb = str(tmp_path / 'bundle')
  shutil.copytree(bundle_dir, nb)
  with open(os.path.join(nb, 'bundle.json')) as f:
    meta = json.load(f)
  meta['search']['normalize'] = True
  with open(os.path.join(nb, 'bundle.json'), 'w') as f:
    json.dump(meta, f)
  folder = str(tmp_path / 'crops')
  _write_images(folder, [f'{i:03d}.png' for i in range(40)], seed=21,
                size=(30, 14))
  g_npz = str(tmp_path / 'g.npz')
  gallery.embed_to_file(nb, folder, g_npz, progress=False)
  queries = os.path.join(root, 'bounding_box_test')
  q_npz = str(tmp_path / 'q.npz')
  gallery.embed_to_file(nb, queries, q_npz, tta=1, progress=False)
  b = bundle_lib.Bundle.load(nb)
  searched = gallery.search_files(nb, g_npz, q_npz, topk=1, progress=False)
  streamed = streaming.stream_files(
      nb, g_npz, queries, budget=b.exit_costs['fused'] * 2,
      routing='distance', batch=4, topk=1, progress=False)
  assert [r['exit'] for r in streamed['queries']] == ['fused'] * 8
  got = {r['path']: r['results'][0]['path'] for r in streamed['queries']}
  want = {r['query']: r['results'][0]['path'] for r in searched}
  assert len(want) == 8 and got == want
  # The raw ranking (the defaults) differs for some query.
  q, g = gallery.load(q_npz), gallery.load(g_npz)
  raw = np.argmin(protocol_lib.Protocol().distances(
      q.embeddings['fused'], g.embeddings['fused']), axis=1)
  assert [g.inputs.paths[i] for i in raw] != [want[p] for p in q.inputs.paths]
