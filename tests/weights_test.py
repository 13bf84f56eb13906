"""PyTorch weight import and numerical parity with PyTorch.

The parity tests build torchvision-layout networks and the authors' DaRe
network in PyTorch (dare_jax/references/torch_dare.py) with random weights
AND random BatchNorm running statistics, save them with torch.save, load them
through dare_jax.models.weights and compare eval-mode forwards on random inputs,
float32 at 'highest' matmul precision. They need torch (optional):
    pip install torch==2.13.0
and are skipped without it. The key-checking tests run on .npz files and
need no torch.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from configs import smoke
from dare_jax import errors
from dare_jax import losses
from dare_jax.models import dare
from dare_jax.models import densenet
from dare_jax.models import resnet
from dare_jax.models import weights

# Its module-scoped fixtures are built once: all its tests on one xdist
# worker (.ci/run: --dist loadgroup).
pytestmark = pytest.mark.xdist_group('weights')

H, W = 64, 32  # small input; the stage-4 map is 2 x 1
REL = 1e-5


def _model(depth, heads='dare', backbone='resnet'):
  c = default.get_config().model
  c.depth, c.heads, c.backbone = depth, heads, backbone
  return dare.from_config(c)


def _random_variables(model, seed=0, h=H, w=W):
  """Variables of `model` filled with random numbers (no init compile)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, h, w, 3))))
  rng = np.random.default_rng(seed)
  def fill(x):
    return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
  return jax.tree.map(fill, dict(shapes))


def _rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _forward(model):
  """A jitted eval-mode (variables, x) -> (embeddings, the 4 stage maps the
  exit heads pool), the maps captured from the 'backbone' submodule's
  output, at 'highest' matmul precision."""
  is_backbone = lambda mdl, _: isinstance(mdl, (resnet.ResNet,
                                                densenet.DenseNet))

  @jax.jit
  def fwd(variables, x):
    out, inter = model.apply(variables, x, capture_intermediates=is_backbone,
                             mutable=['intermediates'])
    maps, _ = inter['intermediates']['backbone']['__call__'][0]  # , carry
    return out, maps

  def run(variables, x):
    with jax.default_matmul_precision('highest'):
      return jax.device_get(fwd(variables, x))
  return run


@pytest.fixture(scope='module')
def forward50():
  """DaRe-R50 and its jitted (variables, x) -> (embeddings, stage maps)."""
  model = _model(50)
  return model, _forward(model)


# --------------------------------------------------------------- parity.

@pytest.fixture(scope='module')
def torch_nets(tmp_path_factory):
  """A torchvision ResNet-50 file and an authors' DaRe-R50 checkpoint that
  share one random backbone, the inputs, and PyTorch's outputs."""
  torch = pytest.importorskip('torch')
  from dare_jax.references import torch_dare as tr  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)
  g = torch.Generator().manual_seed(0)
  net = tr.randomize_(tr.DaReNet(50, gap=(H // 32, W // 32)), g).eval()
  backbone_sd = {k: v for k, v in net.state_dict().items()
                 if not k.startswith(('layer1_fc', 'layer2_fc', 'layer3_fc',
                                      'layer4_fc', 'fusion_conv'))}
  tv = tr.ResNet(50)
  tv.fc.weight.data.normal_(generator=g)
  # strict: the names are exactly torchvision's (plus its fc).
  tv.load_state_dict({**backbone_sd, 'fc.weight': tv.fc.weight,
                      'fc.bias': tv.fc.bias}, strict=True)
  tv.eval()
  x = torch.randn(2, 3, H, W, generator=g)
  with torch.no_grad():
    maps = [m.numpy() for m in tv(x)]
    embs = [e.numpy() for e in net(x)]
  d = tmp_path_factory.mktemp('torch')
  tv_path = str(d / 'resnet50.pth')
  torch.save(tv.state_dict(), tv_path)
  dare_path = str(d / 'checkpoint.pth.tar')
  # As the authors' main.py saves it: nn.DataParallel ('module.') inside a
  # dict with the optimiser and the iteration count.
  torch.save({'iterations': 60000, 'arch': 'dare_R', 'best_loss': 0.5,
              'state_dict': {'module.' + k: v
                             for k, v in net.state_dict().items()},
              'optimizer': torch.optim.Adam(net.parameters()).state_dict()},
             dare_path)
  return dict(x=x.permute(0, 2, 3, 1).numpy(), maps=maps, embs=embs,
              tv_path=tv_path, dare_path=dare_path)


@pytest.mark.slow
def test_torchvision_resnet50_stage_maps_equal_pytorch(torch_nets, forward50):
  model, run = forward50
  variables = _random_variables(model)
  params, batch_stats = weights.load_backbone(
      torch_nets['tv_path'], variables['params'], variables['batch_stats'])
  # Only the backbone was replaced: the heads and fusion are untouched.
  for k in params:
    if k != 'backbone':
      jax.tree.map(np.testing.assert_array_equal, params[k],
                   variables['params'][k])
  _, maps = run({'params': params, 'batch_stats': batch_stats},
                torch_nets['x'])
  # The authors' checkpoint read as a backbone (its heads and fusion are
  # ignored) gives the same backbone.
  params2, batch_stats2 = weights.load_backbone(
      torch_nets['dare_path'], variables['params'], variables['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, (params2, batch_stats2),
               (params, batch_stats))
  for s, (got, want) in enumerate(zip(maps, torch_nets['maps']), 1):
    want = want.transpose(0, 2, 3, 1)
    assert got.shape == want.shape, s
    assert _rel_err(got, want) <= REL, (s, _rel_err(got, want))


def test_authors_dare_checkpoint_embeddings_equal_pytorch(torch_nets,
                                                          forward50):
  model, run = forward50
  variables = weights.load_dare_checkpoint(torch_nets['dare_path'],
                                           _random_variables(model, seed=1))
  out, maps = run(variables, torch_nets['x'])
  for got, want in zip(maps, torch_nets['maps']):
    assert _rel_err(got, want.transpose(0, 2, 3, 1)) <= REL
  for name, want in zip(dare.EMBEDDINGS, torch_nets['embs']):
    assert out[name].shape == want.shape, name
    assert _rel_err(out[name], want) <= REL, (name, _rel_err(out[name], want))


@pytest.mark.parametrize('depth', [18])
def test_torchvision_basic_block_resnet_stage_maps_equal_pytorch(
    depth, tmp_path):
  torch = pytest.importorskip('torch')
  from dare_jax.references import torch_dare as tr  # pylint: disable=g-import-not-at-top
  g = torch.Generator().manual_seed(depth)
  tv = tr.randomize_(tr.ResNet(depth), g).eval()
  x = torch.randn(2, 3, H, W, generator=g)
  with torch.no_grad():
    want = [m.numpy().transpose(0, 2, 3, 1) for m in tv(x)]
  path = str(tmp_path / f'resnet{depth}.pth')
  torch.save(tv.state_dict(), path)
  block, sizes = resnet.resolve_depth(depth, '', ())
  backbone = resnet.ResNet(block, sizes, norm=resnet.make_norm(
      False, 0.9, 1e-5, None))
  shapes = jax.eval_shape(lambda: backbone.init(jax.random.key(0),
                                                jnp.zeros((1, H, W, 3))))
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))
  params, batch_stats = weights.load_backbone(
      path, {'backbone': zeros['params']},
      {'backbone': zeros['batch_stats']})
  with jax.default_matmul_precision('highest'):
    got = jax.jit(backbone.apply)(
        {'params': params['backbone'],
         'batch_stats': batch_stats['backbone']},
        x.permute(0, 2, 3, 1).numpy())
  for s, (a, b) in enumerate(zip(got, want), 1):
    assert a.shape == b.shape, s
    assert _rel_err(a, b) <= REL, (s, _rel_err(a, b))


@pytest.mark.slow
def test_batch_hard_soft_margin_and_gradient_equal_authors_trinet_loss():
  torch = pytest.importorskip('torch')
  from dare_jax.references import torch_dare as tr  # pylint: disable=g-import-not-at-top
  P, K, D = 6, 4, 128  # pylint: disable=invalid-name
  rng = np.random.default_rng(0)
  embs = [rng.normal(size=(P * K, D)).astype(np.float32) for _ in range(5)]
  pids = np.repeat(np.arange(P), K)
  eps = default.get_config().loss.eps
  # The reference in float64: the authors' Gram-matrix distances lose digits
  # to cancellation in float32 (docs/parity.md).
  ref_x = [torch.tensor(e, dtype=torch.float64, requires_grad=True)
           for e in embs]
  ref_terms = [tr.trinet_loss(e, P, K, margin=0., eps=eps) for e in ref_x]
  ref_total = sum(ref_terms)
  ref_total.backward()

  def total(es):
    return losses.deep_supervision_loss(dict(zip(dare.EMBEDDINGS, es)),
                                        jnp.asarray(pids), eps)[0]
  got_total, got_grads = jax.value_and_grad(total)(
      [jnp.asarray(e) for e in embs])
  single, single_grad = jax.value_and_grad(losses.batch_hard_soft_margin)(
      jnp.asarray(embs[0]), jnp.asarray(pids), eps)
  np.testing.assert_allclose(single, ref_terms[0].item(), rtol=REL)
  np.testing.assert_allclose(single_grad, ref_x[0].grad.numpy(), rtol=REL,
                             atol=REL * np.abs(ref_x[0].grad.numpy()).max())
  np.testing.assert_allclose(got_total, ref_total.item(), rtol=REL)
  for g, r in zip(got_grads, ref_x):
    r = r.grad.numpy()
    np.testing.assert_allclose(g, r, rtol=REL, atol=REL * np.abs(r).max())


def test_batchnorm_conventions_pytorch_momentum_01_is_flax_09():
  """One training step of BatchNorm: the same output and running mean; the
  running variance differs only by PyTorch's unbiased n / (n - 1)."""
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(0)
  x = rng.normal(1., 2., (4, 5, 3, 8)).astype(np.float32)  # NHWC, n = 60
  mean0 = rng.normal(size=8).astype(np.float32)
  var0 = rng.uniform(0.5, 2., 8).astype(np.float32)
  bn_t = torch.nn.BatchNorm2d(8, momentum=0.1, eps=1e-5).train()
  bn_t.running_mean.copy_(torch.from_numpy(mean0))
  bn_t.running_var.copy_(torch.from_numpy(var0))
  with torch.no_grad():
    y_t = bn_t(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
  c = default.get_config().model
  bn_f = resnet.make_norm(True, c.bn_momentum, c.bn_epsilon, None)()
  y_f, new = bn_f.apply(
      {'params': {'scale': np.ones(8, np.float32),
                  'bias': np.zeros(8, np.float32)},
       'batch_stats': {'mean': mean0, 'var': var0}}, x,
      mutable=['batch_stats'])
  np.testing.assert_allclose(y_f, y_t.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new['batch_stats']['mean'],
                             bn_t.running_mean.numpy(), rtol=1e-6)
  n = x.shape[0] * x.shape[1] * x.shape[2]
  batch_var = x.reshape(n, 8).var(axis=0)
  np.testing.assert_allclose(new['batch_stats']['var'],
                             0.9 * var0 + 0.1 * batch_var, rtol=1e-5)
  np.testing.assert_allclose(bn_t.running_var.numpy(),
                             0.9 * var0 + 0.1 * batch_var * n / (n - 1),
                             rtol=1e-5)


def test_pytorch_file_without_torch_says_how_to_install(tmp_path,
                                                        monkeypatch):
  path = tmp_path / 'resnet50.pth'
  path.write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'torch', None)  # import torch fails
  with pytest.raises(errors.ConfigError, match='pip install torch'):
    weights.read_state_dict(str(path))


# -------------------------------------------- keys: npz files, no torch.

@pytest.fixture(scope='module')
def r18():
  model = _model(18)
  variables = _random_variables(model, seed=3)
  return model, variables


def _save(tmp_path, sd, name='w.npz'):
  path = str(tmp_path / name)
  np.savez(path, **sd)
  return path


def test_npz_round_trip_of_the_whole_model(tmp_path, r18):
  model, variables = r18
  sd = weights.to_state_dict(variables)
  assert sd['conv1.weight'].shape == (64, 3, 7, 7)
  assert sd['layer2.0.downsample.0.weight'].shape == (128, 64, 1, 1)
  assert sd['layer2.0.downsample.1.running_var'].shape == (128,)
  assert sd['layer1_fc.0.weight'].shape == (1024, 64)
  assert sd['layer4_fc.4.weight'].shape == (128, 1024)
  assert sd['fusion_conv.weight'].shape == (1, 4, 1)
  sd['layer1.0.bn1.num_batches_tracked'] = np.array(7)
  sd['fc.weight'] = np.zeros((1000, 512), np.float32)
  path = _save(tmp_path, sd)
  fresh = _random_variables(model, seed=4)
  got = weights.load_dare_checkpoint(path, fresh)
  jax.tree.map(np.testing.assert_array_equal, got, variables)
  # Backbone only: the heads stay as they were, the backbone is the file's.
  params, stats = weights.load_backbone(path, fresh['params'],
                                        fresh['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, params['backbone'],
               variables['params']['backbone'])
  jax.tree.map(np.testing.assert_array_equal, stats['backbone'],
               variables['batch_stats']['backbone'])
  jax.tree.map(np.testing.assert_array_equal, params['exit2'],
               fresh['params']['exit2'])
  np.testing.assert_array_equal(params['fusion'], fresh['params']['fusion'])


def test_wrong_file_lists_every_missing_unexpected_and_misshaped_key(
    tmp_path, r18):
  model, variables = r18
  sd = weights.to_state_dict(variables, full=False)
  del sd['layer4.1.bn2.running_var'], sd['conv1.weight']
  sd['layer1.0.bn1.weight'] = np.ones((65,), np.float32)
  sd['layer9.0.conv1.weight'] = np.ones((3, 3), np.float32)
  sd['aux.bias'] = np.ones((2,), np.float32)
  sd['fc.weight'] = np.ones((1000, 512), np.float32)  # ignored, not listed
  sd['layer1.0.bn1.num_batches_tracked'] = np.array(3)  # ignored
  path = _save(tmp_path, sd)
  with pytest.raises(errors.ConfigError) as e:
    weights.load_backbone(path, variables['params'], variables['batch_stats'])
  msg = str(e.value)
  assert ('  missing (2):\n    conv1.weight [64, 3, 7, 7]\n'
          '    layer4.1.bn2.running_var [512]\n') in msg
  assert ('  unexpected (2):\n    aux.bias [2]\n'
          '    layer9.0.conv1.weight [3, 3]\n') in msg
  assert ('  wrong shape (1):\n    layer1.0.bn1.weight: file [65], model '
          'expects [64]\n') in msg
  assert 'fc.weight' not in msg and 'num_batches_tracked' not in msg


def test_resnet18_file_into_resnet50_fails_listing_the_keys(tmp_path, r18):
  _, variables = r18
  path = _save(tmp_path, weights.to_state_dict(variables, full=False))
  v50 = jax.eval_shape(lambda: _model(50).init(jax.random.key(0),
                                               jnp.zeros((1, H, W, 3))))
  with pytest.raises(errors.ConfigError) as e:
    weights.load_backbone(path, v50['params'], v50['batch_stats'])
  msg = str(e.value)
  assert 'layer1.0.conv3.weight [256, 64, 1, 1]' in msg  # missing
  assert 'layer1.0.conv1.weight: file [64, 64, 3, 3], model expects ' \
         '[64, 64, 1, 1]' in msg
  assert 'layer4.2.bn3.running_mean [2048]' in msg


def test_backbone_only_file_is_not_a_whole_dare_model(tmp_path, r18):
  model, variables = r18
  path = _save(tmp_path, weights.to_state_dict(variables, full=False))
  with pytest.raises(errors.ConfigError) as e:
    weights.load_dare_checkpoint(path, variables)
  msg = str(e.value)
  assert 'missing (33):' in msg  # 4 heads x 8 tensors + the fusion
  assert 'fusion_conv.weight [1, 4, 1]' in msg
  assert 'layer3_fc.1.running_var [1024]' in msg


def test_trinet_model_reads_the_stage4_head_only(tmp_path, r18):
  _, variables = r18
  sd = weights.to_state_dict(variables)
  path = _save(tmp_path, sd)
  trinet = _random_variables(_model(18, heads='trinet'), seed=5)
  with pytest.raises(errors.ConfigError, match='unexpected \\(25\\)'):
    weights.load_dare_checkpoint(path, trinet)  # 3 extra heads + fusion
  keep = {k: v for k, v in sd.items()
          if not k.startswith(('layer1_fc', 'layer2_fc', 'layer3_fc',
                               'fusion'))}
  got = weights.load_dare_checkpoint(_save(tmp_path, keep, 't.npz'), trinet)
  np.testing.assert_array_equal(got['params']['exit4']['fc2']['kernel'],
                                variables['params']['exit4']['fc2']['kernel'])


def test_prefix_and_data_parallel_wrapper_are_stripped(tmp_path, r18):
  _, variables = r18
  sd = weights.to_state_dict(variables, full=False)
  path = _save(tmp_path, {f'module.base.{k}': v for k, v in sd.items()})
  params, _ = weights.load_backbone(path, variables['params'],
                                    variables['batch_stats'], prefix='base.')
  np.testing.assert_array_equal(params['backbone']['conv1']['kernel'],
                                variables['params']['backbone']['conv1']
                                ['kernel'])


def test_missing_file_and_unknown_format_are_config_errors(tmp_path, r18):
  _, variables = r18
  with pytest.raises(errors.ConfigError, match='does not exist'):
    weights.load_backbone(str(tmp_path / 'nope.pth'), variables['params'],
                          variables['batch_stats'])
  (tmp_path / 'w.h5').write_bytes(b'')
  with pytest.raises(errors.ConfigError, match='unknown weights format'):
    weights.read_state_dict(str(tmp_path / 'w.h5'))


# ------------------------------------------------ --config.model.pretrained.

@pytest.mark.slow
def test_model_pretrained_initialises_the_backbone(tmp_path):
  from dare_jax import builder  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  model = dare.from_config(config.model)
  h, w = config.data.input_size
  source = _random_variables(model, seed=6, h=h, w=w)
  config.model.pretrained = _save(tmp_path, weights.to_state_dict(source))
  workdir = str(tmp_path / 'run')
  mngr = builder.checkpoint_manager(config, workdir)
  state, meta = builder.restore_or_init(builder.build(config), mngr, workdir)
  mngr.close()
  assert meta == {} and int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(state.params['backbone']),
               source['params']['backbone'])
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(state.batch_stats['backbone']),
               source['batch_stats']['backbone'])
  # The heads are a fresh initialisation, not the file's.
  assert not np.array_equal(jax.device_get(state.params['fusion']),
                            source['params']['fusion'])


# ------------------------------------------------------ tools/convert_weights.

@pytest.mark.slow
def test_convert_weights_writes_the_npz_and_an_evaluable_checkpoint(tmp_path):
  from dare_jax import builder  # pylint: disable=g-import-not-at-top
  from dare_jax.tools import convert_weights  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  h, w = config.data.input_size
  source = _random_variables(dare.from_config(config.model), seed=7, h=h, w=w)
  sd = {f'module.{k}': v for k, v in weights.to_state_dict(source).items()}
  src = _save(tmp_path, sd, 'checkpoint.npz')
  out_dir = str(tmp_path / 'converted')
  out = convert_weights.convert(config, src, out_dir, full=True)
  assert out['loaded'] == 'full' and out['step'] == 0
  # The npz is the stripped state_dict, read back without PyTorch.
  got = weights.read_state_dict(out['npz'])
  assert sorted(got) == sorted(k[len('module.'):] for k in sd)
  for k, v in got.items():
    np.testing.assert_array_equal(v, sd['module.' + k])
  # The checkpoint is what --mode=eval --workdir=OUT_DIR restores.
  mngr = builder.checkpoint_manager(config, out_dir, read_only=True)
  state, meta = builder.restore_latest(builder.build(config), mngr, out_dir)
  mngr.close()
  assert int(state.step) == 0 and meta['train_loss'] == {}
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(builder.variables(state)), source)
  with pytest.raises(errors.CheckpointError, match='already holds'):
    convert_weights.convert(config, src, out_dir, full=True)


@pytest.mark.slow
def test_convert_weights_cli_reports_a_bad_file_in_one_line(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  src = _save(tmp_path, {'conv1.weight': np.zeros((3, 3), np.float32)})
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, '-m', 'dare_jax.tools.convert_weights', src,
       str(tmp_path / 'out'), f'--config={root}/configs/smoke.py'],
      cwd=root, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1, proc.stderr
  assert 'Traceback' not in proc.stderr
  assert ('error: ' + src + ': the weights do not fit the backbone.'
          in proc.stderr)
  assert 'conv1.weight: file [3, 3], model expects [4, 3, 7, 7]' in proc.stderr
  assert not os.path.exists(tmp_path / 'out' / 'weights.npz')


# ------------------------------------------------------------- DenseNet.

# torchvision's published parameter counts minus the 1000-way classifier.
TORCHVISION_DENSENET_NO_FC = {121: 7_978_856 - 1_025_000,
                              169: 14_149_480 - 1_665_000,
                              201: 20_013_928 - 1_921_000,
                              161: 28_681_000 - 2_209_000}


@pytest.mark.slow
@pytest.mark.parametrize('depth', [121, 169, 201, 161])
def test_densenet_parameter_count_matches_torchvision(depth):
  model = _model(depth, backbone='densenet')
  v = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                        jnp.zeros((1, H, W, 3))))
  bb = dict(v['params']['backbone'])
  channels = densenet.stage_channels(*densenet.resolve_depth(depth))
  # The 3 exit BatchNorms are DaRe's, not torchvision's.
  exit_norms = [bb.pop(f'exit_norm{s}') for s in (1, 2, 3)]
  assert [n['scale'].shape[0] for n in exit_norms] == list(channels[:3])
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(bb))
  assert n == TORCHVISION_DENSENET_NO_FC[depth]
  assert v['params']['exit4']['fc1']['kernel'].shape == (channels[3], 1024)


@pytest.fixture(scope='module')
def densenet_nets(tmp_path_factory):
  torch = pytest.importorskip('torch')
  from dare_jax.references import torch_dare as tr  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)
  g = torch.Generator().manual_seed(121)
  net = tr.randomize_(tr.DaReDenseNet(121, gap=(H // 32, W // 32)), g).eval()
  tv = tr.randomize_(tr.DenseNet(121), g).eval()
  x = torch.randn(2, 3, H, W, generator=g)
  with torch.no_grad():
    tv_norm5 = torch.relu(tv.blocks(x)[-1]).numpy()
    maps = [m.numpy() for m in net.stage_maps(x)]
    embs = [e.numpy() for e in net(x)]
  d = tmp_path_factory.mktemp('densenet')
  tv_path = str(d / 'densenet121.pth')
  torch.save(tv.state_dict(), tv_path)
  dare_path = str(d / 'checkpoint.pth.tar')
  torch.save({'arch': 'dare_D', 'state_dict': {
      'module.' + k: v for k, v in tr.authors_state_dict(net).items()}},
             dare_path)
  model = _model(121, backbone='densenet')
  return dict(x=x.permute(0, 2, 3, 1).numpy(), tv_norm5=tv_norm5, maps=maps,
              embs=embs, tv_path=tv_path, dare_path=dare_path, model=model,
              run=_forward(model))


@pytest.mark.slow
def test_torchvision_densenet121_file_loads_and_matches_pytorch(
    densenet_nets):
  n = densenet_nets
  variables = _random_variables(n['model'], seed=8)
  params, stats = weights.load_backbone(n['tv_path'], variables['params'],
                                        variables['batch_stats'])
  # The exits' own BatchNorms are not in an ImageNet file: left as they were.
  for s in (1, 2, 3):
    jax.tree.map(np.testing.assert_array_equal,
                 params['backbone'][f'exit_norm{s}'],
                 variables['params']['backbone'][f'exit_norm{s}'])
  _, maps = n['run']({'params': params, 'batch_stats': stats}, n['x'])
  want = n['tv_norm5'].transpose(0, 2, 3, 1)
  assert maps[3].shape == want.shape
  assert _rel_err(maps[3], want) <= REL, _rel_err(maps[3], want)


def test_authors_dare_densenet_checkpoint_embeddings_equal_pytorch(
    densenet_nets):
  n = densenet_nets
  variables = weights.load_dare_checkpoint(
      n['dare_path'], _random_variables(n['model'], seed=9))
  out, maps = n['run'](variables, n['x'])
  for s, (got, want) in enumerate(zip(maps, n['maps']), 1):
    want = want.transpose(0, 2, 3, 1)
    assert got.shape == want.shape, s
    assert _rel_err(got, want) <= REL, (s, _rel_err(got, want))
  for name, want in zip(dare.EMBEDDINGS, n['embs']):
    assert _rel_err(out[name], want) <= REL, (name, _rel_err(out[name], want))


def _tiny_data_config(tmp_path, input_size=(H, W), resize_factor=1.125):
  """configs/smoke.py (synthetic data, the tiny basic-block ResNet) with the
  input size the parity tests use; the dataset is cached under tmp_path."""
  config = smoke.get_config()
  config.data.cache_dir = str(tmp_path / 'cache')
  config.data.input_size = input_size
  config.data.resize_factor = resize_factor
  return config


def _compile_free_init_state(config, model, tx, mesh):
  """A stand-in for builder.init_state that compiles nothing: the same tree,
  shapes and (replicated) placement, with Flax's deterministic initial
  BatchNorm (scale and running variance 1, bias and running mean 0) and
  zeros elsewhere (the exit heads, fusion and Adam state, which a backbone
  file does not touch). Compiling DenseNet-201's real init takes ~50 s on
  2 CPU cores, 4x its forward."""
  from dare_jax import builder  # pylint: disable=g-import-not-at-top
  from dare_jax import distributed  # pylint: disable=g-import-not-at-top
  abstract = jax.eval_shape(builder.init_fn(config, model, tx, mesh))

  def fill(path, x):
    names = [getattr(k, 'name', getattr(k, 'key', None)) for k in path]
    one = names[0] in ('params', 'batch_stats') and names[-1] in ('scale',
                                                                  'var')
    return np.full(x.shape, 1 if one else 0, x.dtype)
  return jax.device_put(jax.tree_util.tree_map_with_path(fill, abstract),
                        distributed.replicated(mesh))


@pytest.mark.slow
def test_densenet201_file_through_model_pretrained_equals_pytorch(
    tmp_path, monkeypatch):
  """--config.model.backbone=densenet --config.model.depth=201
  --config.model.pretrained=densenet201.pth: builder.restore_or_init
  reads torchvision's file, and the model's 4 stage maps equal PyTorch's.
  (Its fresh initialisation is a compile-free stand-in, see above.)"""
  torch = pytest.importorskip('torch')
  from dare_jax.references import torch_dare as tr  # pylint: disable=g-import-not-at-top
  from dare_jax import builder  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(builder, 'init_state', _compile_free_init_state)
  torch.set_num_threads(2)
  g = torch.Generator().manual_seed(201)
  tv = tr.randomize_(tr.DenseNet(201), g).eval()
  x = torch.randn(2, 3, H, W, generator=g)
  c_out = tv.block_channels
  with torch.no_grad():
    outs = tv.blocks(x)
    # Exits 1..3 pool ReLU(BN(dense block s)) with the exit's own BN, which
    # an ImageNet file does not have: it keeps the stand-in's values (weight
    # 1, bias 0, running mean 0, running var 1; the real init draws the
    # weight from U(0, 1), as the authors' PyTorch 0.2 did). Exit 4:
    # ReLU(norm5(...)).
    want = [torch.relu(torch.nn.functional.batch_norm(
        o, torch.zeros(c), torch.ones(c), eps=1e-5))
            for o, c in zip(outs[:3], c_out)] + [torch.relu(outs[3])]
    want = [m.numpy().transpose(0, 2, 3, 1) for m in want]
  path = str(tmp_path / 'densenet201-c1103571.pth')
  torch.save(tv.state_dict(), path)

  config = _tiny_data_config(tmp_path)
  config.model.backbone, config.model.depth = 'densenet', 201
  config.model.pretrained = path
  workdir = str(tmp_path / 'run')
  built = builder.build(config)
  mngr = builder.checkpoint_manager(config, workdir)
  state, meta = builder.restore_or_init(built, mngr, workdir)
  mngr.close()
  assert meta == {} and int(state.step) == 0
  variables = jax.device_get(builder.variables(state))
  # Only the backbone came from the file: the heads are as initialised.
  assert not np.any(variables['params']['exit4']['fc1']['kernel'])
  assert not np.any(variables['params']['fusion'])
  _, maps = _forward(built.model)(variables, x.permute(0, 2, 3, 1).numpy())
  for s, (got, w) in enumerate(zip(maps, want), 1):
    assert got.shape == w.shape, (s, got.shape, w.shape)
    assert _rel_err(got, w) <= REL, (s, _rel_err(got, w))


# ------------------------------- the authors' checkpoint through --mode=eval.

@pytest.mark.slow
def test_authors_checkpoint_converted_and_evaluated_equals_pytorch_tencrop(
    tmp_path):
  """checkpoint.pth.tar -> convert_weights --full -> --mode=eval: the
  features.npz embeddings (10 views averaged) equal the authors' evaluation
  in PyTorch: the same stored images, torchvision TenCrop, ToTensor,
  Normalize(ImageNet), their DaRe, the mean over the 10 views."""
  torch = pytest.importorskip('torch')
  from dare_jax.references import torch_dare as tr  # pylint: disable=g-import-not-at-top
  from dare_jax import eval_mode  # pylint: disable=g-import-not-at-top
  from dare_jax.data import augment  # pylint: disable=g-import-not-at-top
  from dare_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from dare_jax.data import spec  # pylint: disable=g-import-not-at-top
  from dare_jax.tools import convert_weights  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)
  # Images stored at 70 x 35 (64 x 32 x 1.1): the width margin 3 is odd, so
  # the flipped image's centre crop (torchvision's view 9) is NOT the mirror
  # of the centre crop (view 4); the test tells the two apart.
  input_hw = (H, W)
  config = _tiny_data_config(tmp_path, input_hw, resize_factor=1.1)
  m = config.model  # smoke's: basic blocks (1, 1, 1, 1), width 4
  g = torch.Generator().manual_seed(50)
  net = tr.randomize_(tr.DaReNet(
      0, gap=(H // 32, W // 32), fc1=m.head_hidden, fc2=m.embedding_dim,
      width=m.width, block=m.block, layers=m.stage_sizes), g).eval()
  src = str(tmp_path / 'checkpoint.pth.tar')
  torch.save({'iterations': 60000, 'arch': 'dare_R',
              'state_dict': {'module.' + k: v
                             for k, v in net.state_dict().items()}}, src)
  workdir = str(tmp_path / 'dare')
  out = convert_weights.convert(config, src, workdir, full=True)
  assert out['loaded'] == 'full'
  with jax.default_matmul_precision('highest'):
    results = eval_mode.evaluate_checkpoint(config, workdir)
  assert set(dare.EMBEDDINGS) <= set(results)
  with np.load(os.path.join(workdir, 'features.npz')) as f:
    feats = {k: f[k] for k in f.files}

  dataset = datasets.load_dataset(config.data)
  resize_hw = spec.ImageSize.from_data_config(config.data).resize_hw
  assert resize_hw == (70, 35)
  for what in ('query', 'gallery'):
    images = getattr(dataset, what).images
    assert images.shape[1:3] == resize_hw
    # Our views are torchvision's TenCrop, in its order, pixel for pixel.
    ours = augment.ten_crop(images[:4], input_hw)
    theirs = torch.stack(tr.ten_crop(torch.from_numpy(images[:4]).permute(
        0, 3, 1, 2), input_hw), dim=1).permute(0, 1, 3, 4, 2).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(ours[:, 9], ours[:, 4, :, ::-1])
    want = tr.tta_embeddings(net, torch.from_numpy(images), input_hw,
                             config.data.mean, config.data.std)
    for name, w in zip(dare.EMBEDDINGS, want):
      got = feats[f'{what}_{name}']
      assert got.shape == w.shape, (what, name)
      assert _rel_err(got, w) <= REL, (what, name, _rel_err(got, w))
