"""DaRe (ResNet-50) on MARS (video) at 256x128 with the paper's settings.

Training samples P=18 identities x K=4 frames from the train tracklets;
evaluation embeds every frame of the 1,980 query and 12,180 gallery
tracklets and mean-pools them per tracklet (eval.max_tracklet_frames=0, the
paper's pooling), under the official MARS protocol. data.root is the MARS
folder: bbox_train/, bbox_test/ and info/ (dare_jax/data/readers/mars.py).
MARS is read from its folder (data.source='folder'); its 1.2 million frames
are decoded batch by batch, never held in memory.

  python -m dare_jax.main --config=configs/mars.py \
      --config.data.root=/data/MARS --workdir=runs/mars

Table 1's rows: this file is DaRe(R)+RE (random erasing on, as the
authors' train.sh always trains), configs/mars.py:R is DaRe(R);
--config.eval.rerank=True adds +RR (docs/results.md).
"""

from dare_jax import defaults


def get_config(variant: str = ''):
  c = defaults.get_config()
  c.data.dataset = 'mars'
  defaults.dataset_protocol(c)
  defaults.table1_row(c, variant, 'R', 'configs/mars.py')
  return c
