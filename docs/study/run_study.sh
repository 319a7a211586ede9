#!/usr/bin/env bash
# The first study (issue 4): cartpole swingup (state) and its missing-observation variant (every 2nd
# observation kept), four inference types, three seeds, on this 2-core machine (two runs at a time).
# Sized for one working session: 20 episodes per run (5 random seed episodes), an evaluation every 5.
# Re-running any line skips what is finished and resumes what was interrupted.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/study}
COMMON=(--out "$OUT" --env cartpole --seeds 0 1 2 --grid missing_every=none,2 --set episodes=20 --set eval_every=5
        --max-concurrent 2)
python -m sweeps.launch "${COMMON[@]}" --inference amortized amortized_smoothing semi_amortized
python -m sweeps.launch "${COMMON[@]}" --inference per_sequence --set decision_refine_steps=3
# the trained models, measured directly: gaps and calibration on held-out episodes, two runs at a time
ls -d "$OUT"/cartpole-* | xargs -P 2 -I{} sh -c \
  'mkdir -p {}/analysis && python -m analysis.world_model_gaps {} --heldout-episodes 2 --sequences 8 \
       --eval-samples 500 --q-star-max-steps 600 --encoder-steps 300 > {}/analysis/gaps.log 2>&1 &&
   python -m analysis.uncertainty {} --heldout-episodes 2 --samples 64 > {}/analysis/uncertainty.log 2>&1'
python -m analysis.compare "$OUT"/cartpole-* --out docs/study
