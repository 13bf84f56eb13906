r"""DaRe on CUHK01 (971 identities x 4 images; 485 train / 486 test by seed).

Reads the real images in ../shared/data/cuhk01 beside this checkout by
default (research use only; never committed), or --config.data.root=DIR.

  # ResNet-50 at 256x128, the paper's model (a GPU):
  python -m dare_jax.main --config=configs/cuhk01.py --workdir=runs/cuhk01
  # A small DaRe at 128x64 that trains on 2 CPU cores in about 15 minutes:
  python -m dare_jax.main --config=configs/cuhk01.py:cpu --workdir=runs/cuhk01_cpu

Test protocol (dare_jax/data/readers/cuhk01.py): the test identities'
camera-A images are the queries, their camera-B images the gallery.
CUHK01 is not in the paper; its schedule is TriNet's (25,000 steps, decay
from 15,000), since 1,940 training images are fewer than a tenth of
Market-1501's.
"""

import os

from dare_jax import defaults

_SHARED = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data',
    'cuhk01'))


def get_config(variant: str = ''):
  c = defaults.get_config()
  c.data.dataset = 'cuhk01'
  c.data.root = _SHARED
  defaults.dataset_protocol(c)
  c.train.num_steps = 25000
  c.optim.t0 = 15000
  c.optim.t1 = 25000
  if variant == 'cpu':
    c.data.input_size = (128, 64)
    c.data.pipeline = 'numpy'
    defaults.small_cpu_model(c, width=16)
    c.train.num_steps = 3000
    c.optim.t0 = 1500
    c.optim.t1 = 3000
    c.train.checkpoint_every = 500
    c.train.log_every = 100
    c.eval.batch_size = 64
  elif variant:
    raise ValueError(f'configs/cuhk01.py: unknown variant {variant!r}; use '
                     '"configs/cuhk01.py" or "configs/cuhk01.py:cpu".')
  return c
