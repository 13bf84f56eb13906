#!/usr/bin/env bash
# DaRe on a Cloud TPU VM pod slice (e.g. v4-32: 4 hosts): copies this
# checkout to every worker, installs the requirements, then starts
# dare_jax.main on all workers at once (gcloud ... --worker=all). Every
# worker is one JAX process; --distributed=on lets jax.distributed find the
# other workers through the TPU metadata.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/shared/runs/market \
#     DATA=/mnt/shared/Market-1501-v15.09.15 bash launch/tpu_pod.sh
#
#   TPU_NAME   the TPU VM (pod slice)                    (required)
#   ZONE       its zone                                  (required)
#   PROJECT    the GCP project                           (gcloud's default)
#   CONFIG     config file                               (configs/market.py)
#   DATA       the dataset folder, at this path on every worker (e.g. a
#              Filestore/NFS mount or a copy per worker)
#   WORKDIR    checkpoints & results: a path SHARED by every worker (NFS or a
#              gcsfuse mount): all workers write the Orbax checkpoint, and
#              process 0 writes metrics.json and the figures there
#   REMOTE_DIR where the code goes on the workers        (~/dare_jax)
#   SETUP      1: copy the code and pip install first (the requirements but
#              PyTorch, which only the parity tests use, plus jax[tpu]);
#              0: just run (1)
#   EXTRA      more dare_jax.main arguments, e.g. "--config.model.dtype=bfloat16"
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU zone}"
CONFIG=${CONFIG:-configs/market.py}
WORKDIR=${WORKDIR:?set WORKDIR to a directory shared by every worker}
REMOTE_DIR=${REMOTE_DIR:-dare_jax}
SETUP=${SETUP:-1}
gc=(gcloud compute tpus tpu-vm)
where=("${TPU_NAME}" --zone="${ZONE}" ${PROJECT:+--project="${PROJECT}"} --worker=all)

if [[ "${SETUP}" == 1 ]]; then
  tarball=$(mktemp --suffix=.tar.gz)
  git archive --format=tar.gz -o "${tarball}" HEAD
  "${gc[@]}" scp "${tarball}" "${where[0]}":dare_jax.tar.gz "${where[@]:1}"
  "${gc[@]}" ssh "${where[@]}" --command="mkdir -p ${REMOTE_DIR} && \
    tar -xzf dare_jax.tar.gz -C ${REMOTE_DIR} && cd ${REMOTE_DIR} && \
    grep -v -e '^torch' requirements.txt > /tmp/dare_jax_requirements.txt && \
    pip install -q -r /tmp/dare_jax_requirements.txt 'jax[tpu]' && \
    pip install -q --no-deps -e ."
  rm -f "${tarball}"
fi
args="--config=${CONFIG} --workdir=${WORKDIR} --distributed=on"
if [[ -n "${DATA:-}" ]]; then args+=" --config.data.root=${DATA}"; fi
"${gc[@]}" ssh "${where[@]}" \
    --command="cd ${REMOTE_DIR} && python -m dare_jax.main ${args} ${EXTRA:-}"
