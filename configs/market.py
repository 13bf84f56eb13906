"""DaRe (ResNet-50) on Market-1501 at 256x128 with the paper's schedule.

  python -m dare_jax.main --config=configs/market.py \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=runs/market

Table 1's rows: this file is DaRe(R)+RE (random erasing on, as the
authors' train.sh always trains), configs/market.py:R is DaRe(R);
--config.eval.rerank=True adds +RR (docs/results.md).
"""

from dare_jax import defaults


def get_config(variant: str = ''):
  c = defaults.get_config()
  c.data.dataset = 'market'
  defaults.dataset_protocol(c)
  defaults.table1_row(c, variant, 'R', 'configs/market.py')
  return c
