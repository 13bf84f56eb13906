#!/usr/bin/env bash
# Every GPU benchmark in one run (under 8 minutes on one H100/H200), each
# table as JSON in one folder:
#
#   OUT=runs/gpu_bench launch/gpu_benchmarks.sh
#
#   train_step_f32.json / train_step_bf16.json   bench.train_step, ResNet-50 DaRe
#                         at 256x128, global batches 72 and 288, synthetic inputs
#                         made on the device (no dataset, no TensorFlow)
#   torch_peer_f32.json / torch_peer_bf16.json   the PyTorch peer on the same GPU
#   evaluation_market.json / evaluation_100k.json   CMC/mAP and re-ranking at
#                         Market-1501 size (3,368 x 15,913) and a 100,000 gallery
#   latency_b1.json / latency_b8.json   each exit's forward (JAX)
#   anytime.json          bench.early_exit, batches 1 and 8, three budgets
#
# Needs JAX with CUDA, flax, optax, orbax-checkpoint, numpy, absl-py and, for the
# peer, PyTorch. TensorFlow is never imported here. ml-collections (configs and
# --config flags) is pure Python: where it is not installed (the lent GPU
# machines, which reach no registry), download its wheel on a machine that can,
#   pip download ml-collections --no-deps -d shared/wheels
# carry it along with the working tree, and this script puts every wheel in
# shared/wheels (or $WHEELS) on PYTHONPATH (a pure-Python wheel imports as a zip).
# Each step is skipped with a line on stderr when what it needs is missing, so
# one missing package does not lose the other tables.
#
# SMOKE=1 runs the same steps at toy sizes (configs/smoke.py, batch 8, the
# evaluation's --quick problem) on any machine, the CPU included: a check of
# the script's commands, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_bench}
if [ "${SMOKE:-0}" = 1 ]; then
  CONFIG=configs/smoke.py BATCHES=8 EVAL_MARKET=--quick EVAL_100K=--quick
  PEER_DEVICE=cpu PEER_ARGS='--no_compile --depth=18 --input_size=64,32 --steps=2 --warmup=1'
else
  CONFIG=configs/market.py BATCHES=72,288 EVAL_MARKET= EVAL_100K=--gallery=100000
  PEER_DEVICE=cuda PEER_ARGS='--steps=10'
fi
WHEELS=${WHEELS:-shared/wheels}
mkdir -p "${OUT}"
if ! python -c 'import ml_collections' 2>/dev/null; then
  for w in "${WHEELS}"/*.whl; do
    [ -e "$w" ] && PYTHONPATH="${w}${PYTHONPATH:+:${PYTHONPATH}}"
  done
  export PYTHONPATH
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:${PYTHONPATH}}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU
status=0
step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== ${name}: $*" >&2
  local t0=$SECONDS
  if ! timeout "${limit}" "$@"; then
    echo "!! ${name} failed or ran past ${limit}s" >&2
    status=1
  fi
  echo "== ${name}: $((SECONDS - t0))s" >&2
}
python -c 'import jax; print(jax.devices())' || exit 1
step train_step_f32 90 python -m dare_jax.bench.train_step \
  --config="${CONFIG}" --batches="${BATCHES}" --dtypes=float32 --input=device \
  --steps=10 --warmup=3 --json="${OUT}/train_step_f32.json"
step train_step_bf16 90 python -m dare_jax.bench.train_step \
  --config="${CONFIG}" --batches="${BATCHES}" --dtypes=bfloat16 --input=device \
  --steps=10 --warmup=3 --json="${OUT}/train_step_bf16.json"
if python -c "import torch; assert '${PEER_DEVICE}' == 'cpu' or torch.cuda.is_available()" 2>/dev/null; then
  step torch_peer_f32 90 python -m dare_jax.bench.torch_peer --device="${PEER_DEVICE}" \
    --batches="${BATCHES}" --dtype=float32 ${PEER_ARGS} --json="${OUT}/torch_peer_f32.json"
  step torch_peer_bf16 90 python -m dare_jax.bench.torch_peer --device="${PEER_DEVICE}" \
    --batches="${BATCHES}" --dtype=bfloat16 ${PEER_ARGS} --json="${OUT}/torch_peer_bf16.json"
else
  echo "!! no PyTorch with CUDA: the peer is skipped" >&2
fi
step evaluation_market 60 python -m dare_jax.bench.evaluation ${EVAL_MARKET} \
  --authors=no --json="${OUT}/evaluation_market.json"
step evaluation_100k 90 python -m dare_jax.bench.evaluation ${EVAL_100K} \
  --authors=no --json="${OUT}/evaluation_100k.json"
step latency_b1 30 python -m dare_jax.bench.latency --config="${CONFIG}" \
  --batch=1 --json="${OUT}/latency_b1.json"
step latency_b8 30 python -m dare_jax.bench.latency --config="${CONFIG}" \
  --batch=8 --json="${OUT}/latency_b8.json"
step anytime 60 python -m dare_jax.bench.early_exit --config="${CONFIG}" \
  --batch=1,8 --budgets=0.25,0.5,0.75 --queries=128 --repeats=2 \
  --json="${OUT}/anytime.json"
ls -l "${OUT}" >&2
exit "${status}"
