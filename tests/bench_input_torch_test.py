"""dare_jax/bench/torch_peer.py (its model: dare_jax/references/torch_dare.py)
and dare_jax/bench/input_pipeline.py against independent references: the PyTorch peer's loss against dare_jax.losses and
a float64 numpy transcription of Hermans et al.; its hook-counted Mul-Adds
against dare_jax.budget.costs's jaxpr count of the same architecture; the
input bench's counts, and its JPEG source against the images it wrote."""

import os

import numpy as np
import pytest

from configs import smoke
from dare_jax.bench import input_pipeline as ib
from dare_jax.data import augment
from dare_jax.data import spec
from dare_jax.data import synthetic
from dare_jax.data.types import Split

# Its module-scoped fixtures are built once: all its tests on one xdist
# worker (.ci/run: --dist loadgroup).
pytestmark = pytest.mark.xdist_group('bench_input_torch')


@pytest.fixture
def torch():
  torch = pytest.importorskip('torch')
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # a shared 2-core CI machine: no OpenMP spinning
  yield torch
  torch.set_num_threads(threads)


# ----------------------------------------------------------------------------
# The PyTorch peer.


def _numpy_batch_hard(emb, pids, eps):
  """float64, loop over anchors: Hermans et al.'s definition, written out."""
  emb = emb.astype(np.float64)
  losses = []
  for a in range(len(emb)):
    d = np.sqrt(((emb - emb[a]) ** 2).sum(-1) + eps)
    pos = [d[p] for p in range(len(emb)) if pids[p] == pids[a] and p != a]
    neg = [d[n] for n in range(len(emb)) if pids[n] != pids[a]]
    losses.append(np.logaddexp(0.0, max(pos) - min(neg)))
  return float(np.mean(losses))


def test_torch_loss_equals_jax_and_numpy(torch):
  import jax
  from dare_jax import losses
  from dare_jax.bench import torch_peer
  from dare_jax.models import dare
  rng = np.random.default_rng(0)
  pids = np.repeat(rng.permutation(50)[:6] + 1, 4)  # P=6 x K=4, shuffled ids
  embs = {name: rng.normal(size=(24, 16)).astype(np.float32) * s
          for name, s in zip(dare.EMBEDDINGS, (0.1, 0.5, 1., 2., 4.))}
  got = torch_peer.deep_supervision_loss(
      {k: torch.from_numpy(v) for k, v in embs.items()},
      torch.from_numpy(pids), 1e-8).item()
  want_jax, _ = jax.jit(losses.deep_supervision_loss, static_argnums=2)(
      embs, pids, 1e-8)
  want_np = sum(_numpy_batch_hard(v, pids, 1e-8) for v in embs.values())
  np.testing.assert_allclose(got, float(want_jax), rtol=1e-5)
  np.testing.assert_allclose(got, want_np, rtol=1e-5)
  # Coincident embeddings: D = sqrt(eps), not 0 or NaN, in both.
  same = {k: np.zeros_like(v) for k, v in embs.items()}
  got = torch_peer.deep_supervision_loss(
      {k: torch.from_numpy(v) for k, v in same.items()},
      torch.from_numpy(pids), 1e-8).item()
  np.testing.assert_allclose(got, 5 * np.log(2), rtol=1e-6)


@pytest.mark.parametrize('depth,stage_sizes,width,hw', [
    (18, None, 64, (64, 32)),  # ResNet-18, the default heads (1024, 128)
    (50, (1, 1, 1, 1), 16, (32, 16)),  # bottleneck blocks, cheap
])
def test_torch_forward_macs_equal_jaxpr_count(torch, depth, stage_sizes,
                                              width, hw):
  from dare_jax.bench import torch_peer
  from dare_jax.budget import costs
  from dare_jax.models import dare
  from dare_jax.models import resnet
  c = smoke.get_config()
  c.model.depth = 0 if stage_sizes else depth
  c.model.block = resnet.DEPTHS[depth][0]
  c.model.stage_sizes = stage_sizes or ()
  c.model.width = width
  c.model.head_hidden, c.model.embedding_dim = 1024, 128
  want = costs.exit_costs(dare.from_config(c.model), hw)['fused']
  model = torch_peer.build_model(depth, width=width, stage_sizes=stage_sizes)
  assert torch_peer.forward_macs(model, hw, 128) == want


def test_torch_step_row(torch):
  from dare_jax.bench import torch_peer
  row = torch_peer.bench_batch(
      8, depth=18, input_hw=(32, 16), dtype='float32', steps=1, warmup=1,
      compile_=False, channels_last=True, device='cpu', width=16)
  assert row['framework'] == 'pytorch' and row['global_batch'] == 8
  assert row['step_ms'] > 0 and np.isfinite(row['loss'])
  np.testing.assert_allclose(row['images_per_s'], 8e3 / row['step_ms'])
  np.testing.assert_allclose(
      row['model_tflops_per_s'],
      6 * row['forward_macs_per_image'] * row['images_per_s'] / 1e12)
  with pytest.raises(ValueError, match='multiple of K=4'):
    torch_peer.synthetic_batch(10, (32, 16), 'cpu')


# ----------------------------------------------------------------------------
# The input pipeline bench.


@pytest.fixture(scope='module')
def tiny():
  c = smoke.get_config()  # 32x16 crops of 36x18 images, P x K = 4 x 2
  s = c.data.synthetic
  ds = synthetic.make_synthetic(
      num_train_ids=s.num_train_ids, num_test_ids=s.num_test_ids,
      num_cameras=s.num_cameras, hard_fraction=s.hard_fraction, seed=s.seed,
      image_size=spec.ImageSize.from_data_config(c.data).resize_hw)
  return c, ds


@pytest.mark.parametrize('source', ['files', 'memory'])
def test_input_bench_counts(tiny, source):
  c, ds = tiny
  result = ib.run(c, ['numpy'], ['train', 'eval'], source, steps=3,
                  warmup=1, dataset=ds)
  train, ev = result['rows']
  assert result['host_cores'] == len(os.sched_getaffinity(0))
  assert (train['mode'], train['batch']) == ('train', 8)
  assert train['images'] == 3 * 8
  assert (ev['mode'], ev['batch']) == ('eval', 8)
  assert ev['images'] == 3 * 8 and ev['views'] == 3 * 8 * 10
  for r in (train, ev):
    assert r['images_per_s'] > 0 and r['source'] == source
    np.testing.assert_allclose(r['images_per_s_per_core'],
                               r['images_per_s'] / result['host_cores'])
  want = {'files': ('once', 'per batch'), 'memory': ('none', 'none')}[source]
  assert (train['decode'], ev['decode']) == want
  assert len(ib.format_table(result).splitlines()) == 3  # header + 2 rows


def test_jpeg_files_round_trip(tmp_path):
  ds = synthetic.make_synthetic(num_train_ids=4, num_test_ids=2,
                                num_cameras=2, hard_fraction=0.5, seed=0,
                                image_size=ib.NATIVE_HW)
  images = ds.train.images[:6]
  paths = ib.write_jpegs(images, str(tmp_path))
  back = np.stack([augment.load_image(p, ib.NATIVE_HW) for p in paths])
  assert back.shape == images.shape
  assert np.abs(back.astype(float) - images).mean() < 8
  # Images at another size are written at Market-1501's 128x64.
  split = Split(pids=np.arange(2), camids=np.zeros(2, np.int64),
                images=images[:2, ::2, ::2].copy())
  files = ib.as_source(split, 'files', str(tmp_path / 'small'), (72, 36))
  assert files.images is None and len(files.paths) == 2
  assert augment.load_image(files.paths[0], ib.NATIVE_HW).shape == (128, 64, 3)


def test_tiling():
  split = Split(pids=np.array([1, 1, 2, 2, 0]), camids=np.zeros(5, np.int64),
                paths=[f'{i}.jpg' for i in range(5)])
  tiled = ib.with_identities(split, 5)
  assert len(tiled) == 15
  assert len(np.unique(tiled.pids[tiled.pids >= 1])) == 6
  assert np.sum(tiled.pids == 0) == 3  # distractors stay distractors
  assert ib.with_identities(split, 2) is split
  rep = ib.repeat_split(split, 7)
  assert rep.paths == ['0.jpg', '1.jpg', '2.jpg', '3.jpg', '4.jpg', '0.jpg',
                       '1.jpg']
