"""A trained DaRe as one self-contained folder: what it needs to run, and
nothing from training.

  BUNDLE/bundle.json     format version, the model's build fields, the input
                         (size, resize rule, mean/std, channel order, layout),
                         the embedding names and dimension, each exit's
                         cumulative Mul-Adds, provenance
  BUNDLE/params.npz      the variables, one array per '/'-joined path
                         ('params/backbone/...', 'batch_stats/...')
  BUNDLE/dare.stablehlo  the eval forward serialised with jax.export for cpu
                         and cuda, symbolic batch: (variables, x) -> {name: emb}

params.npz rather than an Orbax item: one file that numpy alone reads (no
Orbax or TensorStore at deployment, and other frameworks read it too), and
the variables of an eval-mode DaRe are a few hundred arrays that fit in
memory at once, so Orbax's sharded, asynchronous writes buy nothing here.

The forward takes x: float32 [B, H, W, 3], RGB, NHWC, already normalised
((pixels / 255 - mean) / std, the bundle's mean and std); Bundle.embed
does that from uint8 pixels, so preprocessing is read from the bundle, never
guessed by the caller.

Bundle.load needs JAX and this package's models/ only: no configs/, no
TensorFlow, no checkpoint folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dare_jax import errors
from dare_jax.data import device_ops
from dare_jax.models import dare

FORMAT = 'dare_jax.bundle'
FORMAT_VERSION = 1
META = 'bundle.json'
PARAMS = 'params.npz'
STABLEHLO = 'dare.stablehlo'
FILES = (META, PARAMS, STABLEHLO)
PLATFORMS = ('cpu', 'cuda')
# Model fields that name where weights came from, not what the network is.
_NOT_BUILD = ('pretrained', 'pretrained_heads')


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, np.ndarray]:
  """{'a/b/c': array} of a nested dict of arrays."""
  out = {}
  for k, v in tree.items():
    name = f'{prefix}{k}'
    if isinstance(v, Mapping):
      out.update(flatten(v, name + '/'))
    else:
      out[name] = np.asarray(v)
  return out


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  out: dict = {}
  for path, v in flat.items():
    node = out
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def build_fields(model_cfg) -> dict:
  """The config.model fields that build the network (JSON-ready)."""
  d = json.loads(model_cfg.to_json())
  return {k: v for k, v in sorted(d.items()) if k not in _NOT_BUILD}


def model_from_fields(fields: Mapping[str, Any]) -> dare.DaRe:
  cfg = ml_collections.ConfigDict(dict(fields))
  for k in _NOT_BUILD:
    cfg[k] = '' if k == 'pretrained' else False
  cfg.stage_sizes = tuple(cfg.stage_sizes)
  return dare.from_config(cfg)


def forward_fn(model: dare.DaRe):
  """(variables, x float32 [B, H, W, 3] normalised) -> {name: [B, D]}."""
  return lambda variables, x: model.apply(variables, x, train=False)


def export_forward(model: dare.DaRe, variables, input_hw) -> bytes:
  """The eval forward, jax.export-ed for PLATFORMS with a symbolic batch."""
  h, w = input_hw
  b, = jax.export.symbolic_shape('b')
  exp = jax.export.export(jax.jit(forward_fn(model)), platforms=PLATFORMS)(
      jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                   variables),
      jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32))
  return bytes(exp.serialize())


def metadata(config, exit_costs: Mapping[str, int],
             provenance: Mapping[str, Any]) -> dict:
  d = config.data
  model = dare.from_config(config.model)
  return {
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'model': build_fields(config.model),
      'input': {
          'height': int(d.input_size[0]), 'width': int(d.input_size[1]),
          'layout': 'NHWC', 'channels': 'RGB', 'dtype': 'float32',
          'normalization': '(pixels / 255 - mean) / std, per channel',
          'mean': [float(v) for v in d.mean],
          'std': [float(v) for v in d.std],
          # How the evaluation prepares an image (data/augment.py): resize
          # to round(H * factor) x round(W * factor), then the centre crop
          # (tta 1) or the 5 crops and their mirrors (tta 10), averaged.
          'resize_factor': float(d.resize_factor),
          'resize': 'bilinear (PIL) to round(H * resize_factor) x '
                    'round(W * resize_factor), then crop H x W',
      },
      'embeddings': {'names': list(dare.embedding_names(config.model)),
                     'dim': int(model.embedding_dim)},
      'exit_costs': {k: int(v) for k, v in exit_costs.items()},
      'files': {'params': PARAMS, 'stablehlo': STABLEHLO,
                'stablehlo_platforms': list(PLATFORMS)},
      'provenance': dict(provenance),
  }


def write(out_dir: str, meta: Mapping[str, Any], variables,
          overwrite: bool = False) -> list[str]:
  """Writes the bundle's files (each atomically); returns their paths."""
  present = [f for f in FILES if os.path.exists(os.path.join(out_dir, f))]
  if present and not overwrite:
    raise errors.ConfigError(
        f'{out_dir} already holds a bundle ({", ".join(present)}); pass '
        '--overwrite to replace it, or choose another --out.')
  os.makedirs(out_dir, exist_ok=True)
  host = jax.device_get(variables)
  model = model_from_fields(meta['model'])
  hw = (meta['input']['height'], meta['input']['width'])
  blobs = {STABLEHLO: export_forward(model, host, hw),
           META: json.dumps(meta, indent=2, sort_keys=True).encode()}
  params = os.path.join(out_dir, PARAMS)
  np.savez(params + '.tmp.npz', **flatten(host))
  os.replace(params + '.tmp.npz', params)
  for name in (STABLEHLO, META):  # bundle.json last: its presence = complete
    path = os.path.join(out_dir, name)
    with open(path + '.tmp', 'wb') as f:
      f.write(blobs[name])
    os.replace(path + '.tmp', path)
  return [os.path.join(out_dir, f) for f in FILES]


def _check_meta(path: str, meta: Mapping[str, Any]) -> None:
  if meta.get('format') != FORMAT:
    raise errors.DataError(f'{path}: not a dare_jax bundle (format '
                           f'{meta.get("format")!r}, expected {FORMAT!r}).')
  if meta.get('format_version') != FORMAT_VERSION:
    raise errors.DataError(
        f'{path}: bundle format version {meta.get("format_version")!r}; this '
        f'dare_jax reads version {FORMAT_VERSION}. Re-export it with '
        'python -m dare_jax.tools.export_bundle.')


@dataclasses.dataclass(frozen=True)
class Bundle:
  """A loaded bundle: its metadata, variables and model."""
  path: str
  meta: dict
  variables: dict
  model: dare.DaRe
  _forward: Callable = dataclasses.field(repr=False, compare=False)

  @classmethod
  def load(cls, path: str) -> Bundle:
    for f in FILES:
      if not os.path.isfile(os.path.join(path, f)):
        raise errors.DataNotFoundError(
            f'{path}: the bundle lacks {f} (a bundle holds '
            f'{", ".join(FILES)}; write one with python -m '
            'dare_jax.tools.export_bundle).')
    with open(os.path.join(path, META)) as f:
      meta = json.load(f)
    _check_meta(os.path.join(path, META), meta)
    with np.load(os.path.join(path, PARAMS)) as npz:
      variables = unflatten({k: npz[k] for k in npz.files})
    model = model_from_fields(meta['model'])
    return cls(path=path, meta=meta, variables=variables, model=model,
               _forward=jax.jit(forward_fn(model)))

  @property
  def input_hw(self) -> tuple[int, int]:
    return self.meta['input']['height'], self.meta['input']['width']

  @property
  def embedding_names(self) -> tuple[str, ...]:
    return tuple(self.meta['embeddings']['names'])

  @property
  def embedding_dim(self) -> int:
    return self.meta['embeddings']['dim']

  @property
  def exit_costs(self) -> dict[str, int]:
    return dict(self.meta['exit_costs'])

  def exported(self) -> jax.export.Exported:
    """The serialised forward, deserialised (call it as
    .call(variables, x))."""
    with open(os.path.join(self.path, STABLEHLO), 'rb') as f:
      return jax.export.deserialize(bytearray(f.read()))

  def forward(self, x_BxHxWx3) -> dict[str, np.ndarray]:
    """{name: float32 [B, D]} of normalised float32 input, in eval mode."""
    return jax.device_get(self._forward(self.variables, x_BxHxWx3))

  def embed(self, images_BxHxWx3: np.ndarray) -> dict[str, np.ndarray]:
    """{name: float32 [B, D]} of uint8 RGB images at the input size."""
    if tuple(images_BxHxWx3.shape[1:3]) != self.input_hw:
      raise errors.DataError(
          f'images of {tuple(images_BxHxWx3.shape[1:3])} pixels; this bundle '
          f'takes {self.input_hw} (H, W).')
    i = self.meta['input']
    x = device_ops.normalize(jnp.asarray(images_BxHxWx3), i['mean'], i['std'])
    return self.forward(x)

