"""DaRe (ResNet-50) on DukeMTMC-reID at 256x128 with the paper's schedule.

  python -m dare_jax.main --config=configs/duke.py \
      --config.data.root=/data/DukeMTMC-reID --workdir=runs/duke

Table 1's rows: this file is DaRe(R)+RE (random erasing on, as the
authors' train.sh always trains), configs/duke.py:R is DaRe(R);
--config.eval.rerank=True adds +RR (docs/results.md).
"""

from dare_jax import defaults


def get_config(variant: str = ''):
  c = defaults.get_config()
  c.data.dataset = 'duke'
  defaults.dataset_protocol(c)
  defaults.table1_row(c, variant, 'R', 'configs/duke.py')
  return c
