r"""The ImageNet MobileNetV2 DaRe fine-tuned on CUHK01 on a 2-core CPU.

  python -m dare_jax.main --config=configs/cuhk01_mobilenet.py \
      --workdir=runs/cuhk01_mobilenet

Reads the CUHK01 images in ../shared/data/cuhk01 and the ImageNet
MobileNetV2 in ../shared/weights/mobilenet_v2_imagenet_features.pt beside
this checkout (research use only; never committed), or
--config.data.root=DIR / --config.model.pretrained=FILE (torchvision's
mobilenet_v2-b0353104.pth reads too). A run refuses to start, naming the
file, when the weights are absent; --config.model.pretrained=none trains
from scratch on purpose.

Variants (docs/results.md compares them at the same steps):
  (none)        the DaRe: 4 exits, deep supervision, ImageNet weights
  scratch       the same from random weights
  trinet        one exit after stage 4 (TriNet-style), ImageNet weights
  nodeep        the DaRe trained on the fused embedding's loss only

128x64 input: the 2-core CPU's budget (a quarter of the paper's pixels, so
a step takes about a quarter of the time), and CUHK01's images are 160x60,
already below 256x128. P x K = 18 x 4, the paper's. The schedule is the
paper's shape compressed: Adam at 3e-4, decay from half the steps.
"""

import os

from dare_jax import defaults

_SHARED = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared'))
WEIGHTS = os.path.join(_SHARED, 'weights', 'mobilenet_v2_imagenet_features.pt')
STEPS = 1200
VARIANTS = ('', 'scratch', 'trinet', 'nodeep')


def get_config(variant: str = ''):
  c = defaults.get_config()
  c.data.dataset = 'cuhk01'
  c.data.root = os.path.join(_SHARED, 'data', 'cuhk01')
  defaults.dataset_protocol(c)
  defaults.mobilenet_v2(c, WEIGHTS)
  c.data.input_size = (128, 64)
  c.data.pipeline = 'numpy'
  c.train.num_steps = STEPS
  c.optim.t0 = STEPS // 2
  c.optim.t1 = STEPS
  c.train.checkpoint_every = 250
  c.train.log_every = 50
  c.eval.batch_size = 64
  if variant not in VARIANTS:
    raise ValueError(f'configs/cuhk01_mobilenet.py: unknown variant '
                     f'{variant!r}; use one of {", ".join(map(repr, VARIANTS))}.')
  if variant == 'scratch':
    c.model.pretrained = 'none'
  elif variant == 'trinet':
    c.model.heads = 'trinet'
  elif variant == 'nodeep':
    c.loss.deep_supervision = False
  return c
