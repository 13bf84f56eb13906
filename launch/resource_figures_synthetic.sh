#!/usr/bin/env bash
# The paper's resource figures (3, 5, 6, 7, 8) on the synthetic dataset, on
# whatever devices are present: trains the small DaRe and its TriNet
# ensemble (skipped when a run has finished: training resumes or ends at
# once), then writes runs/synthetic/budget_report.json and fig*.png.
#   bash launch/resource_figures_synthetic.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs}"
python -m dare_jax.main --config=configs/synthetic.py --workdir="$runs/synthetic"
for v in s m l; do
  python -m dare_jax.main --config=configs/trinet_synthetic.py:$v \
      --workdir="$runs/trinet_$v"
done
python -m dare_jax.tools.resource_report --config=configs/synthetic.py \
    --workdir="$runs/synthetic" \
    --baseline=configs/trinet_synthetic.py:s@"$runs/trinet_s" \
    --baseline=configs/trinet_synthetic.py:m@"$runs/trinet_m" \
    --baseline=configs/trinet_synthetic.py:l@"$runs/trinet_l"
