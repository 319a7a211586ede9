#!/usr/bin/env bash
# The equal-return check of issue 16: agents trained with the old planner (cem, profile v1's) and the new default
# (icem); amortized with 50 model updates per episode instead of 100 and icem's "small" preset (half the population):
# the configuration that would give 3x v1's episodes per core-hour; semi_amortized refining on every 5th update (its
# wall-clock per episode within 1.4x amortized's); amortized with 50 updates alone; semi_amortized with CEM.
# 3 seeds x 100 episodes each, 10 evaluation episodes at episodes 50 and 100. Resumable: run it again and finished
# runs are skipped, killed ones resumed (sweeps.launch). The groups run in the order of the issue's targets
# (planner, semi-amortized training, default profile, then the update count), so a stopped study has the most needed
# runs first; semi_amortized with CEM (v1's planner) last: at 64 s per episode it is the dearest group, and it only
# prices v1's semi-amortized return. About 10 core-hours on this project's 2-core CPU; extra arguments go to every
# sweeps.launch call (e.g. --max-concurrent 1 to leave a core free).
# Then: python -m analysis.compare runs/throughput/* --out docs/throughput/return --final-episodes 1
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
sweep() { python -m sweeps.launch --out runs/throughput --env cartpole --seeds 0 1 2 "$@"; }
sweep --inference amortized --grid planner=cem,icem --max-concurrent 2 "$@"
sweep --inference amortized --set planner=icem --set train_steps=50 --grid planner_preset=small --max-concurrent 2 "$@"
sweep --inference semi_amortized --set refine_every=1 --grid planner=icem --max-concurrent 2 "$@"
sweep --inference semi_amortized --set planner=icem --grid refine_every=5 --max-concurrent 2 "$@"
sweep --inference amortized --set planner=icem --grid train_steps=50 --max-concurrent 2 "$@"
sweep --inference semi_amortized --set refine_every=1 --grid planner=cem --max-concurrent 2 "$@"
