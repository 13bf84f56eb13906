r"""Embeds your own images with a model bundle (dare_jax/inference).

  python -m dare_jax.tools.embed BUNDLE INPUT --out=FEATURES.npz \
      [--tta=10|1] [--batch=32] [--runtime=jax|onnx] \
      [--bad_images=error|skip] [--append] [--overwrite]

INPUT: a folder of images (recursive), one image, a .txt list of paths or a
.csv of path[,person,camera] (inference/images.py). No labels, splits or
training data are needed. FEATURES.npz holds the paths, every exit's
embedding and person/camera when the CSV had them (inference/gallery.py has
the format). Images are prepared as --mode=eval prepares them: with
--tta=10 the embeddings equal what --mode=export writes for the same images.

Progress and an ETA go to stderr; stdout gets one JSON object (the file,
how many images were embedded, kept and skipped). An unreadable image stops
the run naming the file, or with --bad_images=skip is skipped and counted.
--append adds the INPUT's images that the file does not hold yet (matched by
path as given) and keeps the old rows untouched: a gallery is embedded once.
"""

from __future__ import annotations

from absl import app
from absl import flags

from dare_jax import console
from dare_jax.tools import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('out', None, 'The FEATURES.npz to write.')
  flags.DEFINE_enum('tta', '10', ['10', '1'],
                    'Views averaged per image: 10 (5 crops + mirrors, as '
                    '--mode=eval) or 1 (the whole image resized to the input '
                    'size, as eval.tta=False).')
  flags.DEFINE_integer('batch', 32, 'Images per forward.')
  flags.DEFINE_enum('runtime', 'jax', ['jax', 'onnx'],
                    "jax: the Flax model; onnx: the bundle's model.onnx in "
                    'onnxruntime.')
  flags.DEFINE_enum('bad_images', 'error', ['error', 'skip'],
                    'An image that cannot be decoded: stop naming it, or '
                    'skip it and count it.')
  flags.DEFINE_bool('append', False, 'Add the new images to an existing '
                    '--out, keeping its rows.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')
  flags.mark_flags_as_required(['out'])


def embed(bundle_path: str, input_spec: str, out: str, *, tta: int = 10,
          batch: int = 32, runtime: str = 'jax', bad_images: str = 'error',
          append: bool = False, overwrite: bool = False,
          progress: bool = True) -> dict:
  """Writes out; returns what the CLI prints."""
  # pylint: disable=g-import-not-at-top
  from absl import logging
  import numpy as np
  from dare_jax import errors
  from dare_jax import fileio
  from dare_jax.inference import bundle as bundle_lib
  from dare_jax.inference import gallery
  from dare_jax.inference import images
  # pylint: enable=g-import-not-at-top
  if append and overwrite:
    raise errors.ConfigError('--append and --overwrite: choose one.')
  if not out.endswith('.npz'):
    raise errors.ConfigError(f'--out={out}: the features file must end in '
                             '.npz.')
  if fileio.exists(out) and not (append or overwrite):
    raise errors.ConfigError(f'{out} exists; pass --overwrite to replace it '
                             'or --append to add images to it.')
  b = bundle_lib.Bundle.load(bundle_path, runtime)
  inputs = images.read_inputs(input_spec)
  old = None
  if append and fileio.exists(out):
    old = gallery.load(out, b)
    if old.tta != tta:
      raise errors.ConfigError(f'{out} holds tta={old.tta} embeddings; '
                               f'append with --tta={old.tta}.')
    have = set(old.inputs.paths)
    inputs = inputs.take(np.array([p not in have for p in inputs.paths]))
  summary = {'out': fileio.absolute(out), 'input': input_spec,
             'runtime': runtime, 'tta': tta, 'embedded': 0, 'skipped': 0}
  if len(inputs):
    feats, skipped = gallery.embed_inputs(
        b, inputs, tta=tta, batch=batch, bad_images=bad_images,
        progress=progress)
    summary['embedded'] = len(feats)
    summary['skipped'] = len(inputs) - len(feats)
    if skipped:
      logging.warning('%s', skipped)
    feats = gallery.concat(old, feats) if old is not None else feats
    gallery.save(out, feats, overwrite=True)
  elif old is None:
    raise errors.DataError(f'{input_spec}: no image to embed.')
  summary['images'] = summary['embedded'] + (len(old) if old else 0)
  summary['embeddings'] = list(b.embedding_names)
  return summary


def main(argv):
  console.start()
  if len(argv) != 3:
    raise app.UsageError('usage: python -m dare_jax.tools.embed BUNDLE INPUT '
                         '--out=FEATURES.npz [flags]')
  return cli.emit_json(lambda: embed(
      argv[1], argv[2], FLAGS.out, tta=int(FLAGS.tta), batch=FLAGS.batch,
      runtime=FLAGS.runtime, bad_images=FLAGS.bad_images,
      append=FLAGS.append, overwrite=FLAGS.overwrite))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
