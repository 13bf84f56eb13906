"""DaRe (ResNet-50) on MSMT17 at 256x128 with the paper's schedule.

  python -m dare_jax.main --config=configs/msmt17.py \
      --config.data.root=/data/MSMT17_V1 --workdir=runs/msmt17

data.root is MSMT17_V1/ or MSMT17_V2/ (faces masked), or the folder holding
it (dare_jax/data/readers/msmt17.py). MSMT17 is not in the paper; this is
Market-1501's config on it. It trains on list_train + list_val, the
official 32,621 boxes of 1,041 people; --config.data.msmt17_val_in_train=False
trains on list_train alone, as torchreid and fast-reid do by default.

Table 1's rows: this file is DaRe(R)+RE (random erasing on, as the
authors' train.sh always trains), configs/msmt17.py:R is DaRe(R);
--config.eval.rerank=True adds +RR (docs/results.md).
"""

from dare_jax import defaults


def get_config(variant: str = ''):
  c = defaults.get_config()
  c.data.dataset = 'msmt17'
  defaults.dataset_protocol(c)
  defaults.table1_row(c, variant, 'R', 'configs/msmt17.py')
  return c
