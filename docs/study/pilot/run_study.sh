#!/usr/bin/env bash
# The first study (issue 4): cartpole swingup (state) and its missing-observation variant (every 2nd
# observation kept), four inference types, three seeds: 24 runs on this 2-core machine.
# Sized for one working session: 10 episodes per run (5 random seed episodes, then 5 with the planner,
# each after 100 model updates) and one evaluation episode at the end. Re-running the script skips what
# is finished and resumes what was interrupted; EPISODES=20 extends the finished runs.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs/study}
EPISODES=${EPISODES:-10}
# one local Ray instance with 2 slots (one per core) shared by both sweeps
ray start --head --num-cpus 2 --include-dashboard false
trap 'ray stop' EXIT
COMMON=(--address auto --max-concurrent 2 --out "$OUT" --env cartpole --seeds 0 1 2 --grid missing_every=none,2
        --set episodes="$EPISODES" --set eval_every=5)
python -m sweeps.launch "${COMMON[@]}" --inference amortized amortized_smoothing semi_amortized &
python -m sweeps.launch "${COMMON[@]}" --inference per_sequence --set decision_refine_steps=3
wait
