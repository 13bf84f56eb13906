"""The model bundle: export a checkpoint, load it with JAX alone, and the
serialised forward run in a fresh process that imports no dare_jax code."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import smoke
from dare_jax import errors
from dare_jax.inference import bundle as bundle_lib
from dare_jax.models import dare
from dare_jax.tools import export_bundle
from tests import checkpoints

H, W = smoke.get_config().data.input_size


def _inputs(n=5, seed=0):
  return np.random.default_rng(seed).normal(size=(n, H, W, 3)).astype(
      np.float32)




@pytest.mark.slow
def test_bundle_round_trip_equals_the_flax_forward(tmp_path):
  config, workdir, model, v = checkpoints.random_checkpoint(tmp_path)
  with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
    json.dump({'fused': {'rank1': 0.5}}, f)
  out = str(tmp_path / 'bundle')
  printed = export_bundle.export(config, workdir, out)
  assert printed['step'] == 7
  assert sorted(printed['files']) == sorted(bundle_lib.FILES)

  b = bundle_lib.Bundle.load(out)
  meta = b.meta
  assert meta['format_version'] == bundle_lib.FORMAT_VERSION
  assert (meta['input']['height'], meta['input']['width']) == (H, W)
  assert meta['input']['mean'] == list(config.data.mean)
  assert meta['input']['std'] == list(config.data.std)
  # The recorded preprocessing: single view (tta 1) is the whole image
  # resized to H x W, no crop (as the authors); only tta 10 crops.
  assert 'tta 1: bilinear (PIL) of the whole image to H x W, no crop' in (
      meta['input']['resize'])
  assert b.resize_hw == (round(H * 1.125), round(W * 1.125))
  assert b.embedding_names == dare.EMBEDDINGS
  assert b.embedding_dim == config.model.embedding_dim
  assert meta['provenance']['checkpoint_step'] == 7
  assert meta['provenance']['metrics'] == {'fused': {'rank1': 0.5}}
  # Cumulative Mul-Adds grow exit by exit.
  c = [b.exit_costs[f'stage{s}'] for s in range(1, 5)]
  assert all(0 < a < b_ for a, b_ in zip(c, c[1:]))
  # The variables are the checkpoint's, bit for bit.
  jax.tree.map(np.testing.assert_array_equal, b.variables, v)

  x = _inputs()
  want = jax.device_get(model.apply(v, x, train=False))
  got = b.forward(x)
  assert set(got) == set(dare.EMBEDDINGS)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)
  # embed(uint8) = forward of the normalised pixels, with the bundle's
  # mean and std (written out here, not read from the code).
  pixels = np.random.default_rng(1).integers(0, 256, (3, H, W, 3), np.uint8)
  norm = ((pixels / 255.0 - np.array(config.data.mean)) /
          np.array(config.data.std)).astype(np.float32)
  want_px = jax.device_get(model.apply(v, norm, train=False))
  for k, e in b.embed(pixels).items():
    np.testing.assert_allclose(e, want_px[k], rtol=1e-5, atol=1e-6)

  # The serialised forward, reloaded in a fresh process, at another batch
  # size than any traced here (the batch is symbolic).
  np.save(tmp_path / 'x.npy', x[:3])
  proc = subprocess.run(
      [sys.executable, '-c', checkpoints.FRESH_PROCESS, out, str(tmp_path / 'x.npy'),
       str(tmp_path / 'y.npz')], capture_output=True, text=True, timeout=300,
      cwd=str(tmp_path), check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == '', proc.stdout  # no dare_jax, no TF
  with np.load(tmp_path / 'y.npz') as y:
    for k in want:
      np.testing.assert_allclose(y[k], want[k][:3], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_bad_bundles_and_overwrite_are_refused(tmp_path):
  config, workdir, _, _ = checkpoints.random_checkpoint(tmp_path)
  out = str(tmp_path / 'bundle')
  export_bundle.export(config, workdir, out)
  with pytest.raises(errors.ConfigError, match='--overwrite'):
    export_bundle.export(config, workdir, out)
  with pytest.raises(errors.CheckpointError, match=r'no checkpoint at step 3.*\[7\]'):
    export_bundle.export(config, workdir, str(tmp_path / 'b3'), step=3)
  meta_path = os.path.join(out, bundle_lib.META)
  with open(meta_path) as f:
    meta = json.load(f)
  with open(meta_path, 'w') as f:
    json.dump({**meta, 'format_version': 99}, f)
  with pytest.raises(errors.DataError, match=f'version 99.*reads version {bundle_lib.FORMAT_VERSION}'):
    bundle_lib.Bundle.load(out)
  with open(meta_path, 'w') as f:
    json.dump(meta, f)
  os.remove(os.path.join(out, bundle_lib.PARAMS))
  with pytest.raises(errors.DataNotFoundError, match='lacks params.npz'):
    bundle_lib.Bundle.load(out)


@pytest.mark.slow
def test_export_bundle_cli_prints_one_json_object(tmp_path):
  config, workdir, _, _ = checkpoints.random_checkpoint(tmp_path)
  del config
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, '-m', 'dare_jax.tools.export_bundle',
         '--config=configs/smoke.py', f'--workdir={workdir}',
         f'--out={tmp_path / "b"}']
  proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout)['step'] == 7
  again = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                         timeout=300, check=False)
  assert again.returncode == 1
  err = [l for l in again.stderr.splitlines() if l.startswith('error:')]
  assert len(err) == 1 and '--overwrite' in err[0], again.stderr[-2000:]
  assert 'Traceback' not in again.stderr
