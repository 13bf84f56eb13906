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
  BUNDLE/model.onnx      the same forward as ONNX (jax2onnx), the variables
                         folded in as constants, dynamic batch: input 'x',
                         one output per embedding name; always float32
                         (onnxruntime's CPU kernels have no bfloat16 convs)

params.npz rather than an Orbax item: one file that numpy alone reads (no
Orbax or TensorStore at deployment, and other frameworks read it too), and
the variables of an eval-mode DaRe are a few hundred arrays that fit in
memory at once, so Orbax's sharded, asynchronous writes buy nothing here.

The forward takes x: float32 [B, H, W, 3], RGB, NHWC, already normalised
((pixels / 255 - mean) / std, the bundle's mean and std); Bundle.embed
does that from uint8 pixels, so preprocessing is read from the bundle, never
guessed by the caller. The ONNX model takes the same NHWC tensor: the layout
JAX computes in, so the graph has no transposes at its ends and one
preprocessing serves both runtimes (jax2onnx's inputs_as_nchw could add a
transpose for NCHW callers; not done, to keep one documented input).

Format version 2 added model.onnx; a version-1 bundle is refused by name.

Bundle.load needs JAX and this package's models/ only: no configs/, no
TensorFlow, no checkpoint folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dare_jax import errors
from dare_jax import fileio
from dare_jax.data import device_ops
from dare_jax.models import dare
from dare_jax.retrieval import protocol as protocol_lib

FORMAT = 'dare_jax.bundle'
FORMAT_VERSION = 2
META = 'bundle.json'
PARAMS = 'params.npz'
STABLEHLO = 'dare.stablehlo'
ONNX = 'model.onnx'
FILES = (META, PARAMS, STABLEHLO, ONNX)
ONNX_INPUT = 'x'
# The lowest opset jax2onnx's graphs validate at (its ReduceMean takes axes
# as an input, opset 18's form); older runtimes read it (TensorRT 10 does).
ONNX_OPSET = 18
RUNTIMES = ('jax', 'onnx')
PLATFORMS = ('cpu', 'cuda')


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
  return {k: v for k, v in sorted(d.items()) if k not in dare.WEIGHT_SOURCE_FIELDS}


def model_from_fields(fields: Mapping[str, Any]) -> dare.DaRe:
  cfg = ml_collections.ConfigDict(dict(fields))
  for k in dare.WEIGHT_SOURCE_FIELDS:
    cfg[k] = '' if k == 'pretrained' else False  # none of them builds
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


def export_onnx(model: dare.DaRe, variables, input_hw,
                num_exits: int = 4) -> bytes:
  """The eval forward (its first num_exits exits) as an ONNX model.

  Input ONNX_INPUT float32 ['B', H, W, 3] (normalised NHWC, as forward_fn);
  outputs float32 ['B', D], one per embedding, named as the model names
  them. The variables become constants of the graph; the model is exported
  in float32 whatever its compute dtype.
  """
  h, w = input_hw
  model = dare.for_onnx(model)
  host = jax.device_get(variables)
  x = jnp.zeros((1, h, w, 3), jnp.float32)
  names = tuple(jax.eval_shape(
      lambda x: model.apply(host, x, train=False, num_exits=num_exits), x))

  def fn(x_BxHxWx3):
    out = model.apply(host, x_BxHxWx3, train=False, num_exits=num_exits)
    return tuple(out[k] for k in names)
  return to_onnx(fn, (h, w, 3), 'dare', names)


def to_onnx(fn: Callable, input_shape, model_name: str,
            output_names) -> bytes:
  """fn(x) -> a tuple of arrays as a serialised ONNX model (jax2onnx):
  input ONNX_INPUT float32 ['B', *input_shape] (a dynamic batch), the
  outputs named output_names, opset ONNX_OPSET."""
  import jax2onnx  # pylint: disable=g-import-not-at-top
  proto = jax2onnx.to_onnx(fn, [('B',) + tuple(input_shape)],
                           model_name=model_name, opset=ONNX_OPSET,
                           input_names=[ONNX_INPUT],
                           output_names=list(output_names))
  return proto.SerializeToString()


def onnx_session(model: bytes | str, threads: int = 0, spin: bool = True):
  """An onnxruntime CPU session of an ONNX model (bytes or a path); threads
  0 = onnxruntime's default (one per core). spin=False stops its threads
  from spin-waiting after each run: needed when several sessions take turns
  (the anytime stages), else an idle session's spinning threads take the
  cores from the running one."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  opts = ort.SessionOptions()
  # jax2onnx's intermediate shape annotations make onnxruntime warn while it
  # merges them (harmless, 'lenient merge'); keep its errors only.
  opts.log_severity_level = 3
  opts.intra_op_num_threads = threads
  if not spin:
    opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
  try:
    return ort.InferenceSession(model, sess_options=opts,
                                providers=['CPUExecutionProvider'])
  except Exception as e:  # onnxruntime raises its own, unexported types
    what = model if isinstance(model, str) else 'the ONNX model'
    raise errors.DataError(
        f'{what}: onnxruntime cannot read it ({" ".join(str(e).split())[:200]}'
        '): the bundle is damaged or was cut short; export it again with '
        'python -m dare_jax.tools.export_bundle, or use --runtime=jax.'
    ) from None


def onnx_forward(session) -> Callable:
  """x float32 [B, H, W, 3] -> {name: float32 [B, D]} of an onnx_session."""
  names = [o.name for o in session.get_outputs()]

  def run(x_BxHxWx3):
    x = np.ascontiguousarray(x_BxHxWx3, np.float32)
    return dict(zip(names, session.run(names, {ONNX_INPUT: x})))
  return run


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
          # How the evaluation prepares an image (data/augment.py): tta 10
          # resizes to round(H * factor) x round(W * factor) and averages
          # the 5 crops and their mirrors; tta 1 resizes the whole image to
          # H x W (no crop), as the authors' single view.
          'resize_factor': float(d.resize_factor),
          'resize': 'tta 10: bilinear (PIL) to round(H * resize_factor) x '
                    'round(W * resize_factor), then the 5 crops H x W and '
                    'their mirrors; tta 1: bilinear (PIL) of the whole '
                    'image to H x W, no crop',
      },
      'embeddings': {'names': list(dare.embedding_names(config.model)),
                     'dim': int(model.embedding_dim)},
      'exit_costs': {k: int(v) for k, v in exit_costs.items()},
      # How the run's evaluation compares embeddings; tools/search uses it.
      'search': {'metric': str(config.eval.metric),
                 'normalize': bool(config.eval.normalize),
                 'ap': str(config.eval.ap),
                 'k1': int(config.eval.k1), 'k2': int(config.eval.k2),
                 'lambda_value': float(config.eval.lambda_value)},
      'files': {'params': PARAMS, 'stablehlo': STABLEHLO,
                'stablehlo_platforms': list(PLATFORMS), 'onnx': ONNX,
                'onnx_input': ONNX_INPUT, 'onnx_opset': ONNX_OPSET,
                'onnx_dtype': 'float32'},
      'provenance': dict(provenance),
  }


def write(out_dir: str, meta: Mapping[str, Any], variables,
          overwrite: bool = False) -> list[str]:
  """Writes the bundle's files (each atomically); returns their paths."""
  present = [f for f in FILES if fileio.exists(fileio.join(out_dir, f))]
  if present and not overwrite:
    raise errors.ConfigError(
        f'{out_dir} already holds a bundle ({", ".join(present)}); pass '
        '--overwrite to replace it, or choose another --out.')
  fileio.makedirs(out_dir)
  host = jax.device_get(variables)
  model = model_from_fields(meta['model'])
  hw = (meta['input']['height'], meta['input']['width'])
  blobs = {STABLEHLO: export_forward(model, host, hw),
           ONNX: export_onnx(model, host, hw),
           META: json.dumps(meta, indent=2, sort_keys=True).encode()}
  fileio.save_npz(fileio.join(out_dir, PARAMS), flatten(host))
  # bundle.json last: its presence means the bundle is complete.
  for name in (STABLEHLO, ONNX, META):
    fileio.write_bytes(fileio.join(out_dir, name), blobs[name])
  return [fileio.join(out_dir, f) for f in FILES]


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
  """A loaded bundle: its metadata, variables and model.

  forward / embed run on `runtime`: 'jax' (the Flax model, jitted) or 'onnx'
  (model.onnx in onnxruntime, whose session is made on first use).
  """
  path: str
  meta: dict
  variables: dict
  model: dare.DaRe
  runtime: str = 'jax'
  # sha256 of params.npz's arrays, 16 hex digits: features files carry it,
  # so that search never compares embeddings of two different models.
  fingerprint: str = ''
  _cache: dict = dataclasses.field(default_factory=dict, repr=False,
                                   compare=False)

  @classmethod
  def load(cls, path: str, runtime: str = 'jax') -> Bundle:
    if runtime not in RUNTIMES:
      raise errors.ConfigError(f'runtime={runtime!r}: use one of '
                               f'{", ".join(RUNTIMES)}.')
    if not fileio.isdir(path):
      raise errors.DataNotFoundError(
          f'{path}: no bundle folder there (write one with python -m '
          'dare_jax.tools.export_bundle).')
    meta_path = fileio.join(path, META)
    if fileio.isfile(meta_path):  # the version first: it explains the rest
      try:
        meta = json.loads(fileio.read_text(meta_path))
      except ValueError as e:
        raise errors.DataError(
            f'{meta_path}: not valid JSON ({e}): the bundle is damaged or '
            'was cut short; export it again with python -m '
            'dare_jax.tools.export_bundle.') from None
      _check_meta(meta_path, meta)
    for f in FILES:
      if not fileio.isfile(fileio.join(path, f)):
        raise errors.DataNotFoundError(
            f'{path}: the bundle lacks {f} (a version-{FORMAT_VERSION} '
            f'bundle holds {", ".join(FILES)}; write one with python -m '
            'dare_jax.tools.export_bundle).')
    params = fileio.join(path, PARAMS)
    try:
      with fileio.open_npz(params) as npz:
        flat = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise errors.DataError(
          f'{params}: not a readable .npz ({e}): the bundle is damaged or '
          'was cut short; export it again with python -m '
          'dare_jax.tools.export_bundle.') from None
    digest = hashlib.sha256()  # of the arrays, not the zip (it dates them)
    for k in sorted(flat):
      digest.update(f'{k}:{flat[k].dtype.str}:{flat[k].shape};'.encode())
      digest.update(np.ascontiguousarray(flat[k]).tobytes())
    variables = unflatten(flat)
    model = model_from_fields(meta['model'])
    return cls(path=path, meta=meta, variables=variables, model=model,
               runtime=runtime, fingerprint=digest.hexdigest()[:16])

  def with_runtime(self, runtime: str) -> Bundle:
    """The same bundle on another runtime (the variables are shared)."""
    if runtime not in RUNTIMES:
      raise errors.ConfigError(f'runtime={runtime!r}: use one of '
                               f'{", ".join(RUNTIMES)}.')
    return dataclasses.replace(self, runtime=runtime, _cache={})

  @property
  def input_hw(self) -> tuple[int, int]:
    return self.meta['input']['height'], self.meta['input']['width']

  @property
  def resize_hw(self) -> tuple[int, int]:
    """The size an image is resized to before its crops (data/augment)."""
    f = self.meta['input']['resize_factor']
    return tuple(int(round(n * f)) for n in self.input_hw)

  @property
  def embedding_names(self) -> tuple[str, ...]:
    return tuple(self.meta['embeddings']['names'])

  @property
  def embedding_dim(self) -> int:
    return self.meta['embeddings']['dim']

  @property
  def exit_costs(self) -> dict[str, int]:
    return dict(self.meta['exit_costs'])

  @property
  def protocol(self) -> protocol_lib.Protocol:
    """How the run scored retrieval (bundle.json's 'search'): what search,
    embed files and the anytime engine rank with."""
    return protocol_lib.Protocol.from_bundle(self.meta,
                                             fileio.join(self.path, META))

  def exported(self) -> jax.export.Exported:
    """The serialised forward, deserialised (call it as
    .call(variables, x))."""
    return jax.export.deserialize(bytearray(
        fileio.read_bytes(fileio.join(self.path, STABLEHLO))))

  def onnx_model(self) -> bytes | str:
    """model.onnx for onnxruntime: its local path, or a remote file's
    bytes."""
    p = fileio.join(self.path, ONNX)
    return fileio.read_bytes(p) if fileio.is_remote(p) else p

  def _runner(self) -> Callable:
    if 'run' not in self._cache:
      if self.runtime == 'onnx':
        self._cache['run'] = onnx_forward(
            onnx_session(self.onnx_model()))
      else:
        fwd = jax.jit(forward_fn(self.model))
        self._cache['run'] = lambda x: jax.device_get(
            fwd(self.variables, x))
    return self._cache['run']

  def forward(self, x_BxHxWx3) -> dict[str, np.ndarray]:
    """{name: float32 [B, D]} of normalised float32 input, in eval mode."""
    return self._runner()(x_BxHxWx3)

  def normalize(self, images_BxHxWx3: np.ndarray) -> np.ndarray:
    """float32 (pixels / 255 - mean) / std of uint8 RGB at the input size."""
    if tuple(images_BxHxWx3.shape[1:3]) != self.input_hw:
      raise errors.DataError(
          f'images of {tuple(images_BxHxWx3.shape[1:3])} pixels; this bundle '
          f'takes {self.input_hw} (H, W).')
    i = self.meta['input']
    return np.asarray(device_ops.normalize(jnp.asarray(images_BxHxWx3),
                                           i['mean'], i['std']))

  def embed(self, images_BxHxWx3: np.ndarray) -> dict[str, np.ndarray]:
    """{name: float32 [B, D]} of uint8 RGB images at the input size."""
    return self.forward(self.normalize(images_BxHxWx3))
