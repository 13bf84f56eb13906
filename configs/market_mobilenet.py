r"""The MobileNetV2 DaRe on Market-1501 with the paper's recipe (256x128,
P x K = 18 x 4, 60,000 steps, decay from 30,000), for a GPU.

  python -m dare_jax.main --config=configs/market_mobilenet.py \
      --config.data.root=/data/Market-1501-v15.09.15 \
      --config.model.pretrained=PATH/mobilenet_v2-b0353104.pth \
      --workdir=runs/market_mobilenet

The other datasets the same way, e.g. --config.data.dataset=duke (and its
data.root). The ImageNet file: torchvision's mobilenet_v2-b0353104.pth or
the flat file of ../shared/weights (its default when present beside this
checkout).
"""

import os

from dare_jax import defaults

_WEIGHTS = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
    'weights', 'mobilenet_v2_imagenet_features.pt'))


def get_config():
  c = defaults.get_config()
  c.data.dataset = 'market'
  defaults.dataset_protocol(c)
  defaults.mobilenet_v2(c, _WEIGHTS if os.path.isfile(_WEIGHTS) else '')
  return c
