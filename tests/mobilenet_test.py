"""MobileNetV2 DaRe (models/mobilenet.py): layout, both formulations, weight
import of both key layouts, and parity with an independent PyTorch
MobileNetV2 DaRe (dare_jax/references/torch_mobilenet.py, which imports no
dare_jax code) on random weights (always) and on the shared ImageNet file
(skipped without ../shared/weights)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from dare_jax import errors
from dare_jax.budget import costs
from dare_jax.models import dare
from dare_jax.models import mobilenet
from dare_jax.models import weights

torch = pytest.importorskip('torch')
from dare_jax.references import torch_dare  # pylint: disable=g-import-not-at-top,wrong-import-position
from dare_jax.references import torch_mobilenet  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.xdist_group('mobilenet')

SHARED_FILE = os.path.join(os.path.dirname(__file__), '..', '..', 'shared',
                           'weights', 'mobilenet_v2_imagenet_features.pt')
needs_shared = pytest.mark.skipif(not os.path.isfile(SHARED_FILE),
                                  reason='../shared/weights is absent')
H, W = 64, 32
TOL = 1e-5  # relative to the largest value compared


def _model(depthwise='shift', conv1x1='dot', wm=1.0):
  c = default.get_config().model
  c.backbone, c.depthwise, c.conv1x1, c.width_multiplier = (
      'mobilenet_v2', depthwise, conv1x1, wm)
  return dare.from_config(c)


def _init(model, h=H, w=W):
  # Jitted: one compiled program, not hundreds of small eager ones.
  return jax.device_get(jax.jit(model.init)(jax.random.key(0),
                                            jnp.zeros((1, h, w, 3))))


def _torch_dare(seed=0, wm=1.0):
  g = torch.Generator().manual_seed(seed)
  net = torch_mobilenet.MobileNetV2DaRe(wm)
  torch_dare.randomize_(net, g)
  with torch.no_grad():
    net.fusion.uniform_(-1., 1., generator=g)
  return net.eval()


def _load_torch_dare(net, variables):
  """The PyTorch DaRe's weights into our variables: the backbone through
  weights.load_backbone (the module under test), the heads written here
  from PyTorch's Linear/BatchNorm1d layouts."""
  sd = {k: v.numpy() for k, v in net.state_dict().items()}
  backbone = {k[len('backbone.'):]: v for k, v in sd.items()
              if k.startswith('backbone.')}
  params, stats = weights.load_backbone('torch', variables['params'],
                                        variables['batch_stats'],
                                        state_dict=backbone)
  params, stats = dict(params), dict(stats)
  for s in range(1, 5):
    h = f'heads.{s - 1}'
    params[f'exit{s}'] = {
        'fc1': {'kernel': sd[f'{h}.0.weight'].T, 'bias': sd[f'{h}.0.bias']},
        'bn': {'scale': sd[f'{h}.1.weight'], 'bias': sd[f'{h}.1.bias']},
        'fc2': {'kernel': sd[f'{h}.3.weight'].T, 'bias': sd[f'{h}.3.bias']}}
    stats[f'exit{s}'] = {'bn': {'mean': sd[f'{h}.1.running_mean'],
                                'var': sd[f'{h}.1.running_var']}}
  params['fusion'] = sd['fusion']
  return {'params': params, 'batch_stats': stats}


def _stage_maps(model, variables, x):
  net = mobilenet.MobileNetV2(model.width_multiplier,
                              dot_1x1=model.conv1x1_dot,
                              shift_depthwise=model.depthwise_shift,
                              norm=_eval_norm)
  v = {'params': variables['params']['backbone'],
       'batch_stats': variables['batch_stats']['backbone']}
  return jax.jit(net.apply)(v, x)


def _eval_norm(**kw):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.BatchNorm(use_running_average=True, epsilon=1e-5, **kw)


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _compare(net, model, variables, x_nhwc):
  with torch.no_grad():
    xt = torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)).copy())
    want_maps = [m.numpy().transpose(0, 2, 3, 1)
                 for m in net.backbone.stage_maps(xt)]
    want = [e.numpy() for e in net(xt)]
  with jax.default_matmul_precision('highest'):
    got_maps = _stage_maps(model, variables, x_nhwc)
    got = jax.jit(model.apply)(variables, x_nhwc)
  for s in range(4):
    assert got_maps[s].shape == want_maps[s].shape
    assert _rel(got_maps[s], want_maps[s]) < TOL, s
  for s, name in enumerate(dare.EMBEDDINGS):
    assert _rel(got[name], want[s]) < TOL, name


@pytest.mark.slow
def test_layout_channels_resolutions_and_parameter_count():
  model = _model()
  v = _init(model, 128, 64)
  maps = _stage_maps(model, v, np.zeros((1, 128, 64, 3), np.float32))
  assert [m.shape for m in maps] == [(1, 32, 16, 24), (1, 16, 8, 32),
                                     (1, 8, 4, 96), (1, 4, 2, 1280)]
  assert mobilenet.stage_channels(1.0) == (24, 32, 96, 1280)
  # torchvision's mobilenet_v2().features: 2,223,872 parameters, 34,112
  # running-statistics values (the shared file's 2,258,036 less 52
  # num_batches_tracked).
  n = sum(x.size for x in jax.tree.leaves(v['params']['backbone']))
  m = sum(x.size for x in jax.tree.leaves(v['batch_stats']['backbone']))
  assert (n, m) == (2223872, 34112)
  ref = torch_mobilenet.MobileNetV2(0.5)
  assert mobilenet.stage_channels(0.5) == tuple(ref.channels())


@pytest.mark.parametrize('depthwise,conv1x1', [('shift', 'dot'),
                                               ('conv', 'conv')])
@pytest.mark.slow
def test_parity_with_pytorch_on_random_weights(depthwise, conv1x1):
  net = _torch_dare(seed=1)
  model = _model(depthwise, conv1x1)
  variables = _load_torch_dare(net, _init(model))
  x = np.random.default_rng(0).normal(size=(2, H, W, 3)).astype(np.float32)
  _compare(net, model, variables, x)


@pytest.mark.slow
def test_parity_at_width_multiplier_half_and_odd_input():
  net = _torch_dare(seed=2, wm=0.5)
  model = _model(wm=0.5)
  variables = _load_torch_dare(net, _init(model, 70, 38))
  x = np.random.default_rng(1).normal(size=(2, 70, 38, 3)).astype(np.float32)
  _compare(net, model, variables, x)


@pytest.mark.slow
def test_formulations_share_parameters_and_values():
  """'shift'/'dot' and 'conv'/'conv' have one parameter tree, and the same
  training-mode loss and gradients on it, in float64 (in float32 the
  gradients of the biases that a following BatchNorm cancels are rounding
  noise, and the two formulations round differently)."""
  fast, conv = _model('shift', 'dot'), _model('conv', 'conv')
  v = _init(fast)
  assert jax.tree.structure(v) == jax.tree.structure(_init(conv))
  assert jax.tree.map(np.shape, v) == jax.tree.map(np.shape, _init(conv))
  with jax.enable_x64(True):
    v = jax.tree.map(lambda a: np.asarray(a, np.float64), v)
    x = np.random.default_rng(3).normal(size=(4, H, W, 3))

    def loss(params, model):
      out, _ = model.apply({'params': params,
                            'batch_stats': v['batch_stats']}, x, train=True,
                           mutable=['batch_stats'])
      return sum(jnp.sum(jnp.sin(e)) for e in out.values())

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    la, ga = grad(v['params'], fast.clone(dtype=jnp.float64))
    lb, gb = grad(v['params'], conv.clone(dtype=jnp.float64))
  np.testing.assert_allclose(la, lb, rtol=1e-12)
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(gb))
  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.slow
def test_stage_continuation_equals_the_full_forward():
  model = _model()
  v = _init(model)
  x = jax.random.normal(jax.random.key(4), (2, H, W, 3))
  apply = jax.jit(model.apply, static_argnames=('first_exit', 'num_exits',
                                                'return_carry'))
  full = apply(v, x)
  emb, carry = apply(v, x, num_exits=2, return_carry=True)
  rest = apply(v, carry, first_exit=3, num_exits=4)
  for name in ('stage1', 'stage2'):
    np.testing.assert_allclose(emb[name], full[name], rtol=1e-5, atol=1e-6)
  for name in ('stage3', 'stage4'):
    np.testing.assert_allclose(rest[name], full[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_costs_count_the_depthwise_convolutions_in_both_formulations():
  """Mul-Adds of the stem and features[1] at 64x32, counted by hand: the
  traced count must not lose the shifted multiply-adds."""
  fast, conv = _model('shift', 'dot'), _model('conv', 'conv')
  a, b = costs.exit_costs(fast, (H, W)), costs.exit_costs(conv, (H, W))
  assert a == b
  # stage 1 at 64x32 by hand: stem 32x16 x 27 x 32; features[1]: dw 32x16 x
  # 9 x 32, pw 32x16 x 32 x 16; features[2]: 1x1 16->96 at 32x16, dw /2 to
  # 16x8 x 9 x 96, 96->24 at 16x8; features[3]: 24->144, dw 144, 144->24 at
  # 16x8; the head 24 x 1024 + 1024 x 128.
  hw1, hw2 = 32 * 16, 16 * 8
  want = (hw1 * 27 * 32 + hw1 * 9 * 32 + hw1 * 32 * 16 + hw1 * 16 * 96 +
          hw2 * 9 * 96 + hw2 * 96 * 24 + hw2 * (24 * 144 + 9 * 144 +
                                                144 * 24) +
          24 * 1024 + 1024 * 128)
  assert a['stage1'] == want


def _shared_state_dict():
  return weights.read_state_dict(SHARED_FILE)


@pytest.mark.slow
@needs_shared
def test_parity_with_pytorch_on_the_shared_imagenet_weights():
  net = _torch_dare(seed=5)
  flat = torch.load(SHARED_FILE, map_location='cpu', weights_only=True)
  missing, unexpected = net.backbone.load_state_dict(flat, strict=True)
  assert not missing and not unexpected
  net.eval()
  model = _model()
  variables = _init(model)
  p, b = weights.load_backbone(SHARED_FILE, variables['params'],
                               variables['batch_stats'])
  ours = _load_torch_dare(net, variables)
  # The backbone read from the file equals the one read from PyTorch's.
  for x, y in zip(jax.tree.leaves(p['backbone']),
                  jax.tree.leaves(ours['params']['backbone'])):
    np.testing.assert_array_equal(x, y)
  x = np.random.default_rng(2).uniform(-2, 2, (2, 128, 64, 3)).astype(
      np.float32)
  _compare(net, model, ours, x)


@needs_shared
def test_torchvision_nested_layout_reads_the_same_weights(tmp_path):
  flat = torch.load(SHARED_FILE, map_location='cpu', weights_only=True)
  nested = torch_mobilenet.nested_state_dict(flat)
  assert 'features.1.conv.0.0.weight' in nested
  assert 'features.2.conv.3.running_var' in nested
  nested['classifier.1.weight'] = torch.zeros(1000, 1280)
  nested['classifier.1.bias'] = torch.zeros(1000)
  path = str(tmp_path / 'mobilenet_v2-b0353104.pth')
  torch.save(nested, path)
  v = _init(_model())
  a = weights.load_backbone(SHARED_FILE, v['params'], v['batch_stats'])
  b = weights.load_backbone(path, v['params'], v['batch_stats'])
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # Every value moved from its fresh initialisation.
  assert not np.allclose(a[0]['backbone']['features_5']['conv_3']['kernel'],
                         v['params']['backbone']['features_5']['conv_3'][
                             'kernel'])


@needs_shared
def test_a_wrong_file_names_every_bad_key():
  sd = dict(_shared_state_dict())
  del sd['features.7.conv.3.weight']
  sd['features.7.conv.9.weight'] = np.zeros((3,), np.float32)
  sd['features.18.1.weight'] = np.zeros((7,), np.float32)
  v = _init(_model())
  with pytest.raises(errors.ConfigError) as e:
    weights.load_backbone('bad.npz', v['params'], v['batch_stats'],
                          state_dict=sd)
  msg = str(e.value)
  assert 'missing (1):\n    features.7.conv.3.weight [192, 1, 3, 3]' in msg
  assert 'unexpected (1):\n    features.7.conv.9.weight [3]' in msg
  assert 'features.18.1.weight: file [7], model expects [1280]' in msg


@pytest.mark.parametrize('variant', ['', 'scratch', 'trinet', 'nodeep'])
def test_cuhk01_mobilenet_configs_validate(variant):
  from configs import cuhk01_mobilenet  # pylint: disable=g-import-not-at-top
  from dare_jax import configlib  # pylint: disable=g-import-not-at-top
  c = cuhk01_mobilenet.get_config(variant)
  configlib.validate(c, 1)
  assert c.model.backbone == 'mobilenet_v2'
  assert c.model.pretrained == ('none' if variant == 'scratch' else
                                cuhk01_mobilenet.WEIGHTS)
  assert (c.model.heads == 'trinet') == (variant == 'trinet')
  assert c.loss.deep_supervision == (variant != 'nodeep')
  with pytest.raises(ValueError, match='unknown variant'):
    cuhk01_mobilenet.get_config('scrach')


def test_an_absent_weights_file_is_refused_by_name(tmp_path):
  from configs import cuhk01_mobilenet  # pylint: disable=g-import-not-at-top
  from dare_jax import builder  # pylint: disable=g-import-not-at-top
  c = cuhk01_mobilenet.get_config()
  c.model.pretrained = str(tmp_path / 'mobilenet_v2_imagenet_features.pt')
  with pytest.raises(errors.ConfigError,
                     match='mobilenet_v2_imagenet_features.pt.: no such file'):
    builder.check_pretrained(c.model)
  c.model.pretrained = ''
  with pytest.raises(errors.ConfigError, match='mobilenet_v2-b0353104.pth'):
    builder.check_pretrained(c.model)
  c.model.pretrained = 'none'
  builder.check_pretrained(c.model)  # from scratch on purpose


@pytest.mark.slow
def test_onnx_export_equals_the_jax_forward():
  """The bundle's ONNX model (depthwise convolutions as grouped Conv nodes,
  dare.for_onnx) and the anytime stages in onnxruntime give the CPU
  formulation's embeddings."""
  from dare_jax.inference import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from dare_jax.inference import bundle  # pylint: disable=g-import-not-at-top
  model = _model('shift', 'dot')
  v = _init(model)
  x = np.random.default_rng(6).normal(size=(3, H, W, 3)).astype(np.float32)
  with jax.default_matmul_precision('highest'):
    want = jax.device_get(model.apply(v, x))
  got = bundle.onnx_forward(bundle.onnx_session(
      bundle.export_onnx(model, v, (H, W))))(x)
  for name in dare.EMBEDDINGS:
    assert _rel(got[name], want[name]) < 1e-5, name
  runner = engine_lib.OnnxStageRunner(model, v, (H, W), max_batch=4)
  carry, embs = runner.pad(x), []
  for s in range(1, 5):
    carry, e = runner.stage(s, carry)
    embs.append(np.asarray(e)[:3])
  assert _rel(runner.fuse(*embs), want['fused']) < 1e-5


@pytest.mark.slow
@needs_shared
def test_convert_weights_reads_the_nested_layout(tmp_path):
  """tools/convert_weights on torchvision's nested file writes the flat
  names, which read back to the same backbone as the shared file."""
  from configs import cuhk01_mobilenet  # pylint: disable=g-import-not-at-top
  from dare_jax.tools import convert_weights  # pylint: disable=g-import-not-at-top
  flat = torch.load(SHARED_FILE, map_location='cpu', weights_only=True)
  path = str(tmp_path / 'mobilenet_v2-b0353104.pth')
  torch.save(torch_mobilenet.nested_state_dict(flat), path)
  c = cuhk01_mobilenet.get_config()
  c.data.input_size = (H, W)
  out = convert_weights.convert(c, path, str(tmp_path / 'out'))
  with np.load(out['npz']) as z:
    got = {k: z[k] for k in z.files}
  want = {k: v.numpy() for k, v in flat.items()
          if not k.endswith('num_batches_tracked')}
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
