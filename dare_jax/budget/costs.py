"""Mul-Add (multiply-accumulate) counts, read from the traced model.

A count comes from the program itself, not from a table: the function is
traced to a jaxpr and every `conv_general_dilated` and `dot_general` in it
(sub-jaxprs included: pjit, closed_call, custom_jvp/vjp, remat, scan, ...)
contributes
  conv: output elements x kernel spatial size x input channels per group
  dot:  output elements x product of the contracting dimensions.
Nothing else is counted -- BatchNorm, ReLU, pooling, additions, the mean of
global average pooling -- as the paper counts (Wang et al., CVPR 2018).

Per exit the cost is cumulative, as an anytime network spends it: exit s
pays for stages 1..s AND the exit heads 1..s (a query that leaves at exit s
has computed every earlier head on the way). 'fused' is the full forward
plus the weighted sum of the four embeddings, counted as 4 x embedding_dim
Mul-Adds (one multiply-accumulate per weight and element).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
from jax.extend import core as jcore
import jax.numpy as jnp

from dare_jax.models import dare



def _subjaxprs(params) -> list:
  """Every Jaxpr / ClosedJaxpr among an equation's parameters (generic:
  pjit's 'jaxpr', cond's 'branches', custom_vjp's 'fun_jaxpr', ...)."""
  found = []

  def visit(v):
    if isinstance(v, jcore.ClosedJaxpr):
      found.append(v.jaxpr)
    elif isinstance(v, jcore.Jaxpr):
      found.append(v)
    elif isinstance(v, (tuple, list)):
      for x in v:
        visit(x)

  for v in params.values():
    visit(v)
  return found


def _conv_macs(eqn) -> int:
  dn = eqn.params['dimension_numbers']
  rhs_shape = eqn.invars[1].aval.shape
  out_shape = eqn.outvars[0].aval.shape
  # rhs_spec = (out-feature dim, in-feature dim, spatial dims...); the
  # kernel's in-feature size is already input channels / feature groups.
  in_per_group = rhs_shape[dn.rhs_spec[1]]
  kernel_spatial = math.prod(rhs_shape[d] for d in dn.rhs_spec[2:])
  return math.prod(out_shape) * kernel_spatial * in_per_group


def _dot_macs(eqn) -> int:
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  lhs_shape = eqn.invars[0].aval.shape
  out_shape = eqn.outvars[0].aval.shape
  return math.prod(out_shape) * math.prod(lhs_shape[d] for d in lhs_contract)


def jaxpr_macs(jaxpr) -> int:
  """Mul-Adds of a Jaxpr (or ClosedJaxpr), recursing into sub-jaxprs."""
  if isinstance(jaxpr, jcore.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      total += _conv_macs(eqn)
    elif name == 'dot_general':
      total += _dot_macs(eqn)
    subs = _subjaxprs(eqn.params)
    if not subs:
      continue
    if name == 'cond':
      # Only one branch runs; count the dearest (an upper bound).
      total += max(jaxpr_macs(s) for s in subs)
      continue
    inner = sum(jaxpr_macs(s) for s in subs)
    if name == 'scan':
      inner *= int(eqn.params['length'])
    # A while loop's trip count is unknown when tracing: its body is
    # counted once (the models here have none).
    total += inner
  return total


def count_macs(fn: Callable, *args, **kwargs) -> int:
  """Mul-Adds of one call fn(*args, **kwargs); args may be arrays or
  jax.ShapeDtypeStruct (nothing is computed, only traced)."""
  return int(jaxpr_macs(jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)))


def _abstract_variables(model, x) -> Any:
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)


def exit_costs(model, input_hw: Sequence[int]) -> dict[str, int]:
  """Cumulative Mul-Adds of ONE image [1, H, W, 3] at each exit.

  Args:
    model: a dare.DaRe (any depth, width, head sizes).
    input_hw: (H, W) of the input image.

  Returns:
    {'stage1', 'stage2', 'stage3', 'stage4', 'fused': int}: stage s is the
    num_exits=s forward (stages and heads 1..s); fused is the full forward
    plus 4 x embedding_dim Mul-Adds of the weighted sum. A TriNet
    (model.trinet) has {'stage4': its full forward} only.
  """
  h, w = (int(v) for v in input_hw)
  if getattr(model, 'depthwise_shift', False):
    # Shifted multiply-adds are elementwise, which the trace does not count:
    # count the same network in its convolution formulation.
    model = model.clone(depthwise_shift=False)
  x = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  variables = _abstract_variables(model, x)
  if getattr(model, 'trinet', False):
    # A TriNet answers once, after the full backbone and its one head.
    return {'stage4': count_macs(model.apply, variables, x)}
  out = {}
  for s, name in enumerate(dare.EXITS, start=1):
    out[name] = count_macs(
        lambda v, x, s=s: model.apply(v, x, num_exits=s), variables, x)
  # The fusion is elementwise multiplies and adds (no dot_general), so the
  # trace does not see it: one Mul-Add per fusion weight and element.
  out['fused'] = out['stage4'] + len(dare.EXITS) * int(model.embedding_dim)
  return out


def config_exit_costs(config) -> dict[str, int]:
  """exit_costs of config.model at config.data.input_size."""
  return exit_costs(dare.from_config(config.model),
                    tuple(config.data.input_size))
