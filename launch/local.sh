#!/usr/bin/env bash
# Train (then evaluate) on this machine, on every local device (GPUs, TPU
# cores or the CPU).
#
#   CONFIG   config file            (default: configs/synthetic.py)
#   WORKDIR  checkpoints & results  (default: runs/<config name>)
#   extra arguments are passed to dare_jax.main, e.g. --config.train.num_steps=100
#
#   CONFIG=configs/market.py launch/local.sh --config.data.root=/data/Market-1501-v15.09.15
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/synthetic.py}
WORKDIR=${WORKDIR:-runs/$(basename "${CONFIG}" .py)}
exec python -m dare_jax.main --config="${CONFIG}" --workdir="${WORKDIR}" "$@"
