r"""Embeds your own images with a model bundle (dare_jax/inference).

  python -m dare_jax.tools.embed BUNDLE INPUT --out=FEATURES.npz \
      [--tta=10|1] [--batch=32] [--runtime=jax|onnx] \
      [--bad_images=error|skip] [--append] [--overwrite]

INPUT: a folder of images (recursive), one image, a .txt list of paths or a
.csv of path[,person,camera] (inference/images.py). No labels, splits or
training data are needed. FEATURES.npz holds the paths, every exit's
embedding and person/camera when the CSV had them, in the one features
schema (retrieval/features.py; inference/gallery.py says what tools/embed
puts in it). Images are prepared as --mode=eval prepares them: with
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


def main(argv):
  console.start()
  if len(argv) != 3:
    raise app.UsageError('usage: python -m dare_jax.tools.embed BUNDLE INPUT '
                         '--out=FEATURES.npz [flags]')
  from dare_jax.inference import gallery  # pylint: disable=g-import-not-at-top
  return cli.emit_json(lambda: gallery.embed_to_file(
      argv[1], argv[2], FLAGS.out, tta=int(FLAGS.tta), batch=FLAGS.batch,
      runtime=FLAGS.runtime, bad_images=FLAGS.bad_images,
      append=FLAGS.append, overwrite=FLAGS.overwrite))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
