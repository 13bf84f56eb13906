r"""Converts PyTorch weights once, for hosts without PyTorch.

  python -m dare_jax.tools.convert_weights IN OUT_DIR --config=configs/market.py \
      [--full] [--prefix=PREFIX]

IN: a torchvision ResNet state_dict (.pth, e.g. resnet50-0676ba61.pth), or
with --full an authors' DaRe checkpoint (checkpoint.pth.tar: backbone, exit
heads, fusion; names in dare_jax/models/weights.py), or an .npz of either.
Reading a PyTorch file needs `pip install torch`; nothing else does.

The weights are mapped onto the config's model (model.depth, model.heads),
so a file that does not fit fails here, listing every missing, unexpected and
wrongly shaped key. OUT_DIR receives:
  weights.npz        the state_dict as numpy, PyTorch names and layouts, with
                     'module.'/PREFIX stripped and ignored keys dropped
                     (backbone only, or everything with --full). Pass it as
                     --config.model.pretrained=OUT_DIR/weights.npz (with
                     --full, also --config.model.pretrained_heads).
  checkpoints/0/     an Orbax train state at step 0 (Adam state fresh, the
                     heads fresh unless --full) with the model fingerprint:
                       --mode=eval  --workdir=OUT_DIR --config=...  evaluates it
                       --mode=train --workdir=OUT_DIR --config=...  trains
                     from it, as a resume at step 0.
Prints one JSON object to stdout: {"npz", "checkpoint", "loaded", "step"}.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from dare_jax import console
from dare_jax import errors
from dare_jax.tools import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file.',
                                lock_config=True)
flags.DEFINE_bool('full', False, 'IN is a whole DaRe network (backbone, exit '
                  'heads, fusion), not a backbone.')
flags.DEFINE_string('prefix', '', 'Strip this prefix from every key (after '
                    '"module."); keys without it are skipped.')
flags.mark_flags_as_required(['config'])


def convert(config, src: str, out_dir: str, full: bool = False,
            prefix: str = '') -> dict:
  """Writes OUT_DIR/weights.npz and OUT_DIR/checkpoints/0; returns paths."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from dare_jax import builder
  from dare_jax import checkpointing
  from dare_jax.models import weights
  # pylint: enable=g-import-not-at-top
  built = builder.build(config)
  sd = weights.read_state_dict(src, prefix)
  state, loaded = builder.with_pretrained(built, built.init_state(), src,
                                          heads=full, state_dict=sd)
  mngr = checkpointing.manager(out_dir, 1, 1)
  if mngr.latest_step() is not None:
    mngr.close()
    raise errors.CheckpointError(
        f'{mngr.directory} already holds checkpoints; use an empty OUT_DIR.')
  npz = os.path.join(out_dir, 'weights.npz')
  tmp = npz + '.tmp.npz'
  np.savez(tmp, **weights.to_state_dict(loaded, full=full))
  os.replace(tmp, npz)
  checkpointing.save(mngr, 0, state, {
      'model': checkpointing.model_fingerprint(config.model),
      'train_loss': {}}, force=True)
  mngr.wait_until_finished()
  mngr.close()
  return {'npz': npz, 'checkpoint': os.path.join(str(mngr.directory), '0'),
          'loaded': 'full' if full else 'backbone', 'step': 0}


def main(argv):
  console.start()
  if len(argv) != 3:
    raise app.UsageError('Usage: python -m dare_jax.tools.convert_weights IN '
                         'OUT_DIR --config=configs/X.py [--full] '
                         '[--prefix=P]')
  return cli.emit_json(lambda: convert(FLAGS.config, argv[1], argv[2],
                                      FLAGS.full, FLAGS.prefix))


if __name__ == '__main__':
  app.run(main, flags_parser=console.parse_flags)
