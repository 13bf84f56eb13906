"""Reference implementations that the tests and the benchmarks check against.

  authors_rerank  the authors' k-reciprocal re-ranking (Zhong et al.,
                  CVPR 2017), transcribed in NumPy.
  torch_dare      torchvision's ResNet / DenseNet and the authors' DaRe in
                  PyTorch (their parameter names, their loss, their TenCrop),
                  and the PyTorch peer of our model for bench/torch_peer.py.

The independence rule: a reference never imports the dare_jax code it is
used to check (evaluation.*, models.*, losses, train, ... : in fact nothing
from dare_jax), so a bug there cannot hide in both sides of a comparison.
torch_dare imports torch at module level: import it only where torch is
present (tests after pytest.importorskip('torch'), bench/torch_peer.py
inside its functions, after its own check); nothing here imports JAX.
"""
