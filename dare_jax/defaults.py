"""The paper's numbers (Wang et al., CVPR 2018, and the DaRe / TriNet code).

Every config (configs/*.py, the user-facing files; configs/default.py is this
one) starts from get_config() and overrides a few fields. A number used by the
code lives here, named as the paper names it, and nowhere else. It is also the
schema: configlib refuses any field that is not here.
"""

import importlib.util
import os

import ml_collections

from dare_jax import errors


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  # --- model: a torchvision-layout backbone with 4 exit heads and a fusion.
  c.model = ml_collections.ConfigDict()
  c.model.backbone = 'resnet'  # or 'densenet' (DaRe(De)), 'mobilenet_v2'
  # 'dare': an exit head per stage and the learnt fusion; 'trinet': the
  # stage-4 head only (Hermans et al.), the anytime baseline's members.
  c.model.heads = 'dare'
  c.model.depth = 50  # resnet: 18, 34 (basic), 50, 101 (bottleneck), 0 =
  #                     custom; densenet: 121, 169, 201, 161
  c.model.stage_sizes = ()  # custom blocks per stage, used when depth == 0
  c.model.block = 'bottleneck'  # custom block type, used when depth == 0
  c.model.width = 64  # channels of the stem; stage s has width * 2**(s-1)
  c.model.head_hidden = 1024  # exit head: GAP -> Dense(1024) -> BN -> ReLU
  c.model.embedding_dim = 128  # -> Dense(128) = phi_s
  # Fusion weights w_s start uniform in [low, high] (the DaRe code: +-0.5).
  c.model.fusion_init_low = -0.5
  c.model.fusion_init_high = 0.5
  # PyTorch BatchNorm2d(momentum=0.1, eps=1e-5) == Flax (momentum=0.9, 1e-5).
  c.model.bn_momentum = 0.9
  c.model.bn_epsilon = 1e-5
  # Compute dtype, 'float32' or 'bfloat16' (mixed precision: parameters,
  # BatchNorm statistics, pooling, embeddings and the loss stay float32).
  c.model.dtype = 'float32'
  # 1x1 convolutions as matmuls: 'auto' = on the CPU (XLA:CPU's 1x1 conv
  # gradients are slow), nn.Conv on accelerators; parameters are the same.
  c.model.conv1x1 = 'auto'
  # MobileNetV2 (backbone 'mobilenet_v2'): the channel width multiplier, and
  # the depthwise 3x3 convolutions: 'auto' = nine shifted multiply-adds on
  # the CPU (XLA:CPU's grouped convolutions are slow), nn.Conv with
  # feature_group_count on accelerators ('shift' / 'conv' force one); the
  # parameters are the same.
  c.model.width_multiplier = 1.0
  c.model.depthwise = 'auto'
  # Weights file (torchvision .pth, or .npz with PyTorch names; see
  # dare_jax/models/weights.py) for the backbone; the exit heads and fusion
  # start fresh unless pretrained_heads (the file is a whole DaRe, e.g. the
  # authors' released checkpoint).
  # 'none' = from scratch on purpose (where require_pretrained is on).
  c.model.pretrained = ''
  c.model.pretrained_heads = False
  # A fresh training run refuses to start without model.pretrained: on in
  # the dataset configs (the paper starts from ImageNet weights), off here
  # and in the synthetic, smoke and CPU configs.
  c.model.require_pretrained = False

  # --- loss: batch-hard soft-margin triplet loss (Hermans et al. 2017).
  c.loss = ml_collections.ConfigDict()
  c.loss.eps = 1e-8  # D(a, b) = sqrt(||a - b||^2 + eps)
  c.loss.deep_supervision = True  # sum over the 4 exits and fused

  # --- optimiser: Adam with the TriNet schedule and coupled L2 decay.
  c.optim = ml_collections.ConfigDict()
  c.optim.eps0 = 3e-4  # base learning rate
  c.optim.t0 = 30000  # decay starts (DaRe; TriNet: 15000)
  c.optim.t1 = 60000  # lr reaches eps0 * 0.001 (DaRe; TriNet: 25000)
  c.optim.decay_factor = 0.001
  c.optim.beta1 = 0.9  # before t0
  c.optim.beta1_after_t0 = 0.5
  c.optim.beta2 = 0.999
  c.optim.adam_eps = 1e-8
  c.optim.weight_decay = 1e-4  # L2, added to the gradients (not AdamW)

  # --- training loop.
  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 60000
  c.train.P = 18  # identities per batch
  c.train.K = 4  # images per identity
  # 'epoch': every identity once per epoch, short ones padded to K (the
  # authors' Datasets.py); 'random': P identities afresh each step.
  c.train.sampler = 'epoch'
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.log_every = 100
  # A jax.profiler trace of this many steps (0: none), taken after the run's
  # first step (so not its compilation) into workdir/profile (TensorBoard's
  # profile plugin or ui.perfetto.dev read it).
  c.train.profile_steps = 0

  # --- data.
  c.data = ml_collections.ConfigDict()
  c.data.dataset = 'market'  # market, duke, cuhk03_labeled, cuhk03_detected,
  #                            mars, cuhk01, msmt17, folder, synthetic
  c.data.root = ''  # the extracted official archive (TFDS: its manual_dir)
  # 'folder': read data.root directly; 'tfds': through the TFDS builder of
  # dare_jax/data/tfds_builders.py (same reader, prepared once into
  # data.tfds_data_dir).
  c.data.source = 'folder'
  c.data.tfds_data_dir = ''  # '' = TFDS's default (~/tensorflow_datasets)
  # data.dataset == 'folder': a CSV manifest (path, person, camera[, split]);
  # '' = Market-1501 file names in data.root/{bounding_box_train,query,
  # bounding_box_test}.
  c.data.manifest = ''
  c.data.split_seed = 0  # CUHK01: which 485 / 486 identities train / test
  c.data.cuhk01_num_test_ids = 486
  # MSMT17: train on list_train + list_val (the official 32,621 boxes);
  # False = list_train only (torchreid's and fast-reid's default).
  c.data.msmt17_val_in_train = True
  # An image that cannot be decoded: 'error' stops naming the file; 'skip'
  # checks every image once when the dataset is read, drops the bad ones
  # and reports their count and names.
  c.data.bad_images = 'error'
  c.data.input_size = (256, 128)  # (H, W) fed to the network
  c.data.resize_factor = 1.125  # resize to 288x144, then crop 256x128
  c.data.hflip = True
  c.data.random_erasing = False
  c.data.erasing_p = 0.5
  c.data.erasing_area = (0.02, 0.2)  # fraction of the image
  c.data.erasing_aspect = 0.3  # aspect ratio in [0.3, 1 / 0.3]
  c.data.mean = (0.485, 0.456, 0.406)  # ImageNet, RGB in [0, 1]
  c.data.std = (0.229, 0.224, 0.225)
  c.data.pipeline = 'tf'  # 'tf' (tf.data) or 'numpy' (TensorFlow-free)
  c.data.prefetch = 4  # batches prepared ahead of the device
  # numpy pipeline: train images are decoded once into memory when they fit
  # in this many GB at the resize size, else decoded batch by batch.
  c.data.cache_limit_gb = 16.0
  c.data.cache_dir = ''  # '' = ~/.cache/dare_jax
  # Synthetic dataset (data.dataset == 'synthetic').
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_train_ids = 300
  c.data.synthetic.num_test_ids = 200
  c.data.synthetic.num_cameras = 4
  c.data.synthetic.hard_fraction = 0.5
  c.data.synthetic.seed = 0

  # --- evaluation.
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 32  # images per batch; each is 10 views with TTA
  c.eval.tta = True  # 5 crops + flips (10 views) averaged
  c.eval.metric = 'euclidean'  # euclidean (the paper), sqeuclidean, cosine
  c.eval.normalize = False  # L2-normalise the embeddings first
  c.eval.ap = 'market'  # market (official, trapezoidal) or standard
  c.eval.ranks = (1, 5, 10)
  # k-reciprocal re-ranking (Zhong et al., CVPR 2017), reported beside the
  # plain ranking when on.
  c.eval.rerank = False
  c.eval.k1 = 20
  c.eval.k2 = 6
  c.eval.lambda_value = 0.3
  # Video (MARS): frames embedded per tracklet, evenly spaced; 0 = all (the
  # paper's mean pooling over the whole tracklet).
  c.eval.max_tracklet_frames = 0

  # --- resource report (--mode=budget, dare_jax/budget/report.py).
  c.budget = ml_collections.ConfigDict()
  c.budget.num_budgets = 11  # stream budgets, evenly from C_1 to C_4
  c.budget.seed = 0  # random routing's draws
  c.budget.num_examples = 4  # queries per retrieval figure
  c.budget.top_k = 5  # gallery images shown per exit (Figure 7)
  # The Mul-Adds of Figures 5 and 6: 'traced' from our model, or 'authors'
  # (their Caffe counts; a ResNet-50 DaRe at 256x128 only).
  c.budget.costs_source = 'traced'
  return c


def dataset_protocol(c) -> None:
  """What the configs of the paper's datasets share beyond get_config():
  training starts from ImageNet weights (a fresh run without
  model.pretrained is refused; 'none' trains from scratch on purpose), and
  evaluation L2-normalises every query and gallery feature (every pooled
  tracklet) before the distances and the re-ranking, as the evaluation
  code the authors' README names does (Zhong et al.'s
  Market_1501_evaluation.m and CUHK03_evaluation.m, the MARS evaluation
  code); metrics.json reports the unnormalised ranking beside it."""
  c.model.require_pretrained = True
  c.eval.normalize = True


def table1_row(c, variant: str, row: str, where: str) -> None:
  """The paper's Table 1 rows of one backbone and dataset: '' is DaRe(row)
  + RE (random erasing on, as the authors' train.sh always trains: their
  released models and Figures 5-6), `row` ('R' or 'De') is DaRe(row)
  without erasing. Re-ranking (+RR) is --config.eval.rerank=True on either.
  """
  if variant not in ('', row):
    raise errors.ConfigError(
        f'{where}:{variant}: the variants are {where} (DaRe({row})+RE, '
        f"random erasing on, as the authors' train.sh) and {where}:{row} "
        f'(DaRe({row}), no erasing); add --config.eval.rerank=True for the '
        '+RR rows.')
  c.data.random_erasing = variant == ''


def sibling_config(config_file: str, name: str, *args):
  """get_config(*args) of configs/NAME.py beside `config_file` (a config's
  __file__), loaded by path: a config built on another runs from any
  working directory, not only the repository's root."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)),
                      f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_dare_jax_config_{name}',
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


def small_cpu_model(c, width: int):
  """A ResNet-18 layout with one basic block per stage at `width` channels:
  the small model of the synthetic, smoke and CPU configs. It trains from
  scratch (no ImageNet file has its shapes)."""
  c.model.require_pretrained = False
  c.model.depth = 0
  c.model.block = 'basic'
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.width = width
  return c


def mobilenet_v2(c, weights: str, width_multiplier: float = 1.0):
  """The MobileNetV2 DaRe (models/mobilenet.py) from the ImageNet file
  `weights` ('' = none given: a fresh run is refused until one is)."""
  c.model.backbone = 'mobilenet_v2'
  c.model.width_multiplier = width_multiplier
  c.model.require_pretrained = True
  c.model.pretrained = weights
  return c
