"""Figures: the train log reader and that both PNGs are written."""

import json

from PIL import Image

from dare_jax.figures import run as plots


def _rec(step, loss):
  return {'step': step, 'lr': 3e-4, 'loss': 5 * loss,
          **{f'loss_{n}': loss for n in plots.EMBEDDINGS}}


def test_read_train_log_keeps_the_last_record_of_a_repeated_step(tmp_path):
  log = tmp_path / 'train_log.jsonl'
  # A run logged steps 50..150, was killed, resumed from its step-100
  # checkpoint and logged 150 and 200 again.
  lines = [_rec(50, 1.0), _rec(100, 0.9), _rec(150, 0.8), _rec(150, 0.7),
           _rec(200, 0.6)]
  log.write_text('\n'.join(json.dumps(r) for r in lines) + '\n')
  recs = plots.read_train_log(str(log))
  assert [r['step'] for r in recs] == [50, 100, 150, 200]
  assert recs[2]['loss_fused'] == 0.7


def test_run_figures_are_written(tmp_path):
  log = tmp_path / 'train_log.jsonl'
  log.write_text('\n'.join(json.dumps(_rec(s, 1.0 / s)) for s in
                           range(10, 110, 10)))
  metrics = {n: {'rank1': 0.5 + 0.1 * i, 'mAP': 0.4 + 0.1 * i}
             for i, n in enumerate(plots.EMBEDDINGS)}
  paths = plots.write_run_figures(str(tmp_path), metrics)
  assert [p.rsplit('/', 1)[1] for p in paths] == ['training.png', 'exits.png']
  for p in paths:
    with Image.open(p) as im:
      assert im.format == 'PNG' and im.size[0] > 400 and im.size[1] > 300
