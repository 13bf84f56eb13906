r"""TriNet (Hermans et al. 2017) on Market-1501: the paper's anytime baseline.

A ResNet-18, -34 or -50 with the stage-4 exit head only (GAP -> Dense 1024
-> BN -> ReLU -> Dense 128) and the batch-hard soft-margin triplet loss, on
TriNet's own schedule (VisualComputingInstitute/triplet-reid, train.py and
market1501_train.sh): 25,000 steps of Adam at 3e-4, decaying exponentially
from step 15,000 to 0.001x at 25,000 (tf.train.exponential_decay of
max(0, step - 15000) over 10000 steps; here optim.t0 / optim.t1), beta1 0.9
then 0.5 from the decay's start (the TriNet paper and the DaRe code; their
train.py keeps TF's 0.9 throughout: --config.optim.beta1_after_t0=0.9).
Batches of P=18 identities x K=4 images, as DaRe's. Evaluated in the order
18, 34, 50 with cumulative costs it is the sequential ensemble of Figure 5:

  for d in 18 34 50; do
    python -m dare_jax.main --config=configs/trinet.py:$d \
        --config.data.root=/data/Market-1501-v15.09.15 --workdir=runs/trinet$d
  done
"""

from dare_jax import defaults

# TriNet's schedule (triplet-reid train.py defaults, market1501_train.sh).
NUM_STEPS = 25000  # --train_iterations
DECAY_START = 15000  # --decay_start_iteration
LEARNING_RATE = 3e-4  # --learning_rate


def get_config(depth: str = '50'):
  if depth not in ('18', '34', '50'):
    raise ValueError(f'configs/trinet.py: depth {depth!r}; use 18, 34 or 50 '
                     '(configs/trinet.py:18).')
  c = defaults.sibling_config(__file__, 'market')
  c.model.heads = 'trinet'
  c.model.depth = int(depth)
  c.train.num_steps = NUM_STEPS
  c.optim.eps0 = LEARNING_RATE
  c.optim.t0 = DECAY_START
  c.optim.t1 = NUM_STEPS  # lr reaches eps0 * decay_factor at the last step
  c.optim.decay_factor = 0.001
  c.optim.beta1 = 0.9
  c.optim.beta1_after_t0 = 0.5
  return c
