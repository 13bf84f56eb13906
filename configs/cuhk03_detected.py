"""DaRe (ResNet-50) on CUHK03, new protocol, detected (DPM) boxes, at 256x128.

767 training / 700 test identities, 1,400 queries (Zhong et al., CVPR 2017),
with the paper's settings (configs/default.py). data.root holds either the
protocol file cuhk03_new_protocol_config_detected.mat beside
images_detected/, or the CUHK03-NP release (detected/bounding_box_train,
...); see dare_jax/data/readers/cuhk03.py.

  python -m dare_jax.main --config=configs/cuhk03_detected.py \
      --config.data.root=/data/cuhk03-np --workdir=runs/cuhk03_detected

Table 1's rows: this file is DaRe(R)+RE (random erasing on, as the
authors' train.sh always trains), configs/cuhk03_detected.py:R is DaRe(R);
--config.eval.rerank=True adds +RR (docs/results.md).
"""

from dare_jax import defaults


def get_config(variant: str = ''):
  c = defaults.get_config()
  c.data.dataset = 'cuhk03_detected'
  defaults.dataset_protocol(c)
  defaults.table1_row(c, variant, 'R', 'configs/cuhk03_detected.py')
  return c
