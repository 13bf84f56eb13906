"""DaRe (ResNet-50) on DukeMTMC-reID at 256x128 with the paper's schedule.

  python -m dare_jax.main --config=configs/duke.py \
      --config.data.root=/data/DukeMTMC-reID --workdir=runs/duke
"""

from dare_jax import defaults


def get_config():
  c = defaults.get_config()
  c.data.dataset = 'duke'
  defaults.dataset_protocol(c)
  return c
