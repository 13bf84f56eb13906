"""Seconds, for tests: a tiny DaRe on a tiny synthetic dataset."""

from dare_jax import defaults


def get_config():
  c = defaults.get_config()
  c.data.dataset = 'synthetic'
  c.data.synthetic.num_train_ids = 16
  c.data.synthetic.num_test_ids = 12
  c.data.input_size = (32, 16)
  c.data.pipeline = 'numpy'
  c.data.prefetch = 2
  defaults.small_cpu_model(c, width=4)
  c.model.head_hidden = 32
  c.model.embedding_dim = 16
  c.train.P = 4
  c.train.K = 2
  c.train.num_steps = 4
  c.optim.t0 = 2
  c.optim.t1 = 4
  c.train.checkpoint_every = 2
  c.train.log_every = 1
  c.eval.batch_size = 8
  return c
