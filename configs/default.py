"""The paper's numbers: dare_jax/defaults.py, where every config starts.

  from dare_jax import defaults
  c = defaults.get_config()
"""

from dare_jax.defaults import get_config  # pylint: disable=unused-import
