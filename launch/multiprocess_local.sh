#!/usr/bin/env bash
# Several JAX processes on THIS machine, joined by jax.distributed through a
# localhost coordinator: one process per GPU (or per group of GPUs), or, on a
# machine without accelerators, CPU processes with forced host devices. This
# is the multi-host code path on one box: each process reads its own rows of
# every P x K batch, mining stays global, checkpoints are written by all
# processes through Orbax, process 0 logs and writes the results.
# (One process driving every local GPU needs none of this: launch/local.sh.)
#
#   NPROC            processes                       (default: the number of
#                    GPUs `nvidia-smi -L` lists / GPUS_PER_PROC, else 2)
#   GPUS_PER_PROC    GPUs each process owns          (default 1; GPU hosts)
#   CPU_DEVICES      forced CPU devices per process  (default 4; no GPU)
#   PORT             the coordinator's port          (default 12355)
#   CONFIG           config file                     (default configs/synthetic.py)
#   WORKDIR          checkpoints & results           (default runs/<config>_<NPROC>proc)
#   extra arguments go to dare_jax.main, e.g. --config.train.num_steps=100
#
#   launch/multiprocess_local.sh                       # every GPU, 1 each
#   NPROC=2 CPU_DEVICES=4 launch/multiprocess_local.sh --config.train.num_steps=20
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=$( (command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | wc -l) || echo 0)
GPUS_PER_PROC=${GPUS_PER_PROC:-1}
if [[ "${GPUS}" -gt 0 ]]; then
  NPROC=${NPROC:-$((GPUS / GPUS_PER_PROC))}
  if (( NPROC * GPUS_PER_PROC > GPUS )); then
    echo "error: NPROC=${NPROC} x GPUS_PER_PROC=${GPUS_PER_PROC} needs more than the ${GPUS} GPUs here." >&2
    exit 1
  fi
else
  NPROC=${NPROC:-2}
fi
CPU_DEVICES=${CPU_DEVICES:-4}
PORT=${PORT:-12355}
CONFIG=${CONFIG:-configs/synthetic.py}
WORKDIR=${WORKDIR:-runs/$(basename "${CONFIG}" .py)_${NPROC}proc}

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for ((i = 0; i < NPROC; i++)); do
  if [[ "${GPUS}" -gt 0 ]]; then
    # JAX_LOCAL_DEVICE_IDS: the GPUs this process drives (jax.distributed
    # makes only those visible to it).
    ids=$(seq -s, $((i * GPUS_PER_PROC)) $(((i + 1) * GPUS_PER_PROC - 1)))
    env_vars=(JAX_LOCAL_DEVICE_IDS="${ids}")
  else
    env_vars=(JAX_PLATFORMS=cpu
              XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${CPU_DEVICES}")
  fi
  env "${env_vars[@]}" python -m dare_jax.main --config="${CONFIG}" \
      --workdir="${WORKDIR}" --coordinator_address="localhost:${PORT}" \
      --num_processes="${NPROC}" --process_id="${i}" "$@" &
  pids+=($!)
done
# The first process to fail fails the job (the others are then stopped).
for pid in "${pids[@]}"; do
  wait "${pid}"
done
trap - EXIT
