"""DaRe(De): DenseNet-201 with an exit per dense block, on Market-1501.

As the authors' DenseNet DaRe, stages 1-3 get BatchNorm + ReLU before the
exit's pooling (dare_jax/models/densenet.py). The paper starts from ImageNet
weights: --config.model.pretrained=densenet201.pth (a torchvision file).

  python -m dare_jax.main --config=configs/market_densenet.py \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=runs/dare_de
"""

from configs import market


def get_config():
  c = market.get_config()
  c.model.backbone = 'densenet'
  c.model.depth = 201
  return c
