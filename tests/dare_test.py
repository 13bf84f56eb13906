"""The DaRe model: torchvision-layout backbone, exit heads, fusion."""

import functools

import flax
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from configs import smoke
from dare_jax.models import dare


def _n_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# torchvision's published parameter counts minus the 1000-way fc layer.
TORCHVISION_NO_FC = {18: 11_689_512 - 513_000, 34: 21_797_672 - 513_000,
                     50: 25_557_032 - 2_049_000, 101: 44_549_160 - 2_049_000}


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
def test_backbone_parameter_count_matches_torchvision(depth):
  c = default.get_config().model
  c.depth = depth
  model = dare.from_config(c)
  v = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                        jnp.zeros((1, 64, 32, 3))))
  assert _n_params(v['params']['backbone']) == TORCHVISION_NO_FC[depth]
  # Exit heads: Dense(C_s, 1024) + BN(1024) + Dense(1024, 128), with biases.
  ch = [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]
  for s, c_s in enumerate(ch, 1):
    head = v['params'][f'exit{s}']
    assert head['fc1']['kernel'].shape == (c_s, 1024)
    assert head['fc1']['bias'].shape == (1024,)
    assert head['bn']['scale'].shape == (1024,)
    assert head['fc2']['kernel'].shape == (1024, 128)
    assert head['fc2']['bias'].shape == (128,)
  assert v['params']['fusion'].shape == (4,)


def test_resnet50_stage_shapes_and_v15_stride():
  c = default.get_config().model
  model = dare.from_config(c)
  x = jnp.zeros((2, 256, 128, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  (out, inter) = jax.eval_shape(
      lambda v: model.apply(v, x, capture_intermediates=True,
                            mutable=['intermediates']), variables)
  bb = inter['intermediates']['backbone']
  assert out['stage1'].shape == (2, 128) and out['fused'].shape == (2, 128)
  maps, carry = bb['__call__'][0]  # (the stage maps, the carry)
  assert maps[0].shape == (2, 64, 32, 256)
  assert maps[1].shape == (2, 32, 16, 512)
  assert maps[2].shape == (2, 16, 8, 1024)
  assert maps[3].shape == (2, 8, 4, 2048) == carry.shape
  # torchvision v1.5: the first block of stage 2 keeps 64x32 in its 1x1 conv1
  # and halves it in the 3x3 conv2 (Caffe / v1 would halve in conv1).
  blk = bb['layer2_0']
  assert blk['conv1']['__call__'][0].shape == (2, 64, 32, 128)
  assert blk['conv2']['__call__'][0].shape == (2, 32, 16, 128)


def test_fusion_is_the_weighted_sum_of_the_exits():
  c = smoke.get_config().model
  model = dare.from_config(c)
  x = jax.random.normal(jax.random.key(1), (3, 32, 16, 3))
  variables = model.init(jax.random.key(0), x)
  w = np.asarray(variables['params']['fusion'])
  assert np.all(np.abs(w) <= 0.5) and len(set(w.tolist())) == 4
  params = flax.core.unfreeze(variables['params'])
  params['fusion'] = jnp.array([1.5, -2.0, 0.25, 3.0])
  out = model.apply({**variables, 'params': params}, x)
  want = (1.5 * out['stage1'] - 2.0 * out['stage2'] + 0.25 * out['stage3'] +
          3.0 * out['stage4'])
  np.testing.assert_allclose(out['fused'], want, rtol=1e-5, atol=1e-6)
  assert set(out) == {'stage1', 'stage2', 'stage3', 'stage4', 'fused'}
  for e in out.values():
    assert e.shape == (3, c.embedding_dim) and e.dtype == jnp.float32


def test_fusion_init_is_a_config_field():
  c = smoke.get_config().model
  c.fusion_init_low, c.fusion_init_high = 0.25, 0.25
  v = dare.from_config(c).init(jax.random.key(0), jnp.zeros((1, 32, 16, 3)))
  np.testing.assert_array_equal(v['params']['fusion'], np.full(4, 0.25))


@pytest.mark.slow
def test_train_mode_uses_batch_statistics_and_updates_them():
  c = smoke.get_config().model
  model = dare.from_config(c)
  x = jax.random.normal(jax.random.key(1), (4, 32, 16, 3)) * 3 + 1
  v = model.init(jax.random.key(0), x)
  out_train, new = model.apply(v, x, train=True, mutable=['batch_stats'])
  out_eval = model.apply(v, x, train=False)
  assert not np.allclose(out_train['stage4'], out_eval['stage4'])
  old_mean = v['batch_stats']['backbone']['bn1']['mean']
  new_mean = new['batch_stats']['backbone']['bn1']['mean']
  assert not np.allclose(old_mean, new_mean)


@pytest.mark.slow
def test_partial_forward_equals_the_full_one_and_skips_later_stages():
  model = dare.DaRe(block='basic', stage_sizes=(1, 1, 1, 1), width=4,
                    head_hidden=8, embedding_dim=4)
  x = jax.random.normal(jax.random.key(1), (2, 32, 16, 3))
  variables = model.init(jax.random.key(0), x)
  full = model.apply(variables, x)
  for n in (1, 2, 3):
    part = model.apply(variables, x, num_exits=n)
    assert sorted(part) == [f'stage{s}' for s in range(1, n + 1)]
    for k, v in part.items():
      np.testing.assert_array_equal(np.asarray(v), np.asarray(full[k]))
    # The later stages are not in the computation at all.
    jaxpr = str(jax.make_jaxpr(
        lambda v, x, n=n: model.apply(v, x, num_exits=n))(variables, x))
    assert jaxpr.count('conv_general_dilated') == (
        str(jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, x))
        .count('conv_general_dilated') - 2 * (4 - n) - (4 - n))
  with pytest.raises(ValueError, match='num_exits'):
    model.apply(variables, x, num_exits=5)


def test_trinet_has_the_stage4_head_only():
  c = smoke.get_config()
  c.model.heads = 'trinet'
  model = dare.from_config(c.model)
  x = jnp.zeros((2,) + tuple(c.data.input_size) + (3,))
  variables = model.init(jax.random.key(0), x)
  assert sorted(variables['params']) == ['backbone', 'exit4']
  out = model.apply(variables, x)
  assert sorted(out) == ['stage4']
  assert dare.embedding_names(c.model) == ('stage4',)
  # The same backbone and head parameters as the DaRe of that config.
  full = dare.from_config(smoke.get_config().model).init(
      jax.random.key(0), x)['params']
  assert (jax.tree.map(jnp.shape, full['exit4']) ==
          jax.tree.map(jnp.shape, variables['params']['exit4']))
  c.model.heads = 'tri'
  with pytest.raises(Exception, match='model.heads'):
    dare.from_config(c.model)


def _conv_and_dot_dtypes(jaxpr) -> set:
  """The operand dtypes of every convolution and matmul in a jaxpr."""
  found = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ('conv_general_dilated', 'dot_general'):
      found.add(tuple(str(v.aval.dtype) for v in eqn.invars))
    for p in eqn.params.values():  # pjit, custom_vjp ... bodies
      if isinstance(p, jex_core.ClosedJaxpr):
        found |= _conv_and_dot_dtypes(p.jaxpr)
      elif isinstance(p, jex_core.Jaxpr):
        found |= _conv_and_dot_dtypes(p)
  return found


@pytest.mark.slow
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_where_it_matters():
  """Mixed precision: the same float32 parameters, every convolution and
  matmul on bfloat16 operands, float32 parameters, BatchNorm statistics,
  gradients and embeddings, and embeddings within bfloat16 rounding of the
  float32 model's."""
  c32 = smoke.get_config().model
  c16 = smoke.get_config().model
  c16.dtype = 'bfloat16'
  m32, m16 = dare.from_config(c32), dare.from_config(c16)
  x = jax.random.normal(jax.random.key(1), (8, 32, 16, 3))
  # Jitted, non-partitionable init: ~4x faster to build than eager on CPU.
  with jax.threefry_partitionable(False):
    v = jax.jit(m32.init)(jax.random.key(0), x)
  assert jax.tree.structure(jax.eval_shape(m16.init, jax.random.key(0), x)) \
      == jax.tree.structure(v)

  @functools.partial(jax.jit, static_argnums=0)
  def train_out(model, params):
    out, new = model.apply({'params': params,
                            'batch_stats': v['batch_stats']}, x, train=True,
                           mutable=['batch_stats'])
    return out, new['batch_stats']

  def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))

  # Eval mode: bfloat16 keeps 8 mantissa bits (rounding 2^-9 = 0.2%); ten
  # layers compound it to under 1% here (measured 0.3-0.8%).
  eval32, eval16 = jax.jit(m32.apply)(v, x), jax.jit(m16.apply)(v, x)
  for k in dare.EMBEDDINGS:
    assert eval16[k].dtype == jnp.float32
    assert 1e-4 < rel(eval16[k], eval32[k]) < 2e-2, k
  # Train mode normalises with the statistics of only 8 images, and at
  # 32x16 the stage-4 map is 1x1: that BatchNorm amplifies any perturbation
  # (rounding just the input to bfloat16 already moves stage 4 by 1.2%),
  # so the bound is looser (measured 1.5-5%); a wrong cast would be O(1).
  out32, stats32 = train_out(m32, v['params'])
  out16, stats16 = train_out(m16, v['params'])
  for k in dare.EMBEDDINGS:
    assert out16[k].dtype == jnp.float32
    assert 1e-4 < rel(out16[k], out32[k]) < 0.1, k
  for a, b in zip(jax.tree.leaves(stats16), jax.tree.leaves(stats32)):
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=0.05, atol=0.02)

  grads = jax.jit(jax.grad(lambda p: sum(
      jnp.sum(e**2) for e in train_out(m16, p)[0].values())))(v['params'])
  assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype('float32')}

  jaxpr16 = jax.make_jaxpr(lambda p: train_out(m16, p)[0])(v['params'])
  jaxpr32 = jax.make_jaxpr(lambda p: train_out(m32, p)[0])(v['params'])
  assert _conv_and_dot_dtypes(jaxpr16.jaxpr) == {('bfloat16', 'bfloat16')}
  assert _conv_and_dot_dtypes(jaxpr32.jaxpr) == {('float32', 'float32')}


@pytest.mark.slow
def test_pools_equal_flax_pools_with_explicit_padding():
  """models/pooling (written for jax2onnx) = nn.max_pool / nn.avg_pool,
  values and gradients, bit for bit, in float32 and bfloat16."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from dare_jax.models import pooling  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 17, 12, 5)),
                  jnp.float32)
  for dt in (jnp.float32, jnp.bfloat16):
    y = x.astype(dt)
    np.testing.assert_array_equal(
        pooling.max_pool(y, 3, 2, pad=1),
        nn.max_pool(y, (3, 3), (2, 2), padding=((1, 1), (1, 1))))
    np.testing.assert_array_equal(pooling.avg_pool(y[:, :16], 2, 2),
                                  nn.avg_pool(y[:, :16], (2, 2), (2, 2)))
  grad = lambda f: jax.grad(lambda y: jnp.sum(f(y)**2))(x)
  np.testing.assert_array_equal(
      grad(lambda y: pooling.max_pool(y, 3, 2, pad=1)),
      grad(lambda y: nn.max_pool(y, (3, 3), (2, 2), padding=((1, 1), (1, 1)))))


def _count_convs(jaxpr) -> int:
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == 'conv_general_dilated'
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        if hasattr(sub, 'jaxpr'):
          n += _count_convs(getattr(sub, 'jaxpr', sub))
        elif hasattr(sub, 'eqns'):
          n += _count_convs(sub)
  return n


@pytest.mark.slow
@pytest.mark.parametrize('backbone', ['resnet', 'densenet'])
def test_stage_continuation_equals_the_full_forward(backbone):
  """Stage s from stage s-1's carry, s = 1..4, then fuse: the full forward
  (1e-6), and each stage's trace holds only its own stage's layers."""
  if backbone == 'densenet':
    model = dare.DaRe(block='', stage_sizes=(2, 2, 2, 2), width=8,
                      backbone='densenet', growth_rate=4, head_hidden=16,
                      embedding_dim=8)
    hw = (64, 32)
  else:
    model = dare.DaRe(block='basic', stage_sizes=(1, 2, 1, 1), width=4,
                      head_hidden=16, embedding_dim=8)
    hw = (32, 16)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3,) + hw + (3,)),
                  jnp.float32)
  v = model.init(jax.random.key(1), x[:1], train=False)
  want = model.apply(v, x, train=False)
  embs, carry, stage_input, convs = {}, x, x, []
  for s in range(1, 5):
    fn = lambda v, c, s=s: model.apply(v, c, train=False, first_exit=s,
                                       num_exits=s, return_carry=True)
    out, carry = jax.jit(fn)(v, carry)
    assert set(out) == {f'stage{s}'}
    embs.update(out)
    convs.append(_count_convs(jax.make_jaxpr(fn)(v, stage_input).jaxpr))
    stage_input = carry
  # The stages' convolutions add up to the full forward's: none recomputed.
  full = _count_convs(jax.make_jaxpr(
      lambda v, x: model.apply(v, x, train=False))(v, x).jaxpr)
  assert sum(convs) == full and min(convs) > 0, (convs, full)
  embs['fused'] = dare.fuse(v, embs)
  for k in dare.EMBEDDINGS:
    np.testing.assert_allclose(embs[k], want[k], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_conv1x1_as_dot_changes_no_parameter_and_no_value():
  """model.conv1x1='dot' (resnet.Conv1x1): the same parameter tree and init
  as nn.Conv, the same forward (1e-5) and gradients (1e-4), stride 2 too."""
  kw = dict(block='bottleneck', stage_sizes=(1, 1, 1, 1), width=4,
            head_hidden=16, embedding_dim=8)
  conv, dot = dare.DaRe(**kw), dare.DaRe(conv1x1_dot=True, **kw)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 32, 3)),
                  jnp.float32)
  # Jitted: one program each instead of many small eager ones.
  init = lambda m: jax.jit(functools.partial(m.init, train=False))(
      jax.random.key(3), x)
  v_conv, v_dot = init(conv), init(dot)
  jax.tree.map(np.testing.assert_array_equal, v_conv, v_dot)  # same init
  apply = lambda m: jax.jit(functools.partial(m.apply, train=False))(v_conv, x)
  want = apply(conv)
  for k, e in apply(dot).items():
    np.testing.assert_allclose(e, want[k], rtol=1e-5, atol=1e-5)

  def loss(model, params):  # eval-mode BN: train-mode BN over 2 images x
    # 2x1 pixels at stage 4 would amplify rounding, not test the convs
    out = model.apply({'params': params,
                       'batch_stats': v_conv['batch_stats']}, x, train=False)
    return sum(jnp.sum(e**2) for e in out.values())
  grad = jax.jit(jax.grad(loss, argnums=1), static_argnums=0)
  g_conv = grad(conv, v_conv['params'])
  g_dot = grad(dot, v_conv['params'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max() + 1e-12)), g_dot,
               g_conv)
  assert dare.conv1x1_dot('auto') == (jax.default_backend() == 'cpu')
  with pytest.raises(ValueError, match="model.conv1x1='matmul'"):
    dare.conv1x1_dot('matmul')



@pytest.mark.slow
@pytest.mark.parametrize('backbone', ['resnet', 'densenet'])
def test_exit_heads_start_as_the_authors(backbone):
  """Initial scales as the authors' DaRe (PyTorch 0.2; docs/parity.md
  "Initial scales of the exit heads"): head Dense weights and biases
  U(+-1/sqrt(fan_in)) (PyTorch's default Linear, fan_in = the kernel's
  rows), which a normal or a fan_out init fails; exit BatchNorm bias 0 and
  scale 1 in DaRe(R) (their init loop fills every BatchNorm2d), U(0, 1) in
  DaRe(De) (no init loop: PyTorch 0.2's default), head's and exit norm's.
  Exit 1 only (num_exits=1: a quarter of the build; every head is the same
  ExitHead), where fc1's fan_in (4 or 12) is far from its fan_out (1024)."""
  kw = dict(head_hidden=1024, embedding_dim=128)
  if backbone == 'densenet':
    model = dare.DaRe(block='', stage_sizes=(1, 1, 1, 1), width=8,
                      backbone='densenet', growth_rate=4, **kw)
  else:
    model = dare.DaRe(block='basic', stage_sizes=(1, 1, 1, 1), width=4, **kw)
  with jax.threefry_partitionable(False):  # (faster to build, as above)
    params = jax.jit(functools.partial(model.init, num_exits=1))(
        jax.random.key(0), jnp.zeros((1, 32, 16, 3)))['params']
  params = jax.tree.map(np.asarray, params)
  head = params['exit1']
  assert head['fc1']['kernel'].shape[::-1] == (1024, 4 if backbone ==
                                               'resnet' else 12)
  for fc in ('fc1', 'fc2'):
    bound = 1 / np.sqrt(head[fc]['kernel'].shape[0])
    for leaf in ('kernel', 'bias'):
      u = head[fc][leaf].ravel() / bound  # U(-1, 1): std 1/sqrt(3)
      assert 0.9 < np.abs(u).max() <= 1, (fc, leaf, np.abs(u).max())
      assert abs(u.std() * np.sqrt(3) - 1) < 0.1, (fc, leaf, u.std())
  np.testing.assert_array_equal(head['bn']['bias'], 0)
  if backbone == 'resnet':
    np.testing.assert_array_equal(head['bn']['scale'], 1)
    return
  norm = params['backbone']['exit_norm1']
  np.testing.assert_array_equal(norm['bias'], 0)
  for u in (head['bn']['scale'], norm['scale']):
    assert u.min() >= 0 and u.max() < 1 and len(set(u.tolist())) == len(u)
  u = head['bn']['scale']  # U(0, 1): mean 1/2, std 1/sqrt(12)
  assert abs(u.mean() - 0.5) < 0.05 and abs(u.std() * np.sqrt(12) - 1) < 0.1
  # The backbone's own BatchNorms keep Flax's init (scale 1).
  np.testing.assert_array_equal(params['backbone']['norm0']['scale'], 1)
