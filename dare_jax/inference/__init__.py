"""The deployed model: a trained DaRe as a self-contained bundle (bundle.py).

Imports models/ and evaluation/, never train.py or the builder.
"""

from dare_jax.inference.bundle import Bundle  # pylint: disable=unused-import
