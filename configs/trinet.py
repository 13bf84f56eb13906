r"""TriNet (Hermans et al. 2017) on Market-1501: the paper's anytime baseline.

A ResNet-18, -34 or -50 with the stage-4 exit head only (GAP -> Dense 1024
-> BN -> ReLU -> Dense 128) and the batch-hard soft-margin triplet loss,
trained like DaRe. Evaluated in the order 18, 34, 50 with cumulative costs
it is the sequential ensemble of Figure 5:

  for d in 18 34 50; do
    python -m dare_jax.main --config=configs/trinet.py:$d \
        --config.data.root=/data/Market-1501-v15.09.15 --workdir=runs/trinet$d
  done
"""

from configs import market


def get_config(depth: str = '50'):
  if depth not in ('18', '34', '50'):
    raise ValueError(f'configs/trinet.py: depth {depth!r}; use 18, 34 or 50 '
                     '(configs/trinet.py:18).')
  c = market.get_config()
  c.model.heads = 'trinet'
  c.model.depth = int(depth)
  return c
