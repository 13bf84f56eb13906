"""Video re-ID end to end: MARS frames -> tracklet embeddings (mean pooled)."""

import os

import numpy as np
import pytest
from PIL import Image
import scipy.io

from configs import smoke
from dare_jax import builder
from dare_jax import eval_mode
from dare_jax import train
from dare_jax.data import datasets
from dare_jax.data.types import ReidDataset

# (person folder, camera, tracklet, frames) per track; '00-1' junk, '0000'
# distractor. Train: 5 people so that P=4 identities can be drawn.
_TRAIN = [('0001', 1, 1, 3), ('0001', 2, 2, 2), ('0002', 1, 1, 2),
          ('0002', 3, 2, 2), ('0005', 2, 1, 3), ('0006', 1, 1, 2),
          ('0007', 4, 1, 2)]
_TEST = [('00-1', 1, 1, 2), ('0000', 3, 1, 2), ('0003', 1, 1, 3),
         ('0003', 2, 2, 1), ('0004', 1, 1, 2), ('0004', 3, 2, 4),
         ('0008', 2, 1, 2), ('0008', 5, 2, 3)]
_QUERY_IDX = [3, 6, 7]  # 1-based rows of _TEST


def _write_mars(root):
  rng = np.random.default_rng(0)
  for split, tracks in (('train', _TRAIN), ('test', _TEST)):
    names, info = [], []
    for person, cam, t, n in tracks:
      start = len(names) + 1
      for f in range(1, n + 1):
        name = f'{person}C{cam}T{t:04d}F{f:03d}.jpg'
        path = os.path.join(root, f'bbox_{split}', person, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 20, 3), np.uint8)).save(
            path, quality=95)
        names.append(name)
      pid = -1 if person == '00-1' else int(person)
      info.append([start, len(names), pid, cam])
    os.makedirs(os.path.join(root, 'info'), exist_ok=True)
    with open(os.path.join(root, 'info', f'{split}_name.txt'), 'w') as f:
      f.write('\n'.join(names) + '\n')
    scipy.io.savemat(os.path.join(root, 'info', f'tracks_{split}_info.mat'),
                     {f'track_{split}_info': np.asarray(info, np.int32)})
  scipy.io.savemat(os.path.join(root, 'info', 'query_IDX.mat'),
                   {'query_IDX': np.asarray(_QUERY_IDX, np.uint16)[None]})


def _config(tmp_path):
  root = str(tmp_path / 'MARS')
  _write_mars(root)
  c = smoke.get_config()
  c.data.dataset = 'mars'
  c.data.root = root
  c.data.pipeline = 'numpy'
  c.train.num_steps = 2
  return c


def test_tracklet_embeddings_are_the_mean_of_their_frames(tmp_path):
  config = _config(tmp_path)
  built = builder.build(config)
  dataset = datasets.load_dataset(config.data)
  variables = builder.variables(built.init_state())
  feats = eval_mode.embed_dataset(config, built.model, variables, dataset,
                                 built.mesh)
  # Reference: every frame embedded as a plain image split, then averaged
  # per tracklet by an explicit loop over the tracks of the split files.
  ds = dataset
  frames = ReidDataset(
      'frames', ds.train,
      type(ds.query)(pids=ds.query.pids, camids=ds.query.camids,
                     paths=ds.query.paths),
      type(ds.gallery)(pids=ds.gallery.pids, camids=ds.gallery.camids,
                       paths=ds.gallery.paths))
  per_frame = eval_mode.embed_dataset(config, built.model, variables, frames,
                                     built.mesh)
  test_rows = {'gallery': list(range(len(_TEST))),
               'query': [i - 1 for i in _QUERY_IDX]}
  for what, rows in test_rows.items():
    lengths = [_TEST[r][3] for r in rows]
    starts = np.cumsum([0] + lengths[:-1])
    assert feats[f'{what}_pids'].tolist() == [
        -1 if _TEST[r][0] == '00-1' else int(_TEST[r][0]) for r in rows]
    assert feats[f'{what}_camids'].tolist() == [_TEST[r][1] - 1 for r in rows]
    for name in ('stage1', 'fused'):
      got = feats[f'{what}_{name}']
      frame_emb = per_frame[f'{what}_{name}']
      assert got.shape == (len(rows), config.model.embedding_dim)
      for t, (s, n) in enumerate(zip(starts, lengths)):
        np.testing.assert_allclose(got[t], frame_emb[s:s + n].mean(0),
                                   rtol=1e-5, atol=1e-6)
  # At most 2 frames a tracklet: the first and the last of each.
  config.eval.max_tracklet_frames = 2
  few = eval_mode.embed_dataset(config, built.model, variables, dataset,
                               built.mesh)
  t = 5  # gallery track ('0004', 3, 2, 4 frames) starts at frame 10
  s = sum(x[3] for x in _TEST[:t])
  np.testing.assert_allclose(
      few['gallery_fused'][t],
      per_frame['gallery_fused'][[s, s + 3]].mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mars_trains_and_evaluates_per_tracklet(tmp_path):
  config = _config(tmp_path)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  feats = np.load(tmp_path / 'run' / 'features.npz')
  assert feats['query_fused'].shape[0] == len(_QUERY_IDX)
  assert feats['gallery_fused'].shape[0] == len(_TEST)
  # Queries: person 3 (cam 0) matches its cam-1 track; 8 both ways.
  assert results['fused']['num_valid_queries'] == 3
