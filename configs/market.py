"""DaRe (ResNet-50) on Market-1501 at 256x128 with the paper's schedule.

  python -m dare_jax.main --config=configs/market.py \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=runs/market
"""

from dare_jax import defaults


def get_config():
  c = defaults.get_config()
  c.data.dataset = 'market'
  defaults.dataset_protocol(c)
  return c
