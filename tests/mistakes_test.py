"""The mistakes a new user still hit (issue 25), through the real command
lines: each gets one `error:` line (the thing, the fix) before any work, or
does the right thing, and nothing a run wrote is overwritten unasked."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from dare_jax.inference import bundle as bundle_lib
from dare_jax.tools import export_bundle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Its module-scoped bundle is built once: all its tests on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('mistakes')]


def _run(args, cwd=REPO, env=None, timeout=300):
  return subprocess.run([sys.executable, '-m', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **(env or {})})


def _one_error(proc, *words):
  """The process failed with exactly one `error:` line holding `words`, and
  no traceback."""
  assert proc.returncode != 0, proc.stdout[-1000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  errors_ = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors_) == 1, proc.stderr[-3000:]
  for w in words:
    assert w in errors_[0], (w, errors_[0])
  return errors_[0]


def _main(workdir, *args, config='configs/smoke.py'):
  return ['dare_jax.main', f'--config={config}', f'--workdir={workdir}',
          *args]


def _crops(folder, n, seed, size=(40, 20)):
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, size + (3,), np.uint8)).save(
        os.path.join(folder, f'{i:03d}.png'))
  return str(folder)


@pytest.fixture(scope='module', name='bundle')
def bundle_fixture(smoke_run, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('bundle') / 'b')
  export_bundle.export(smoke_run.config(), smoke_run.workdir, out)
  return out


def test_eval_under_other_settings_never_overwrites_the_run(
    smoke_run, tmp_path):
  run = shutil.copytree(smoke_run.workdir, str(tmp_path / 'run'))
  before = {f: open(os.path.join(run, f), 'rb').read()
            for f in ('metrics.json', 'features.npz')}
  r = _run(_main(run, '--mode=eval', '--config.data.input_size=(40,20)'))
  _one_error(r, 'data.input_size', 'run [32, 16]', '--eval_name=NAME')
  r = _run(_main(run, '--mode=export', '--config.eval.tta=False'))
  _one_error(r, 'eval.tta')
  for f, data in before.items():
    assert open(os.path.join(run, f), 'rb').read() == data, f
  # Asked for: written beside the run's files, which stay as they were.
  r = _run(_main(run, '--mode=eval', '--config.data.input_size=(40,20)',
                 '--eval_name=big'))
  assert r.returncode == 0, r.stderr[-2000:]
  assert os.path.isfile(os.path.join(run, 'metrics_big.json'))
  assert os.path.isfile(os.path.join(run, 'features_big.npz'))
  for f, data in before.items():
    assert open(os.path.join(run, f), 'rb').read() == data, f
  # Re-ranking on adds its numbers and changes none: not refused.
  r = _run(_main(run, '--mode=eval', '--config.eval.rerank=True',
                 '--config.eval.k1=4', '--config.eval.k2=2'))
  assert r.returncode == 0, r.stderr[-2000:]


def test_unwritable_workdirs_are_named_before_any_work(tmp_path, smoke_run):
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  for workdir, words in ((a_file, ('is a file',)),
                         (a_file / 'sub', ('is a file', 'below it')),
                         ('/proc/dare_jax_x', ('cannot write',))):
    _one_error(_run(_main(workdir)), '--workdir', *words)
  # An existing run in a folder that cannot be written: refused before the
  # evaluation (which used to run, then crash writing metrics.json).
  if os.geteuid() != 0:  # root writes through permissions
    run = shutil.copytree(smoke_run.workdir, str(tmp_path / 'ro'))
    os.chmod(run, 0o555)
    try:
      _one_error(_run(_main(run, '--mode=eval')), 'not writable')
    finally:
      os.chmod(run, 0o755)


def test_config_checks_run_before_training_and_together(tmp_path):
  r = _run(_main(tmp_path / 'w', '--config.eval.batch_size=-8'))
  _one_error(r, 'eval.batch_size=-8')
  assert not os.path.exists(tmp_path / 'w')
  # P x K = 4 x 2 and eval.batch_size 8 over 3 devices: both at once.
  r = _run(_main(tmp_path / 'w3'), env={
      'XLA_FLAGS': '--xla_force_host_platform_device_count=3'})
  _one_error(r, 'train.P x train.K', 'eval.batch_size=8', '3 devices')
  # A dataset config without data.root and without weights: both named.
  r = _run(_main(tmp_path / 'mk', config='configs/market.py'))
  lines = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert r.returncode != 0 and len(lines) == 2, r.stderr[-2000:]
  assert 'data.root' in lines[0] and 'model.pretrained' in lines[1]
  assert not os.path.exists(tmp_path / 'mk')  # no empty checkpoints folder


def test_budget_mode_with_another_config_is_refused(smoke_run):
  r = _run(_main(smoke_run.workdir, '--mode=budget',
                 config='configs/synthetic.py'))
  assert r.returncode != 0 and 'Traceback' not in r.stderr
  assert 'error:' in r.stderr and 'model.width' in r.stderr
  r = _run(_main(smoke_run.workdir, '--mode=budget',
                 '--config.data.synthetic.seed=5'))
  _one_error(r, 'features.npz holds', 'query items')


def test_damaged_bundle_files_are_one_line(bundle, tmp_path):
  crops = _crops(tmp_path / 'crops', 3, 0)
  for name, runtime in (('bundle.json', 'jax'), ('params.npz', 'jax'),
                        ('model.onnx', 'onnx')):
    b = shutil.copytree(bundle, str(tmp_path / name))
    path = os.path.join(b, name)
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:
      f.write(data[:len(data) // 3])
    r = _run(['dare_jax.tools.embed', b, crops,
              f'--out={tmp_path / (name + ".npz")}', f'--runtime={runtime}'])
    _one_error(r, name, 'export it again')


def test_stream_budgets_deadlines_and_the_readme_example(bundle, tmp_path):
  """tools/stream: impossible budgets and deadlines refused with the
  bundle's range; '2.9M'-style and relative budgets understood; the
  README's commands, as written, on a folder of unlabelled crops."""
  b = bundle_lib.Bundle.load(bundle)
  c1, c4 = b.exit_costs['stage1'], b.exit_costs['fused']
  gallery = _crops(tmp_path / 'my_gallery', 12, 1)
  queries = _crops(tmp_path / 'my_queries', 4, 2)
  g_npz = str(tmp_path / 'runs' / 'gallery.npz')
  r = _run(['dare_jax.tools.embed', bundle, gallery, f'--out={g_npz}'])
  assert r.returncode == 0, r.stderr[-2000:]
  base = ['dare_jax.tools.stream', bundle, f'--gallery={g_npz}',
          f'--queries={queries}']
  for budget in (str(c1 / 2), '-5', 'lots'):
    _one_error(_run(base + [f'--budget={budget}']), '--budget', 'stage1',
               'fused')
  for deadline in ('0', '-3'):
    _one_error(_run(base + [f'--deadline-ms={deadline}']), '--deadline-ms',
               '> 0')
  r = _run(['dare_jax.tools.stream', '--help'])
  assert "from stage 1's cost up" in ' '.join((r.stdout + r.stderr).split())
  # The README's example: a folder gallery (no person ids), --budget=50%,
  # routing left to auto (distance); --query as tools/search spells it.
  out = str(tmp_path / 'runs' / 'stream.json')
  r = _run(['dare_jax.tools.stream', bundle, f'--gallery={g_npz}',
            f'--query={queries}', '--budget=50%', f'--json={out}'])
  assert r.returncode == 0, r.stderr[-2000:]
  summary = json.loads(r.stdout)
  assert summary['routing'] == 'distance'
  assert summary['budget'] == pytest.approx(c1 + 0.5 * (c4 - c1))
  # A Mul-Add count with a unit is the same budget as the plain number.
  mega = f'{c4 / 1e6:.6f}M'
  r = _run(base + [f'--budget={mega}', '--topk=50'])
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.loads(r.stdout)['budget'] == pytest.approx(c4, rel=1e-6)
  assert 'the gallery holds 12 images' in r.stderr


def test_search_says_when_the_gallery_is_shorter_than_topk(bundle, tmp_path):
  gallery = _crops(tmp_path / 'g', 5, 3)
  r = _run(['dare_jax.tools.search', bundle, f'--gallery={gallery}',
            f'--query={_crops(tmp_path / "q", 1, 4)}', '--topk=100',
            f'--figure={tmp_path / "r.png"}'])
  assert r.returncode == 0, r.stderr[-2000:]
  assert '--topk=100: the gallery holds 5 images' in r.stderr


def test_cross_domain_evaluation_on_a_test_only_target(smoke_run, tmp_path):
  root = _crops(tmp_path / 'target', 5, 5)
  rows = ['path,person,camera,split'] + [
      f'{i:03d}.png,{p},{c},{s}' for i, (p, c, s) in enumerate(
          [(1, 0, 'query'), (2, 0, 'query'), (1, 1, 'gallery'),
           (2, 1, 'gallery'), (3, 1, 'gallery')])]
  (tmp_path / 'target' / 'm.csv').write_text('\n'.join(rows) + '\n')
  run = shutil.copytree(smoke_run.workdir, str(tmp_path / 'run'))
  r = _run(_main(run, '--mode=eval', '--config.data.dataset=folder',
                 f'--config.data.manifest={tmp_path / "target" / "m.csv"}',
                 f'--config.data.root={root}'))
  assert r.returncode == 0, r.stderr[-2000:]
  with open(os.path.join(run, 'metrics_folder.json')) as f:
    assert json.load(f)['fused']['num_valid_queries'] == 2


def test_configs_from_any_folder_and_broken_config_files(tmp_path):
  cfg = os.path.join(REPO, 'configs')
  # From outside the repository, a config built on another one loads.
  r = _run(['dare_jax.main', f'--config={cfg}/trinet_synthetic.py:s',
            f'--workdir={tmp_path / "w"}', '--mode=budget'], cwd=tmp_path)
  _one_error(r, 'features.npz')  # it got as far as the (absent) run
  r = _run(['dare_jax.main', f'--config={cfg}/trinet_synthetic.py',
            f'--workdir={tmp_path / "w"}'], cwd=tmp_path)
  _one_error(r, ':s, :m or :l')
  r = _run(['dare_jax.main', f'--config={cfg}/market.py:X',
            f'--workdir={tmp_path / "w"}'], cwd=tmp_path)
  _one_error(r, 'configs/market.py:R', 'DaRe(R)+RE')
  bad = tmp_path / 'bad.py'
  bad.write_text('def get_config(:\n  pass\n')
  _one_error(_run(['dare_jax.main', f'--config={bad}',
                   f'--workdir={tmp_path / "w"}']), 'bad.py:1',
             'invalid syntax')


def test_help_and_quiet_export(smoke_run, tmp_path):
  r = _run(['dare_jax.main', '--help'])
  for flag in ('--compilation_cache', '--distributed', '--eval_name'):
    assert flag in r.stdout + r.stderr, flag
  r = _run(['dare_jax.tools.export_bundle', '--config=configs/smoke.py',
            f'--workdir={smoke_run.workdir}', f'--out={tmp_path / "b"}'])
  assert r.returncode == 0, r.stderr[-2000:]
  for noise in ('MaxText', 'Converting JAX', 'unused nodes'):
    assert noise not in r.stderr, noise
