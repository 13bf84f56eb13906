"""PyTorch weights onto the Flax DaRe model: torchvision backbones, DaRe nets.

Two entry points, both pure on host trees (numpy in, numpy out):

  load_backbone(path, params, batch_stats) -> (params, batch_stats)
      A torchvision ResNet-18/34/50/101 state_dict (ImageNet weights) onto
      params['backbone'] / batch_stats['backbone']; the exit heads and the
      fusion keep the values they came with (fresh initialisation).
  load_dare_checkpoint(path, variables) -> variables
      A whole DaRe (or TriNet) network saved by the authors' PyTorch code:
      backbone, exit heads and fusion.

Files (`read_state_dict`):
  *.pth, *.pt, *.tar, *.bin  torch.load(map_location='cpu', weights_only=True);
                             needs PyTorch (optional: `pip install torch`).
                             A dict holding 'state_dict' (the authors'
                             checkpoint.pth.tar: also 'optimizer', 'iterations',
                             ...) is unwrapped to it.
  *.npz                      the SAME state_dict as numpy arrays: PyTorch
                             names and PyTorch layouts (OIHW convs, [out, in]
                             linears), e.g. as written by
                             `python -m dare_jax.tools.convert_weights`.
                             Read without PyTorch.
Every key loses its leading 'module.' (nn.DataParallel, which the authors'
training wraps the model in) and then an optional user `prefix`.

Names. Our module names follow torchvision's (models/resnet.py), so the
backbone maps name by name:
  conv1.weight [O, I, kh, kw]        backbone/conv1/kernel [kh, kw, I, O]
  bn1.weight / bias                  backbone/bn1/scale / bias      (params)
  bn1.running_mean / running_var     backbone/bn1/mean / var   (batch_stats)
  layer{s}.{b}.conv1 ... bn3         backbone/layer{s}_{b}/conv1 ... bn3
  layer{s}.{b}.downsample.0 / .1     backbone/layer{s}_{b}/downsample_conv/_bn
The exit heads and fusion follow the authors' released code
(github.com/mileyan/DARENet, models/dare_resnet.py), where the backbone sits
at the top level of the network (no prefix) and stage s has
  layer{s}_fc = Sequential(Linear(C_s, 1024), BatchNorm(1024), ReLU,
                           Dropout, Linear(1024, 128))
  fusion_conv = Conv1d(4, 1, kernel_size=1, bias=False)      weight [1, 4, 1]
i.e. (the table HEAD_LAYOUTS['resnet'] / FUSION_NAME below; adapt it for
another layout):
  layer{s}_fc.0.weight [1024, C_s] / .bias   exit{s}/fc1/kernel [C_s, 1024] / bias
  layer{s}_fc.1.weight / bias                exit{s}/bn/scale / bias
  layer{s}_fc.1.running_mean / running_var   exit{s}/bn/mean / var (batch_stats)
  layer{s}_fc.4.weight [128, 1024] / .bias   exit{s}/fc2/kernel [1024, 128] / bias
  fusion_conv.weight [1, 4, 1]               fusion [4]
DenseNet backbones (models/densenet.py) read torchvision's DenseNet names
  features.conv0 / norm0 / norm5, features.denseblock{b}.denselayer{l}.norm1 /
  conv1 / norm2 / conv2, features.transition{b}.norm / conv
(the old 'norm.1' / 'conv.2' spelling of torchvision < 0.3 and of the
authors' DenseNet is renamed on reading, as torchvision does), the exits'
own BatchNorms backbone/exit_norm{s} from the authors' avgpool{s-1}.0 (read
when present: an ImageNet file has none, so they stay fresh), and the heads
from the authors' layer_fc{s-1}.0 / .1 / .4 (HEAD_LAYOUTS['densenet']).
Ignored, and logged as such (never "unexpected"): every
`*.num_batches_tracked`, torchvision's classifiers `fc.*` / `classifier.*`,
and, when only the backbone is loaded, the DaRe heads and fusion (so an
authors' checkpoint can initialise a backbone). Any other difference raises errors.ConfigError listing
ALL missing, unexpected and wrongly shaped keys, sorted, with their shapes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping, Optional

from absl import logging
from flax import traverse_util
import numpy as np

from dare_jax.errors import ConfigError

# The authors' names for exit head s (1-based; i = s - 1) and the fusion,
# per backbone; edit these (or pass head_layout= / fusion_name=) for a
# checkpoint laid out otherwise.
# torchvision's ImageNet files (the V1 weights the authors' code downloads;
# MobileNetV2's at any depth), by (backbone, depth): the file a config that
# starts from ImageNet names when model.pretrained is empty.
TORCHVISION_FILES = {
    ('resnet', 18): 'resnet18-5c106cde.pth',
    ('resnet', 34): 'resnet34-333f7ec4.pth',
    ('resnet', 50): 'resnet50-19c8e357.pth',
    ('resnet', 101): 'resnet101-5d3b4d8f.pth',
    ('densenet', 121): 'densenet121-a639ec97.pth',
    ('densenet', 161): 'densenet161-8d451a50.pth',
    ('densenet', 169): 'densenet169-b2777c0a.pth',
    ('densenet', 201): 'densenet201-c1103571.pth',
}
MOBILENET_V2_FILE = 'mobilenet_v2-b0353104.pth'


def imagenet_file(backbone: str, depth: int) -> str:
  if backbone == 'mobilenet_v2':
    return MOBILENET_V2_FILE
  return TORCHVISION_FILES.get((backbone, depth),
                               f'the torchvision {backbone}{depth} file')


HEAD_LAYOUTS = {
    'resnet': {'fc1': 'layer{s}_fc.0', 'bn': 'layer{s}_fc.1',
               'fc2': 'layer{s}_fc.4'},
    'densenet': {'fc1': 'layer_fc{i}.0', 'bn': 'layer_fc{i}.1',
                 'fc2': 'layer_fc{i}.4'},
}
# No authors' MobileNetV2 DaRe exists; ours is written (to_state_dict) and
# read with the ResNet DaRe's head names.
HEAD_LAYOUTS['mobilenet_v2'] = HEAD_LAYOUTS['resnet']
HEAD_LAYOUT = HEAD_LAYOUTS['resnet']
FUSION_NAME = 'fusion_conv.weight'
# Where the backbone's names start in a full DaRe checkpoint ('' = top level,
# as in the authors' code).
BACKBONE_PREFIX = ''
WRAPPER_PREFIXES = ('module.',)

_IGNORED = (re.compile(r'(^|\.)num_batches_tracked$'),
            re.compile(r'^fc\.'), re.compile(r'^classifier\.'))
_HEAD_KEY = re.compile(r'^layer\d+_fc\.|^layer_fc\d+\.|^fusion_conv\.')
# torchvision < 0.3 (and the authors' DenseNet) named a dense layer's modules
# 'norm.1', 'conv.2', ...; torchvision's own loader renames them so.
_OLD_DENSENET = re.compile(r'^(.*denselayer\d+\.(?:norm|relu|conv))\.'
                           r'((?:[12])\.(?:weight|bias|running_mean|'
                           r'running_var|num_batches_tracked))$')
_TORCH_SUFFIXES = ('.pth', '.pt', '.tar', '.bin')

_INSTALL_TORCH = (
    'Reading a PyTorch file needs PyTorch (optional for dare_jax): '
    '`pip install torch` (a CPU build is enough), or convert the file once on '
    'a machine that has it: `python -m dare_jax.tools.convert_weights IN.pth '
    'OUT_DIR --config=...` writes OUT_DIR/weights.npz, which is read without '
    'PyTorch.')


# ------------------------------------------------------------------ reading.

def _unwrap(obj, path: str) -> dict:
  if isinstance(obj, Mapping) and 'state_dict' in obj and isinstance(
      obj['state_dict'], Mapping):
    obj = obj['state_dict']
  if not isinstance(obj, Mapping):
    raise ConfigError(f'{path}: holds a {type(obj).__name__}, not a '
                      'state_dict (a dict of name -> tensor).')
  return obj


def _strip(sd: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  out = {}
  for k, v in sd.items():
    name = str(k)
    for wrapper in WRAPPER_PREFIXES:
      while name.startswith(wrapper):
        name = name[len(wrapper):]
    if prefix:
      if not name.startswith(prefix):
        continue  # another part of a bigger checkpoint
      name = name[len(prefix):]
    out[_OLD_DENSENET.sub(r'\1\2', name)] = v
  return out


def _to_numpy(v) -> Any:
  if hasattr(v, 'detach'):  # a torch.Tensor
    v = v.detach().cpu()
    if v.dtype.is_floating_point:
      v = v.float()
    return v.numpy()
  return np.asarray(v) if isinstance(v, np.ndarray) else v


def read_state_dict(path: str, prefix: str = '') -> dict[str, np.ndarray]:
  """{PyTorch name: numpy array} from a .pth/.pt/.tar/.bin or an .npz.

  Tensors are returned as numpy in their PyTorch layout; non-tensor entries
  of the file are dropped.
  """
  if not os.path.isfile(path):
    raise ConfigError(f'Weights file {path!r} does not exist.')
  lower = path.lower()
  if lower.endswith('.npz'):
    with np.load(path, allow_pickle=False) as z:
      sd = {k: z[k] for k in z.files}
  elif lower.endswith(_TORCH_SUFFIXES):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ConfigError(f'{path}: {_INSTALL_TORCH}') from e
    try:
      obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pickle errors differ between torch versions
      raise ConfigError(
          f'{path}: torch.load(weights_only=True) could not read it ({e}). '
          'Only plain state_dicts / checkpoint dicts of tensors are read '
          '(no pickled modules).') from e
    sd = {k: _to_numpy(v) for k, v in _unwrap(obj, path).items()}
  else:
    raise ConfigError(f'{path}: unknown weights format; use a PyTorch file '
                      f'({", ".join(_TORCH_SUFFIXES)}) or an .npz of the '
                      'state_dict.')
  sd = _strip(_unwrap(sd, path), prefix)
  return {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}


# ------------------------------------------------------------------ mapping.

@dataclasses.dataclass(frozen=True)
class Entry:
  """One PyTorch tensor -> one leaf of our variables."""
  torch_name: str
  collection: str  # 'params' or 'batch_stats'
  path: tuple[str, ...]  # inside the collection
  torch_shape: tuple[int, ...]
  to_flax: Callable[[np.ndarray], np.ndarray]
  # Read when the file has it, else left as it is (DenseNet exit norms are
  # not part of an ImageNet file).
  optional: bool = False


def _conv_kernel(w):  # OIHW -> HWIO
  return np.transpose(w, (2, 3, 1, 0))


def _dense_kernel(w):  # [out, in] -> [in, out]
  return np.transpose(w, (1, 0))


def _identity(w):
  return w


def architecture(params) -> str:
  """'resnet', 'densenet' or 'mobilenet_v2', from the backbone's parameter
  names."""
  backbone = params.get('backbone', {})
  if 'features_0_conv' in backbone:
    return 'mobilenet_v2'
  return 'densenet' if 'conv0' in backbone else 'resnet'


def _mobilenet_module_name(path: tuple[str, ...]) -> str:
  """models/mobilenet.py's names -> the flat PyTorch ones: features_0_conv
  -> features.0.0, features_0_bn -> features.0.1 (the last conv alike),
  features_N/conv_K -> features.N.conv.K."""
  m = re.fullmatch(r'features_(\d+)_(conv|bn)', path[0])
  if m:
    return f'features.{m.group(1)}.{0 if m.group(2) == "conv" else 1}'
  n = re.fullmatch(r'features_(\d+)', path[0]).group(1)
  k = re.fullmatch(r'conv_(\d+)', path[1]).group(1)
  return f'features.{n}.conv.{k}'


# torchvision's nested MobileNetV2 names -> the flat ones of the reference
# implementation (and of the shared ImageNet file). features.1 (expansion 1)
# is [ConvBNReLU(dw), conv, bn]; the others [ConvBNReLU(expand),
# ConvBNReLU(dw), conv, bn]; the flat layout numbers every layer, ReLU6
# included.
_TV_MOBILENET = re.compile(r'^features\.(\d+)\.conv\.(\d+)\.(?:(\d+)\.)?'
                           r'(weight|bias|running_mean|running_var|'
                           r'num_batches_tracked)$')
_TV_FIRST = {('0', '0'): 0, ('0', '1'): 1, ('1', None): 3, ('2', None): 4}
_TV_OTHER = {('0', '0'): 0, ('0', '1'): 1, ('1', '0'): 3, ('1', '1'): 4,
             ('2', None): 6, ('3', None): 7}


def mobilenet_flat_names(sd: Mapping[str, Any]) -> dict:
  """sd with torchvision's nested MobileNetV2 block names
  (features.N.conv.A.B) renamed to the flat ones (features.N.conv.K); a
  flat file is returned as it is. A file is nested when any block key has
  two indices after 'conv' (no flat name has)."""
  nested = any(re.match(r'^features\.\d+\.conv\.\d+\.\d+\.', k)
               for k in sd)
  if not nested:
    return dict(sd)
  out = {}
  for k, v in sd.items():
    m = _TV_MOBILENET.match(k)
    if m:
      n, a, b, leaf = m.groups()
      table = _TV_FIRST if n == '1' else _TV_OTHER
      if (a, b) in table:
        k = f'features.{n}.conv.{table[a, b]}.{leaf}'
    out[k] = v
  return out


def _densenet_module_name(path: tuple[str, ...]) -> str:
  m = re.fullmatch(r'exit_norm(\d+)', path[0])
  if m:  # the authors' avgpool{s-1} = Sequential(BatchNorm2d, ReLU, AvgPool)
    return f'avgpool{int(m.group(1)) - 1}.0'
  return 'features.' + '.'.join(path)


def _backbone_module_name(path: tuple[str, ...]) -> str:
  parts = []
  for p in path:
    m = re.fullmatch(r'layer(\d+)_(\d+)', p)
    if m:
      parts.append(f'layer{m.group(1)}.{m.group(2)}')
    elif p == 'downsample_conv':
      parts.append('downsample.0')
    elif p == 'downsample_bn':
      parts.append('downsample.1')
    else:
      parts.append(p)
  return '.'.join(parts)


_BN_LEAF = {('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
            ('batch_stats', 'mean'): 'running_mean',
            ('batch_stats', 'var'): 'running_var'}


def _leaf_entry(torch_module: str, collection: str, path, shape) -> Entry:
  """The PyTorch name and layout of one of our leaves."""
  leaf, shape = path[-1], tuple(shape)
  if leaf == 'kernel' and len(shape) == 4:
    h, w, i, o = shape
    return Entry(f'{torch_module}.weight', collection, path, (o, i, h, w),
                 _conv_kernel)
  if leaf == 'kernel' and len(shape) == 2:
    return Entry(f'{torch_module}.weight', collection, path, shape[::-1],
                 _dense_kernel)
  if (collection, leaf) in _BN_LEAF:
    return Entry(f'{torch_module}.{_BN_LEAF[collection, leaf]}', collection,
                 path, shape, _identity)
  raise ValueError(f'No PyTorch name for {collection}/{"/".join(path)}.')


def _flat(tree) -> dict:
  return traverse_util.flatten_dict(tree) if tree else {}


def backbone_entries(params, batch_stats,
                     prefix: Optional[str] = None) -> list[Entry]:
  """Entries for every leaf under params/batch_stats['backbone']."""
  prefix = BACKBONE_PREFIX if prefix is None else prefix
  arch = architecture(params)
  dense = arch == 'densenet'
  out = []
  for collection, tree in (('params', params), ('batch_stats', batch_stats)):
    for path, x in _flat(tree.get('backbone', {})).items():
      if dense:
        module = prefix + _densenet_module_name(path[:-1])
      elif arch == 'mobilenet_v2':
        module = prefix + _mobilenet_module_name(path[:-1])
      else:
        module = prefix + _backbone_module_name(path[:-1])
      e = _leaf_entry(module, collection, ('backbone',) + path, np.shape(x))
      if dense and path[0].startswith('exit_norm'):
        e = dataclasses.replace(e, optional=True)
      out.append(e)
  return out


def head_entries(params, batch_stats,
                 head_layout: Optional[Mapping[str, str]] = None,
                 fusion_name: Optional[str] = None) -> list[Entry]:
  """Entries for the exit heads exit{s}/... and the fusion, if present."""
  fusion_name = FUSION_NAME if fusion_name is None else fusion_name
  if head_layout is None:
    head_layout = HEAD_LAYOUTS[architecture(params)]
  out = []
  for collection, tree in (('params', params), ('batch_stats', batch_stats)):
    for path, x in _flat(tree).items():
      m = re.fullmatch(r'exit(\d+)', path[0])
      if not m:
        continue
      s = int(m.group(1))
      module = head_layout[path[1]].format(s=s, i=s - 1)
      out.append(_leaf_entry(module, collection, path, np.shape(x)))
  if 'fusion' in params:
    n = int(np.shape(params['fusion'])[0])
    out.append(Entry(fusion_name, 'params', ('fusion',), (1, n, 1),
                     lambda w: np.reshape(w, (-1,))))
  return out


def _fmt(shape) -> str:
  return '[' + ', '.join(str(int(d)) for d in shape) + ']'


def _apply(path: str, sd: Mapping[str, np.ndarray], entries: list[Entry],
           variables: dict, ignore: Callable[[str], bool], what: str) -> dict:
  sd = mobilenet_flat_names(sd)  # a no-op on any other file
  entries = [e for e in entries if not e.optional or e.torch_name in sd]
  by_name = {e.torch_name: e for e in entries}
  ignored = sorted(k for k in sd if k not in by_name and ignore(k))
  missing = sorted(k for k in by_name if k not in sd)
  unexpected = sorted(k for k in sd if k not in by_name and not ignore(k))
  wrong = sorted(k for k in by_name if k in sd and
                 tuple(np.shape(sd[k])) != by_name[k].torch_shape)
  if missing or unexpected or wrong:
    lines = [f'{path}: the weights do not fit the {what}.']
    if missing:
      lines.append(f'  missing ({len(missing)}):')
      lines += [f'    {k} {_fmt(by_name[k].torch_shape)}' for k in missing]
    if unexpected:
      lines.append(f'  unexpected ({len(unexpected)}):')
      lines += [f'    {k} {_fmt(np.shape(sd[k]))}' for k in unexpected]
    if wrong:
      lines.append(f'  wrong shape ({len(wrong)}):')
      lines += [f'    {k}: file {_fmt(np.shape(sd[k]))}, model expects '
                f'{_fmt(by_name[k].torch_shape)}' for k in wrong]
    lines.append('  Check model.backbone / model.depth / model.heads against '
                 'the file; dare_jax/models/weights.py documents the names '
                 'read (HEAD_LAYOUTS, FUSION_NAME).')
    raise ConfigError('\n'.join(lines))
  for k in sd:
    if k in by_name and not np.issubdtype(np.asarray(sd[k]).dtype,
                                          np.floating):
      raise ConfigError(f'{path}: {k} has dtype {np.asarray(sd[k]).dtype}, '
                        'expected floating point.')
  if ignored:
    logging.info('%s: ignored %d keys: %s', path, len(ignored),
                 ', '.join(ignored))
  flat = {c: _flat(variables.get(c, {})) for c in ('params', 'batch_stats')}
  for e in entries:
    old = flat[e.collection][e.path]
    flat[e.collection][e.path] = np.asarray(
        e.to_flax(np.asarray(sd[e.torch_name])), dtype=np.asarray(old).dtype)
  out = dict(variables)
  for c in ('params', 'batch_stats'):
    if c in variables:
      out[c] = traverse_util.unflatten_dict(
          {k: np.asarray(v) for k, v in flat[c].items()})
  return out


def _ignored_always(k: str) -> bool:
  return any(p.search(k) for p in _IGNORED)


def load_backbone(path: str, params, batch_stats, prefix: str = '',
                  state_dict: Optional[Mapping[str, np.ndarray]] = None):
  """(params, batch_stats) with the backbone subtree read from `path`.

  params / batch_stats: the model's full trees (with 'backbone', 'exit1',
  ..., 'fusion'); everything outside 'backbone' is returned unchanged.
  state_dict: already-read tensors (then `path` only names them in errors).
  """
  sd = read_state_dict(path, prefix) if state_dict is None else state_dict
  if 'backbone' not in params:
    raise ValueError('params has no "backbone" subtree.')
  entries = backbone_entries(params, batch_stats)
  out = _apply(path, sd, entries,
               {'params': params, 'batch_stats': batch_stats},
               lambda k: _ignored_always(k) or bool(_HEAD_KEY.search(k)),
               'backbone')
  return out['params'], out['batch_stats']


def load_dare_checkpoint(path: str, variables, prefix: str = '',
                         head_layout: Optional[Mapping[str, str]] = None,
                         fusion_name: Optional[str] = None,
                         state_dict: Optional[Mapping[str, np.ndarray]] = None):
  """{'params', 'batch_stats'}: the whole network (backbone, exit heads,
  fusion) read from an authors'-layout DaRe checkpoint at `path`.

  variables: the model's variables (their shapes and dtypes are the target;
  the values are all replaced). A TriNet model (exit4 only, no fusion) reads
  only those names.
  """
  sd = read_state_dict(path, prefix) if state_dict is None else state_dict
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  entries = (backbone_entries(params, batch_stats) +
             head_entries(params, batch_stats, head_layout, fusion_name))
  return _apply(path, sd, entries, dict(variables), _ignored_always,
                'DaRe model (backbone, exit heads, fusion)')


def to_state_dict(variables, full: bool = True) -> dict[str, np.ndarray]:
  """The inverse map: our variables -> {PyTorch name: array (PyTorch layout)}.

  full=False writes the backbone only. Used to write the .npz form.
  """
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  entries = backbone_entries(params, batch_stats)
  if full:
    entries += head_entries(params, batch_stats)
  flat = {c: _flat(variables.get(c, {})) for c in ('params', 'batch_stats')}
  out = {}
  for e in entries:
    x = np.asarray(flat[e.collection][e.path])
    if x.ndim == 4:
      x = np.transpose(x, (3, 2, 0, 1))
    elif x.ndim == 2:
      x = x.T
    out[e.torch_name] = np.ascontiguousarray(x.reshape(e.torch_shape))
  return out
