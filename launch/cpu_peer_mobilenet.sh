#!/usr/bin/env bash
# The MobileNetV2 DaRe against PyTorch eager on this CPU, float32, 256x128:
# the train step at batch 32 and 72 and the eval forward (all exits and the
# fusion) at batch 1 and 8. Each side runs in its own process, alternating
# (ours, theirs, ours, theirs), nothing else running; every table lands as
# JSON in $OUT:
#
#   OUT=runs/cpu_peer launch/cpu_peer_mobilenet.sh
#
#   ours_train_{1,2}.json   bench.train_step (configs/market_mobilenet.py:
#                           depthwise 3x3s as shifted multiply-adds, 1x1s as
#                           dots on the CPU), device-made batches
#   ours_eval_b{1,8}_{1,2}.json   bench.latency, the 'fused' row is the full
#                           eval forward
#   torch_{1,2}.json        bench.torch_peer --backbone=mobilenet_v2 eager
#                           (grouped Conv2d), train batches 32,72 and eval
#                           batches 1,8
# ROUNDS=1 for one round. Needs PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/cpu_peer}
ROUNDS=${ROUNDS:-2}
CONFIG=configs/market_mobilenet.py
mkdir -p "${OUT}"
for r in $(seq 1 "${ROUNDS}"); do
  echo "== round ${r}: ours (train step)" >&2
  python -m dare_jax.bench.train_step --config=${CONFIG} --batches=32,72 \
    --dtypes=float32 --input=device --steps=5 --warmup=2 \
    --json="${OUT}/ours_train_${r}.json" | tail -3
  echo "== round ${r}: PyTorch eager (train step, eval forward)" >&2
  python -m dare_jax.bench.torch_peer --backbone=mobilenet_v2 --device=cpu \
    --no_compile --no_channels_last --dtype=float32 --batches=32,72 \
    --steps=5 --warmup=2 --eval_batches=1,8 --json="${OUT}/torch_${r}.json" \
    | tail -6
  for b in 1 8; do
    echo "== round ${r}: ours (eval forward, batch ${b})" >&2
    python -m dare_jax.bench.latency --config=${CONFIG} --batch=${b} \
      --repeats=20 --json="${OUT}/ours_eval_b${b}_${r}.json" | grep -E "fused|exit"
  done
done
