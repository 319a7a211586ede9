#!/usr/bin/env bash
# The equal-return check of issue 16: agents trained with the old planner (cem, profile v1's) and the new default
# (icem); semi_amortized refining on every 5th update (its wall-clock per episode within 1.4x amortized's); amortized
# with 50 model updates per episode instead of 100 (the next factor, now that training is most of an episode).
# 3 seeds x 100 episodes each, 10 evaluation episodes at episodes 50 and 100. Resumable: run it again and finished
# runs are skipped, killed ones resumed (sweeps.launch). Two runs at once (one per core); about 9 core-hours on this
# project's 2-core CPU.
# Then: python -m analysis.compare runs/throughput/* --out docs/throughput/return --final-episodes 1
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
python -m sweeps.launch --out runs/throughput --env cartpole --inference amortized semi_amortized --seeds 0 1 2 \
    --grid planner=cem,icem --max-concurrent 2 "$@"
python -m sweeps.launch --out runs/throughput --env cartpole --inference semi_amortized --seeds 0 1 2 \
    --set planner=icem --grid refine_every=5 --max-concurrent 2 "$@"
python -m sweeps.launch --out runs/throughput --env cartpole --inference amortized --seeds 0 1 2 \
    --set planner=icem --grid train_steps=50 --max-concurrent 2 "$@"
