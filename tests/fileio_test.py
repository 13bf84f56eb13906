"""gs:// workdirs, features files and bundles (dare_jax/fileio.py), on the
offline stand-in of tests/fake_gcs.py: what lands in the bucket is read
back from disk and compared with what the local path gives. A local `gs:`
folder in the working directory would mean a path went through os instead
of etils.epath; every test checks there is none."""

import json
import os
import subprocess

import numpy as np
import pytest

from configs import smoke
from dare_jax import checkpointing
from dare_jax import errors
from dare_jax import fileio
from dare_jax import train
from dare_jax.budget import report
from dare_jax.retrieval import features as features_lib
from dare_jax.retrieval import protocol as protocol_lib
from dare_jax.inference import bundle as bundle_lib
from dare_jax.tools import export_bundle
from tests import fake_gcs as fake_gcs_lib
from tests.fake_gcs import fake_gcs  # pylint: disable=unused-import

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PNG = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(autouse=True)
def _no_local_gs_folder(tmp_path, monkeypatch):
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  yield
  assert not os.listdir(cwd), f'written locally: {os.listdir(cwd)}'


def test_paths():
  assert fileio.is_remote('gs://b/x') and not fileio.is_remote('/b/x')
  assert fileio.join('gs://b/run/', 'tb', 'x') == 'gs://b/run/tb/x'
  assert fileio.join('runs', 'x') == os.path.join('runs', 'x')
  assert fileio.absolute('gs://b/run') == 'gs://b/run'
  assert fileio.absolute('run') == os.path.join(os.getcwd(), 'run')
  assert fileio.basename('gs://b/run/') == 'run'


@pytest.mark.parametrize('where', ['gs', 'local'])
def test_files_round_trip(fake_gcs, tmp_path, where):  # pylint: disable=redefined-outer-name
  base = 'gs://bucket/d' if where == 'gs' else str(tmp_path / 'local' / 'd')
  disk = os.path.join(fake_gcs, 'bucket', 'd') if where == 'gs' else base
  fileio.makedirs(base)
  assert fileio.isdir(base) or where == 'gs'  # a bucket has no folders
  arrays = {'a': np.arange(6, dtype=np.float32).reshape(2, 3),
            'ids': np.array([3, -1], np.int64)}
  fileio.save_npz(fileio.join(base, 'f.npz'), arrays)
  fileio.write_text(fileio.join(base, 'm.json'), '{"x": 1}')
  assert fileio.isfile(fileio.join(base, 'f.npz'))
  assert not fileio.exists(fileio.join(base, 'nothing.npz'))
  assert fileio.is_zipfile(fileio.join(base, 'f.npz'))
  assert not fileio.is_zipfile(fileio.join(base, 'm.json'))
  with fileio.open_npz(fileio.join(base, 'f.npz')) as z:
    for k, v in arrays.items():
      np.testing.assert_array_equal(z[k], v)
  with np.load(os.path.join(disk, 'f.npz')) as z:  # what is on the store
    np.testing.assert_array_equal(z['a'], arrays['a'])
  assert json.load(open(os.path.join(disk, 'm.json'))) == {'x': 1}
  # Nothing but the files themselves (no temporary left behind).
  assert sorted(os.listdir(disk)) == ['f.npz', 'm.json']


@pytest.mark.parametrize('where', ['gs', 'local'])
def test_append_log_keeps_every_line_across_a_resume(fake_gcs, tmp_path,  # pylint: disable=redefined-outer-name
                                                     where):
  p = ('gs://bucket/train_log.jsonl' if where == 'gs' else
       str(tmp_path / 'train_log.jsonl'))
  disk = (os.path.join(fake_gcs, 'bucket', 'train_log.jsonl')
          if where == 'gs' else p)
  log = fileio.AppendLog(p, flush_every_s=1e9)
  log.write_line('1')
  log.write_line('2')
  log.flush()
  assert open(disk).read() == '1\n2\n'
  log.write_line('3')
  log.close()
  resumed = fileio.AppendLog(p, flush_every_s=0.0)  # every line written
  resumed.write_line('4')
  assert open(disk).read() == '1\n2\n3\n4\n'
  resumed.close()


@pytest.mark.slow
def test_train_evaluate_budget_and_bundle_on_gs(fake_gcs, tmp_path,  # pylint: disable=redefined-outer-name
                                                monkeypatch):
  # Checkpoints stay local here: Orbax writes gs:// with TensorStore's own
  # GCS client, which the stand-in cannot serve (fake_gcs.py).
  real_manager = checkpointing.manager
  monkeypatch.setattr(
      checkpointing, 'manager',
      lambda workdir, *a, **k: real_manager(str(tmp_path / 'ckpt'), *a, **k))
  config = smoke.get_config()
  config.data.cache_dir = str(tmp_path / 'cache')
  config.train.num_steps, config.train.log_every = 4, 1
  workdir = 'gs://bucket/runs/smoke'
  disk = os.path.join(fake_gcs, 'bucket', 'runs', 'smoke')
  results = train.train_and_evaluate(config, workdir)

  written = sorted(os.listdir(disk))
  for name in ('metrics.json', 'features.npz', 'train_log.jsonl',
               'training.png', 'exits.png', 'ranked_lists.png'):
    assert name in written, (name, written)
  metrics = json.load(open(os.path.join(disk, 'metrics.json')))
  assert metrics['fused']['mAP'] == pytest.approx(results['fused']['mAP'])
  steps = [json.loads(l)['step'] for l in open(
      os.path.join(disk, 'train_log.jsonl'))]
  assert steps == [1, 2, 3, 4]
  for png in ('training.png', 'exits.png', 'ranked_lists.png'):
    assert open(os.path.join(disk, png), 'rb').read(8) == PNG
  # The features file read through gs:// is the one on the store, and
  # scores as metrics.json says.
  remote = features_lib.load_features(fileio.join(workdir, 'features.npz'))
  with np.load(os.path.join(disk, 'features.npz')) as z:
    assert sorted(remote) == sorted(z.files)
    for k in z.files:
      np.testing.assert_array_equal(remote[k], z[k])
  scored = protocol_lib.Protocol.of_run(remote, 'remote').evaluate(
      remote, ['fused'])
  assert scored['fused']['mAP'] == pytest.approx(metrics['fused']['mAP'])

  # --mode=budget reads the gs:// features and writes its report there.
  report.budget_mode(config, workdir)
  budget = json.load(open(os.path.join(disk, report.REPORT)))
  assert set(budget['exit_costs']) >= {'stage1', 'fused'}
  assert open(os.path.join(disk, 'fig5_anytime.png'), 'rb').read(8) == PNG

  # A bundle written to gs:// and loaded from it is the same bundle as the
  # files on the store loaded as a local folder.
  out = 'gs://bucket/bundles/smoke'
  printed = export_bundle.export(config, workdir, out)
  assert printed['bundle'] == out
  on_disk = os.path.join(fake_gcs, 'bucket', 'bundles', 'smoke')
  assert sorted(os.listdir(on_disk)) == sorted(bundle_lib.FILES)
  remote_b = bundle_lib.Bundle.load(out)
  local_b = bundle_lib.Bundle.load(on_disk)
  assert remote_b.fingerprint == local_b.fingerprint
  assert remote_b.meta['provenance']['workdir'] == workdir
  h, w = remote_b.input_hw
  x = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)
  ref = local_b.forward(x)
  for runtime in ('jax', 'onnx'):
    got = remote_b.with_runtime(runtime).forward(x)
    for k in ref:
      np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5)
  exported = remote_b.exported()
  assert exported.in_avals  # the StableHLO artefact deserialised from gs://
  with pytest.raises(errors.ConfigError, match='already holds a bundle'):
    export_bundle.export(config, workdir, out)


@pytest.mark.slow
def test_evaluate_features_cli_reads_gs(fake_gcs):  # pylint: disable=redefined-outer-name
  rng = np.random.default_rng(0)
  feats = {'query_fused': rng.normal(size=(6, 8)).astype(np.float32),
           'gallery_fused': rng.normal(size=(20, 8)).astype(np.float32),
           'query_pids': np.arange(6) % 3 + 1,
           'query_camids': np.zeros(6, np.int64),
           'gallery_pids': np.arange(20) % 3 + 1,
           'gallery_camids': np.ones(20, np.int64)}
  os.makedirs(os.path.join(fake_gcs, 'bucket'))
  local = os.path.join(fake_gcs, 'bucket', 'features.npz')
  np.savez(local, **feats)
  env = dict(os.environ, PYTHONPATH=REPO)
  module = 'dare_jax.tools.evaluate_features'

  def run(*args):
    return subprocess.run(fake_gcs_lib.cli(fake_gcs, module, *args), env=env,
                          capture_output=True, text=True, timeout=180)
  remote, on_disk = run('gs://bucket/features.npz'), run(local)
  assert remote.returncode == 0, remote.stderr
  assert json.loads(remote.stdout) == json.loads(on_disk.stdout)
  missing = run('gs://bucket/nothing.npz')
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines()[-1] == (
      'error: Features file not found: gs://bucket/nothing.npz')
