r"""Writes a trained DaRe as a self-contained bundle (dare_jax/inference).

  python -m dare_jax.tools.export_bundle --config=configs/synthetic.py \
      --workdir=runs/synthetic --out=bundles/synthetic [--step=N] [--overwrite]

Takes the latest checkpoint of the workdir (or step N) and writes
OUT/bundle.json, OUT/params.npz, OUT/dare.stablehlo (jax.export, cpu and
cuda) and OUT/model.onnx (jax2onnx); prints one JSON object (the bundle's
folder, step and files). Nothing is overwritten without --overwrite.
Bundle.load(OUT) then runs the model with JAX alone, or with onnxruntime.
"""

import hashlib
import json

from absl import app
from absl import flags
from ml_collections import config_flags

from dare_jax import console
from dare_jax.tools import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only when run as a program: tests import this module beside other
  tools that define --config too."""
  config_flags.DEFINE_config_file('config', None, "The run's configs/*.py.",
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The trained run (its checkpoints/).')
  flags.DEFINE_string('out', None, 'The bundle folder to write.')
  flags.DEFINE_integer('step', -1, 'The checkpoint step; -1 = the latest.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing bundle in --out.')
  flags.mark_flags_as_required(['config', 'workdir', 'out'])

def export(config, workdir: str, out: str, step: int = -1,
           overwrite: bool = False) -> dict:
  """Writes the bundle of workdir's checkpoint; returns what the CLI prints."""
  # pylint: disable=g-import-not-at-top
  import jax
  from dare_jax import builder
  from dare_jax import checkpointing
  from dare_jax import fileio
  from dare_jax.budget import costs
  from dare_jax.inference import bundle
  # pylint: enable=g-import-not-at-top
  built = builder.build(config, training=False)
  state, _ = builder.restore_for_eval(built, workdir,
                                      None if step < 0 else step)
  metrics = None
  metrics_path = fileio.join(workdir, 'metrics.json')
  if fileio.isfile(metrics_path):
    metrics = json.loads(fileio.read_text(metrics_path))
  provenance = {
      'checkpoint_step': int(state.step),
      'workdir': fileio.absolute(workdir),
      'model_fingerprint': checkpointing.model_fingerprint(config.model),
      'config_sha256': hashlib.sha256(
          config.to_json(sort_keys=True).encode()).hexdigest(),
      'metrics': metrics,
      'jax_version': jax.__version__,
  }
  meta = bundle.metadata(config, costs.config_exit_costs(config), provenance)
  files = bundle.write(out, meta, builder.variables(state), overwrite)
  return {'bundle': fileio.absolute(out), 'step': int(state.step),
          'files': [fileio.basename(f) for f in files]}


def main(argv):
  console.start()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  return cli.emit_json(lambda: export(FLAGS.config, FLAGS.workdir, FLAGS.out,
                                      FLAGS.step, FLAGS.overwrite))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=console.parse_flags)
