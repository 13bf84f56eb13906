r"""TriNets on the synthetic dataset: the anytime baseline at CPU scale.

The paper's baseline is a sequential ensemble of separately trained
ResNet-18, -34 and -50 TriNets. The synthetic DaRe (configs/synthetic.py) is
a 1-block-per-stage basic ResNet at width 16, so its ensemble here is three
TriNets of that layout at widths 8 (s), 12 (m) and 16 (l): the largest has
exactly the DaRe's backbone, as ResNet-50 is DaRe's in the paper. They
keep the synthetic DaRe's CPU-size schedule (4,000 steps, decay from 2,000),
not TriNet's 25k / 15k (configs/trinet.py): here the ensemble and the DaRe
it is compared with are trained alike.

  python -m dare_jax.main --config=configs/trinet_synthetic.py:s \
      --workdir=runs/trinet_s
"""

from dare_jax import defaults
from dare_jax import errors

WIDTHS = {'s': 8, 'm': 12, 'l': 16}


def get_config(variant: str = ''):
  if variant not in WIDTHS:
    raise errors.ConfigError(
        f'configs/trinet_synthetic.py{":" + variant if variant else ""}: '
        'name the ensemble member, configs/trinet_synthetic.py:s, :m or :l '
        '(TriNets of widths 8, 12, 16).')
  c = defaults.sibling_config(__file__, 'synthetic')
  c.model.heads = 'trinet'
  c.model.width = WIDTHS[variant]
  return c
