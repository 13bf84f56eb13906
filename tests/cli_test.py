"""What a user sees from `python -m dare_jax.main`: one `error:` line per
mistake, no noise, Ctrl-C that saves and stops, training that stops on NaN
(issue 14 items 9-13), through the real command line in subprocesses."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import market
from configs import smoke
from configs import synthetic
from dare_jax import configlib
from dare_jax import errors
from dare_jax import health

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("backend 'tpu'", 'read only', 'read_only')


def _main(workdir, *args, config='configs/smoke.py'):
  return [sys.executable, '-m', 'dare_jax.main', f'--config={config}',
          f'--workdir={workdir}', *args]


def _run(cmd, timeout=180):
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def _error_lines(stderr):
  return [l for l in stderr.splitlines() if 'error:' in l]


def _strict_json(line):
  def refuse(const):
    raise AssertionError(f'{const} is not JSON')
  return json.loads(line, parse_constant=refuse)


@pytest.mark.slow
def test_misspelt_overrides_and_config_files_are_one_line(tmp_path):
  cases = [
      (['--config.train.num_stpes=10'], '--config.train.num_steps'),
      (['--config.trian.P=3'], '--config.train'),
  ]
  for args, fix in cases:
    r = _run(_main(tmp_path, *args))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    assert f'Did you mean {fix}?' in lines[0]
  r = _run(_main(tmp_path, config='configs/smok.py'))
  assert r.returncode == 1
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1, r.stderr
  assert lines[0].startswith('error: --config=configs/smok.py: no such file')
  assert 'did you mean --config=configs/smoke.py?' in lines[0]
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.slow
def test_eval_and_budget_without_a_run_say_what_to_do_and_create_nothing(
    tmp_path):
  workdir = tmp_path / 'typo'
  r = _run(_main(workdir, '--mode=eval'))
  assert r.returncode == 1
  assert _error_lines(r.stderr) == [r.stderr.strip().splitlines()[-1]]
  assert r.stderr.count('No checkpoint in') == 1  # not logged and printed
  assert 'train first (--mode=train)' in r.stderr
  assert not any(n in r.stderr for n in NOISE), r.stderr
  assert not workdir.exists()
  r = _run(_main(workdir, '--mode=budget'))
  assert r.returncode == 1
  (line,) = _error_lines(r.stderr)
  assert '--mode=export' in line and 'features.npz' in line
  assert not workdir.exists()


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_stops_then_eval_is_quiet(
    tmp_path):
  workdir = tmp_path / 'run'
  # optim.t1 far below num_steps: the schedule warning comes first.
  cmd = _main(workdir, '--config.train.num_steps=100000',
              '--config.optim.t1=4', '--config.train.checkpoint_every=100000',
              '--config.train.log_every=10',
              f'--config.data.cache_dir={tmp_path / "cache"}')
  log = open(tmp_path / 'stderr.txt', 'w')
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=log)
  jsonl = workdir / 'train_log.jsonl'
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 3:
      break
    time.sleep(0.2)
  assert proc.poll() is None, (tmp_path / 'stderr.txt').read_text()[-3000:]
  proc.send_signal(signal.SIGINT)
  rc = proc.wait(timeout=60)
  log.close()
  stderr = (tmp_path / 'stderr.txt').read_text()
  assert rc == 130, stderr[-3000:]
  assert 'optim.t1=4 but train.num_steps=100000' in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith('SIGINT at step '), stderr[-3000:]
  step = int(last.split()[3].rstrip(':'))
  saved = sorted(int(d) for d in os.listdir(workdir / 'checkpoints')
                 if d.isdigit())
  assert saved == [step]  # checkpoint_every never came: this is Ctrl-C's
  records = [_strict_json(l) for l in jsonl.read_text().splitlines()]
  assert records[0]['images_per_s'] is None  # not NaN: strict JSON
  assert all(r['images_per_s'] > 0 for r in records[1:])
  for r in records:
    assert r['grad_norm'] > 0 and r['param_norm'] > 0
  assert step >= records[-1]['step']
  assert not any(n in stderr for n in NOISE), stderr[-3000:]

  r = _run(_main(workdir, '--mode=eval',
                 f'--config.data.cache_dir={tmp_path / "cache"}'))
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'Restored step {step}' in r.stderr
  assert not any(n in r.stderr for n in NOISE), r.stderr
  metrics = _strict_json((workdir / 'metrics.json').read_text())
  assert 0 < metrics['fused']['mINP'] <= 1

  # Cross-domain: trained on the synthetic dataset, evaluated on a Market
  # folder; the run's own metrics.json stays, the new figures go beside it.
  own = (workdir / 'metrics.json').read_text()
  _market_folder(tmp_path / 'market')
  r = _run(_main(workdir, '--mode=eval', '--config.data.dataset=market',
                 f'--config.data.root={tmp_path / "market"}'))
  assert r.returncode == 0, r.stderr[-3000:]
  assert (workdir / 'metrics.json').read_text() == own
  cross = _strict_json((workdir / 'metrics_market.json').read_text())
  assert cross['fused']['num_valid_queries'] == 2
  assert (workdir / 'features_market.npz').exists()


@pytest.mark.slow
def test_a_nan_step_stops_training_naming_the_step_and_saves_nothing(
    tmp_path):
  workdir = tmp_path / 'run'
  r = _run(_main(workdir, '--config.optim.eps0=1e35',
                 '--config.train.checkpoint_every=1',
                 f'--config.data.cache_dir={tmp_path / "cache"}'))
  assert r.returncode == 1
  (line,) = _error_lines(r.stderr)
  assert line.startswith('error: Step 1: param_norm = inf'), r.stderr[-2000:]
  assert not [d for d in os.listdir(workdir / 'checkpoints') if d.isdigit()]


def test_check_finite_names_the_step_and_the_value():
  health.check_finite(3, {'loss': 1.0, 'grad_norm': 2.0, 'param_norm': 3.0})
  with pytest.raises(health.NonFiniteError, match=r'^Step 7: grad_norm = nan'):
    health.check_finite(7, {'loss': 1.0, 'grad_norm': math.nan})
  with pytest.raises(health.NonFiniteError, match='loss = inf'):
    health.check_finite(2, {'loss': math.inf})


def test_collapse_watch_warns_once_after_a_window_at_ln2():
  w = health.CollapseWatch(window=300, tol=0.01)
  at_ln2 = {'loss': 5 * math.log(2), 'loss_stage1': 0.6935,
            'loss_fused': 0.6925}
  healthy = dict(at_ln2, loss_stage1=0.4)
  assert w.update(100, at_ln2) is None
  assert w.update(300, healthy) is None  # one exit left ln 2: reset
  assert w.update(400, at_ln2) is None
  assert w.update(650, at_ln2) is None  # 250 steps < window
  msg = w.update(700, at_ln2)
  assert msg is not None and 'from step 400 to 700' in msg
  assert w.update(800, at_ln2) is None  # once


def test_schedule_warning_only_when_the_run_outlives_the_decay():
  for cfg in (market.get_config(), synthetic.get_config(), smoke.get_config()):
    assert health.schedule_warning(cfg) is None
  c = smoke.get_config()
  c.train.num_steps = 3000
  msg = health.schedule_warning(c)
  assert 'optim.t1=4 but train.num_steps=3000' in msg
  assert '2996 of the 3000 steps (99.9%)' in msg


def test_second_signal_exits_at_once(monkeypatch):
  exits = []
  monkeypatch.setattr(os, '_exit', exits.append)
  # What the process had before (Python's default handler; SIG_IGN in a
  # job started in the background by a non-interactive shell).
  before = signal.getsignal(signal.SIGINT)
  with health.Interrupt() as stop:
    assert signal.getsignal(signal.SIGINT) == stop._handle  # pylint: disable=protected-access
    stop._handle(signal.SIGINT, None)  # pylint: disable=protected-access
    assert stop.requested and stop.signal_name == 'SIGINT' and not exits
    stop._handle(signal.SIGTERM, None)  # pylint: disable=protected-access
    assert exits == [130]
  assert signal.getsignal(signal.SIGINT) is before


def test_eval_is_not_refused_for_a_training_reason():
  c = smoke.get_config()
  c.train.P, c.train.K = 3, 2  # 6 images: does not split over 4 devices
  c.eval.batch_size = 8
  configlib.validate(c, num_devices=4, training=False)
  with pytest.raises(errors.ConfigError, match='does not split evenly'):
    configlib.validate(c, num_devices=4)


def _market_folder(root, corrupt_in=None):
  """A tiny Market-1501 layout (4 train ids x 2 images, 2 test ids), with
  one file of `corrupt_in` that is not an image."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  files = {'bounding_box_train': [f'{p:04d}_c{c}s1_000{c}01_00.jpg'
                                  for p in (1, 2, 3, 4) for c in (1, 2)],
           'query': ['0007_c1s1_000101_00.jpg', '0008_c1s1_000101_00.jpg'],
           'bounding_box_test': ['0007_c2s1_000201_00.jpg',
                                 '0008_c2s1_000201_00.jpg',
                                 '0000_c3s1_000301_00.jpg']}
  for sub, names in files.items():
    os.makedirs(root / sub)
    for n in names:
      Image.fromarray(rng.integers(0, 256, (36, 18, 3), np.uint8)).save(
          root / sub / n)
  if corrupt_in is None:
    return None
  bad = root / corrupt_in / files[corrupt_in][-1]
  bad.write_bytes(b'not an image')
  return bad


@pytest.mark.slow
@pytest.mark.parametrize('where', ['bounding_box_test', 'bounding_box_train'])
def test_an_unreadable_image_is_named_with_the_fix_before_training(
    tmp_path, where):
  bad = _market_folder(tmp_path / 'market', where)
  workdir = tmp_path / 'run'
  r = _run(_main(workdir, '--config.data.dataset=market',
                 f'--config.data.root={tmp_path / "market"}'))
  assert r.returncode == 1
  (line,) = _error_lines(r.stderr)
  assert str(bad) in line and '--config.data.bad_images=skip' in line, line
  if where == 'bounding_box_test':  # found by the check before training
    assert 'Evaluation after training would fail' in line
    assert not (workdir / 'train_log.jsonl').exists()


def test_a_file_that_is_not_npz_is_called_that(tmp_path):
  path = tmp_path / 'features.npz'
  path.write_text('hello')
  r = _run([sys.executable, '-m', 'dare_jax.tools.evaluate_features',
            str(path)])
  assert r.returncode == 1
  assert r.stderr.strip() == (f'error: {path} is not an .npz file (a zip '
                              'archive of arrays, as numpy.savez writes); a '
                              'features file comes from --mode=export, '
                              '--mode=eval or tools/embed.')
  assert 'pickled' not in r.stderr


def test_bad_images_is_checked_for_every_dataset():
  c = smoke.get_config()  # synthetic: reads no file, still checked
  c.data.bad_images = 'skipp'
  with pytest.raises(errors.ConfigError, match="data.bad_images='skipp'"):
    configlib.validate(c)


@pytest.mark.slow
def test_a_paper_dataset_config_refuses_to_start_without_imagenet_weights(
    tmp_path):
  r = _run(_main(tmp_path / 'run', f'--config.data.root={tmp_path}',
                 config='configs/market.py'))
  assert r.returncode == 1
  (line,) = _error_lines(r.stderr)
  for part in ('resnet50-19c8e357.pth', 'dare_jax.tools.convert_weights',
               '--config.model.pretrained=none'):
    assert part in line, line
  assert not os.path.exists(tmp_path / 'run' / 'train_log.jsonl')


def _tiny_features(path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  np.savez(path, query_fused=rng.normal(size=(4, 8)).astype(np.float32),
           gallery_fused=rng.normal(size=(12, 8)).astype(np.float32),
           query_pids=np.arange(4) % 2 + 1, query_camids=np.zeros(4, int),
           gallery_pids=np.arange(12) % 2 + 1,
           gallery_camids=np.ones(12, int))


def _cache_files(folder):
  return sorted(f for _, _, fs in os.walk(folder) for f in fs)


@pytest.mark.slow
def test_compilation_cache_default_folder_flag_and_off(tmp_path):
  feats = tmp_path / 'f.npz'
  _tiny_features(feats)
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('JAX_COMPILATION_CACHE', 'JAX_PERSISTENT'))}
  env['XDG_CACHE_HOME'] = str(tmp_path / 'xdg')
  default = tmp_path / 'xdg' / 'dare_jax' / 'jax_cache'

  def run(*flags):
    r = subprocess.run(
        [sys.executable, '-m', 'dare_jax.tools.evaluate_features', str(feats),
         *flags], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return _strict_json(r.stdout)

  off = run('--compilation_cache=off')
  assert not default.exists()
  moved = tmp_path / 'moved'
  assert run(f'--compilation_cache={moved}') == off
  assert _cache_files(moved) and not default.exists()
  assert run() == off  # the default: the user's cache folder
  entries = _cache_files(default)
  assert entries
  assert run() == off and _cache_files(default) == entries  # read, not redone


@pytest.mark.slow
def test_preemption_saves_at_the_step_orbax_names_then_resumes(
    tmp_path, monkeypatch):
  """What a multi-process run does when the JAX preemption service names a
  step (a scheduler's SIGTERM to any process): checkpointing there and
  stopping. Orbax's reached_preemption is False on one process, so it is
  made True at step 3 here."""
  from dare_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from dare_jax import train  # pylint: disable=g-import-not-at-top
  real = checkpointing.manager

  def preempted_at_3(*args, **kwargs):
    mngr = real(*args, **kwargs)
    mngr.reached_preemption = lambda step: step == 3
    return mngr
  monkeypatch.setattr(checkpointing, 'manager', preempted_at_3)
  config = smoke.get_config()
  config.data.cache_dir = str(tmp_path / 'cache')
  config.train.num_steps, config.train.checkpoint_every = 6, 100
  workdir = tmp_path / 'run'
  with pytest.raises(health.Interrupted, match='Preemption at step 3'):
    train.train_and_evaluate(config, str(workdir))
  saved = sorted(int(d) for d in os.listdir(workdir / 'checkpoints')
                 if d.isdigit())
  assert saved == [3]
  assert not (workdir / 'metrics.json').exists()
  monkeypatch.setattr(checkpointing, 'manager', real)
  train.train_and_evaluate(config, str(workdir))
  saved = sorted(int(d) for d in os.listdir(workdir / 'checkpoints')
                 if d.isdigit())
  assert saved[-1] == 6 and (workdir / 'metrics.json').exists()
