"""DaRe(De): DenseNet-201 with an exit per dense block, on Market-1501.

As the authors' DenseNet DaRe, stages 1-3 get BatchNorm + ReLU before the
exit's pooling (dare_jax/models/densenet.py). The paper starts from ImageNet
weights: --config.model.pretrained=densenet201.pth (a torchvision file).
Table 1's rows: this file is DaRe(De)+RE (random erasing, as the authors'
train.sh), :De is DaRe(De); --config.eval.rerank=True adds +RR.

  python -m dare_jax.main --config=configs/market_densenet.py \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=runs/dare_de
"""

from dare_jax import defaults


def get_config(variant: str = ''):
  c = defaults.sibling_config(__file__, 'market')
  c.model.backbone = 'densenet'
  c.model.depth = 201
  defaults.table1_row(c, variant, 'De', 'configs/market_densenet.py')
  return c
