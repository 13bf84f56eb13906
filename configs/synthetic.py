"""The embedded default: a small DaRe on the built-in synthetic dataset.

Trains and evaluates on 2 CPU cores in under 10 minutes:
  python -m dare_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
"""

from dare_jax import defaults


def get_config():
  c = defaults.get_config()
  c.data.dataset = 'synthetic'
  c.data.input_size = (64, 32)  # stored at 72x36 (x1.125), cropped to 64x32
  c.data.pipeline = 'numpy'
  # A ResNet-18 layout at a quarter of the width, one block per stage.
  defaults.small_cpu_model(c, width=16)
  # The paper's schedule shape (decay over the second half), shortened.
  c.train.num_steps = 4000
  c.optim.t0 = 2000
  c.optim.t1 = 4000
  c.train.checkpoint_every = 500
  c.train.log_every = 50
  c.eval.batch_size = 64
  return c
