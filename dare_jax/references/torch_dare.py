"""PyTorch references: torchvision's ResNet and DenseNet, the authors' DaRe,
and the PyTorch peer of our DaRe.

Written from torchvision's ResNet and the authors' DaRe code
(github.com/mileyan/DARENet: models/dare_resnet.py, main.py), with their
parameter names, so a state_dict saved from these modules has the names a
real torchvision / authors' file has, and torchvision's TenCrop as the
authors evaluate; the parity tests (tests/weights_test.py) check dare_jax
against them. `build_model` puts our formulation of DaRe (dare_jax's exit
heads and fusion) on the same torchvision-layout ResNet for the PyTorch
peer benchmark (dare_jax/bench/torch_peer.py).

Imports torch only, never dare_jax (nor JAX): see
dare_jax/references/__init__.py.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

# depth -> (block type, blocks per stage), as torchvision defines them.
DEPTHS = {18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)),
          50: ('bottleneck', (3, 4, 6, 3)), 101: ('bottleneck', (3, 4, 23, 3))}


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(out + identity)


class Bottleneck(nn.Module):
  """torchvision v1.5: the stride sits in the 3x3 conv2."""
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(out + identity)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


class ResNet(nn.Module):
  """torchvision's ResNet (names conv1, bn1, layer1..4, fc); forward returns
  the 4 stage maps [B, C, H, W].

  depth 0 builds a custom one with the same names: `block` ('basic' or
  'bottleneck'), `layers` (blocks per stage) and stem `width` (torchvision's
  64), stage s having width * 2**(s-1) planes (dare_jax's model.depth=0).
  num_classes=None leaves out fc (the peer's backbone). PyTorch's default
  init; `torchvision_init_` applies torchvision's.
  """

  def __init__(self, depth: int, num_classes: Optional[int] = 1000,
               width: int = 64, block: str = '', layers=()):
    super().__init__()
    block_name, layers = DEPTHS[depth] if depth else (block, tuple(layers))
    block = BLOCKS[block_name]
    self.inplanes = width
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)  # torchvision's (no parameters)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._make_layer(block, width, layers[0])
    self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
    self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
    self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
    if num_classes is not None:
      self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

  def torchvision_init_(self) -> 'ResNet':
    """torchvision's init, in place: kaiming_normal_(fan_out, relu) for the
    convolutions; BatchNorm's 1 / 0 is PyTorch's default already."""
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
    return self

  def _make_layer(self, block, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride,
                    bias=False),
          nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def stages(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    maps = []
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      x = layer(x)
      maps.append(x)
    return maps

  def forward(self, x):
    return self.stages(x)


class DaReNet(ResNet):
  """The authors' DaRe ResNet (models/dare_resnet.py): the backbone at the top
  level, layer{s}_fc heads and a Conv1d fusion; eval mode returns
  (x1, x2, x3, x4, fused) like their gen_stage_features=True.

  Their head BatchNorm is nn.BatchNorm2d applied to [B, 1024] (PyTorch 0.3
  allowed it); BatchNorm1d has the same parameters and eval-mode function.
  Their GAP is AvgPool2d with the map's full size: gap = input / 32.
  """

  def __init__(self, depth: int = 50, gap=(2, 1), fc1=1024, fc2=128,
               drop_rate=0., width: int = 64, block: str = '', layers=()):
    super().__init__(depth, width=width, block=block, layers=layers)
    del self.fc
    exp = self.layer1[0].expansion
    for s in range(1, 5):
      c = width * 2**(s - 1) * exp
      setattr(self, f'layer{s}_fc', nn.Sequential(
          nn.Linear(c, fc1), nn.BatchNorm1d(fc1), nn.ReLU(inplace=True),
          nn.Dropout(p=drop_rate), nn.Linear(fc1, fc2)))
      setattr(self, f'avgpool{s}',
              nn.AvgPool2d([g * 2**(4 - s) for g in gap]))
    self.fusion_conv = nn.Conv1d(4, 1, kernel_size=1, bias=False)

  def forward(self, x):
    outs = []
    for s, m in enumerate(self.stages(x), 1):
      m = getattr(self, f'avgpool{s}')(m)
      outs.append(getattr(self, f'layer{s}_fc')(m.view(m.size(0), -1)))
    x5 = self.fusion_conv(torch.stack(outs, dim=1))
    return tuple(outs) + (x5.view(x5.size(0), -1),)


# ------------------------------------------------ our DaRe, for the peer.


class DaRe(nn.Module):
  """dare_jax's DaRe (models/dare.py) in PyTorch, on a backbone with
  torchvision's module names (this ResNet or torchvision's own): per stage
  GAP (accumulated in float32, as dare.ExitHead) -> Linear(C_s, hidden) ->
  BatchNorm1d -> ReLU -> Linear(hidden, D), the embedding in float32; the
  fusion sum_s w_s phi_s with one free scalar per exit (init
  uniform[-0.5, 0.5]). forward returns (stage1, ..., stage4, fused), [B, D]
  each, in dare.EMBEDDINGS's order (as DaReNet does)."""

  def __init__(self, backbone: nn.Module, channels: Sequence[int],
               head_hidden: int = 1024, embedding_dim: int = 128):
    super().__init__()
    self.backbone = backbone
    self.heads = nn.ModuleList([
        nn.Sequential(nn.Linear(c, head_hidden), nn.BatchNorm1d(head_hidden),
                      nn.ReLU(inplace=True),
                      nn.Linear(head_hidden, embedding_dim))
        for c in channels])
    self.fusion = nn.Parameter(torch.empty(len(channels)).uniform_(-0.5, 0.5))
    self.torchvision = type(backbone).__module__.startswith('torchvision')

  def forward(self, x):
    b = self.backbone
    x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
    outs = []
    for layer, head in zip((b.layer1, b.layer2, b.layer3, b.layer4),
                           self.heads):
      x = layer(x)
      outs.append(head(x.mean(dim=(2, 3), dtype=torch.float32)).float())
    fused = sum(self.fusion[s] * e for s, e in enumerate(outs))
    return tuple(outs) + (fused,)


def build_model(depth: int = 50, width: int = 64, head_hidden: int = 1024,
                embedding_dim: int = 128, use_torchvision: bool = True,
                stage_sizes: Optional[Sequence[int]] = None) -> DaRe:
  """DaRe on a torchvision-layout ResNet: x [B, 3, H, W] -> (stage1..4,
  fused), [B, embedding_dim] each. torchvision's resnet<depth>(weights=None)
  is the backbone when it imports (and width == 64 and stage_sizes is None),
  else ResNet above with torchvision's init and no fc. stage_sizes: blocks
  per stage instead of depth's (depth then only picks the block type, like
  config.model.stage_sizes)."""
  if depth not in DEPTHS:
    raise ValueError(f'--depth={depth} must be one of {sorted(DEPTHS)}.')
  block_name, default_sizes = DEPTHS[depth]
  stage_sizes = tuple(stage_sizes or default_sizes)
  backbone = None
  if use_torchvision and width == 64 and stage_sizes == default_sizes:
    try:
      import torchvision  # pylint: disable=g-import-not-at-top
      backbone = getattr(torchvision.models, f'resnet{depth}')(weights=None)
    except ImportError:
      pass
  if backbone is None:
    backbone = ResNet(0, num_classes=None, width=width, block=block_name,
                      layers=stage_sizes).torchvision_init_()
  expansion = BLOCKS[block_name].expansion
  channels = [width * 2**s * expansion for s in range(4)]
  return DaRe(backbone, channels, head_hidden, embedding_dim)


def randomize_(model: nn.Module, generator: torch.Generator) -> nn.Module:
  """Random weights AND BatchNorm running statistics (eval-mode BN is then
  a non-trivial affine map), in place; scaled so that activations stay O(1)
  through 50 layers."""
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.normal_(0., (1. / fan_in) ** 0.5, generator=generator)
        if m.bias is not None:
          m.bias.normal_(0., 0.1, generator=generator)
      elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.weight.uniform_(0.5, 1.5, generator=generator)
        m.bias.normal_(0., 0.1, generator=generator)
        m.running_mean.normal_(0., 0.1, generator=generator)
        m.running_var.uniform_(0.5, 2.0, generator=generator)
        m.num_batches_tracked.fill_(1234)
  return model


def trinet_loss(features, num_sample_persons, num_sample_imgs, margin=0.,
                eps=1e-8, mean_loss=True):
  """The authors' OptiHardTripletLoss (main.py), as they train (margin 0,
  --mean_loss): Gram-matrix distances sqrt(|a|^2 + |b|^2 - 2 a.b + eps),
  hardest positive = max over the anchor's own K images (itself included:
  D(a, a) = sqrt(eps)), hardest negative = min over the others, softplus.
  The batch must be P x K contiguous by identity."""
  d = features.mm(features.transpose(-2, -1))
  norms = d.diag().expand(features.size(0), features.size(0))
  d = torch.sqrt(norms + norms.transpose(-2, -1) - 2. * d + eps)
  k = num_sample_imgs
  losses = []
  for i in range(d.size(0)):
    pid = i // k
    pos = torch.max(d[i][pid * k:(pid + 1) * k])
    neg = torch.min(torch.cat((d[i][:pid * k], d[i][(pid + 1) * k:])))
    losses.append(F.softplus(margin + pos - neg))
  total = sum(losses)
  return total / float(features.size(0)) if mean_loss else total


# ------------------------------------------- test-time augmentation.

def five_crop(img: torch.Tensor, size) -> list:
  """torchvision.transforms.functional.five_crop on [..., H, W]: (top-left,
  top-right, bottom-left, bottom-right, centre); the centre's offsets are
  center_crop's int(round((H - h) / 2.0)), int(round((W - w) / 2.0))."""
  ch, cw = size
  h, w = img.shape[-2:]
  top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
  return [img[..., :ch, :cw], img[..., :ch, w - cw:],
          img[..., h - ch:, :cw], img[..., h - ch:, w - cw:],
          img[..., top:top + ch, left:left + cw]]


def ten_crop(img: torch.Tensor, size) -> list:
  """torchvision's ten_crop(img, size, vertical_flip=False): five_crop of
  the image, then five_crop of the horizontally flipped IMAGE."""
  return five_crop(img, size) + five_crop(torch.flip(img, [-1]), size)


def tta_embeddings(net: nn.Module, images_NxHxWx3: torch.Tensor, size,
                   mean, std, batch_size: int = 64) -> list:
  """The authors' test-time embedding: uint8 images (already resized) ->
  TenCrop -> ToTensor (/255) -> Normalize(mean, std) -> net on the 10 views
  -> mean over the views, per output. Returns net's outputs, [N, D] each."""
  mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
  std = torch.tensor(std, dtype=torch.float32)[:, None, None]
  outs = []
  for lo in range(0, len(images_NxHxWx3), batch_size):
    x = images_NxHxWx3[lo:lo + batch_size].permute(0, 3, 1, 2)
    views = torch.stack(ten_crop(x, size), dim=1)  # [B, 10, 3, h, w]
    b, v = views.shape[:2]
    views = (views.float().div(255.) - mean) / std
    with torch.no_grad():
      y = net(views.reshape((b * v,) + views.shape[2:]))
    outs.append([e.reshape(b, v, -1).mean(1) for e in y])
  return [torch.cat(parts).numpy() for parts in zip(*outs)]


# ------------------------------------------------------------- DenseNet.

DENSENET_DEPTHS = {121: (32, (6, 12, 24, 16), 64), 169: (32, (6, 12, 32, 32), 64),
                   201: (32, (6, 12, 48, 32), 64), 161: (48, (6, 12, 36, 24), 96)}


class _DenseLayer(nn.Module):
  def __init__(self, c_in, growth, bn_size=4):
    super().__init__()
    self.norm1 = nn.BatchNorm2d(c_in)
    self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
    self.norm2 = nn.BatchNorm2d(bn_size * growth)
    self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

  def forward(self, x):
    y = self.conv1(F.relu(self.norm1(x)))
    y = self.conv2(F.relu(self.norm2(y)))
    return torch.cat([x, y], 1)


class _Transition(nn.Sequential):
  def __init__(self, c_in, c_out):
    super().__init__()
    self.add_module('norm', nn.BatchNorm2d(c_in))
    self.add_module('relu', nn.ReLU())
    self.add_module('conv', nn.Conv2d(c_in, c_out, 1, bias=False))
    self.add_module('pool', nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
  """torchvision's DenseNet-BC names (features.*, classifier); `blocks(x)`
  returns each dense block's output and norm5's."""

  def __init__(self, depth: int):
    super().__init__()
    growth, config, c = DENSENET_DEPTHS[depth]
    self.features = nn.Sequential()
    self.features.add_module('conv0', nn.Conv2d(3, c, 7, 2, 3, bias=False))
    self.features.add_module('norm0', nn.BatchNorm2d(c))
    self.features.add_module('relu0', nn.ReLU())
    self.features.add_module('pool0', nn.MaxPool2d(3, 2, 1))
    self.block_channels = []
    for b, n in enumerate(config):
      block = nn.Sequential()
      for i in range(n):
        block.add_module(f'denselayer{i + 1}', _DenseLayer(c + i * growth,
                                                           growth))
      self.features.add_module(f'denseblock{b + 1}', block)
      c += n * growth
      self.block_channels.append(c)
      if b < len(config) - 1:
        self.features.add_module(f'transition{b + 1}',
                                 _Transition(c, c // 2))
        c //= 2
    self.features.add_module('norm5', nn.BatchNorm2d(c))
    self.classifier = nn.Linear(c, 1000)

  def blocks(self, x):
    outs = []
    for name, m in self.features.named_children():
      x = m(x)
      if name.startswith('denseblock') and name != 'denseblock4':
        outs.append(x)
    outs.append(x)  # after norm5
    return outs


class DaReDenseNet(DenseNet):
  """The authors' DaRe-D (models/dare_densenet.py): avgpool{i} =
  (BatchNorm2d, ReLU, AvgPool2d) after dense blocks 1..3, ReLU(norm5) after
  block 4, layer_fc{i} heads, Conv1d fusion. Their dense layers name their
  modules 'norm.1', 'conv.1', ... (which PyTorch 2 refuses), so the file
  written by `authors_state_dict` renames ours back to that spelling."""

  def __init__(self, depth: int = 121, gap=(2, 1), fc1=1024, fc2=128):
    super().__init__(depth)
    del self.classifier
    for i, c in enumerate(self.block_channels):
      setattr(self, f'layer_fc{i}', nn.Sequential(
          nn.Linear(c, fc1), nn.BatchNorm1d(fc1), nn.ReLU(), nn.Dropout(0.),
          nn.Linear(fc1, fc2)))
      pool = nn.AvgPool2d([g * 2**(3 - i) for g in gap])
      if i < 3:
        setattr(self, f'avgpool{i}', nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), pool))
      else:
        self.avgpool3 = pool
    self.fusion_conv = nn.Conv1d(4, 1, kernel_size=1, bias=False)

  def stage_maps(self, x):
    """The maps the heads pool (before AvgPool)."""
    outs = self.blocks(x)
    maps = [F.relu(getattr(self, f'avgpool{i}')[0](m))
            for i, m in enumerate(outs[:3])]
    return maps + [F.relu(outs[3])]

  def forward(self, x):
    outs = []
    for i, m in enumerate(self.stage_maps(x)):
      pool = getattr(self, f'avgpool{i}')
      pool = pool[2] if i < 3 else pool
      p = pool(m)
      outs.append(getattr(self, f'layer_fc{i}')(p.view(p.size(0), -1)))
    x5 = self.fusion_conv(torch.stack(outs, dim=1))
    return tuple(outs) + (x5.view(x5.size(0), -1),)


def authors_state_dict(net: nn.Module) -> dict:
  """net.state_dict() with dense layers spelled 'norm.1', 'conv.2', ..."""
  import re  # pylint: disable=g-import-not-at-top
  pat = re.compile(r'(denselayer\d+\.(?:norm|conv))([12])\.')
  return {pat.sub(r'\1.\2.', k): v for k, v in net.state_dict().items()}
