"""The deployed model: a trained DaRe outside this repository.

  bundle.py   the self-contained bundle (bundle.json, params.npz,
              dare.stablehlo, model.onnx) and Bundle.load, on JAX or
              onnxruntime
  images.py   your own images as INPUT (folder, image, .txt, .csv) and the
              evaluation's preprocessing applied to them
  gallery.py  FEATURES.npz, appending to it, exact top-K search
  figures.py  ranked lists you can look at

Imports models/, evaluation/ and data/'s numpy parts, never train.py or the
builder; tools/embed and tools/search are its command lines.
"""

from dare_jax.inference.bundle import Bundle  # pylint: disable=unused-import
