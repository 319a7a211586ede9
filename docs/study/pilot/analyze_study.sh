#!/usr/bin/env bash
# Analysis of the first study (issue 4), one run at a time as the sweeps finish them: the gap decomposition
# and the uncertainty evaluation of the seed-0 run of each (inference type, task variant) group (8 runs;
# sized for the session: 2 held-out episodes, 4 windows of 50 steps per split, 300 samples per estimate,
# fresh encoders fitted for 150 steps), then the comparison report of all 24 runs into docs/study/pilot/, and a copy of
# the analyses in docs/study/pilot/analysis/. Extra analysed run directories may be given as arguments (copied too).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs/study}
EPISODES=${EPISODES:-10}
runs=()
for inf in amortized amortized_smoothing semi_amortized per_sequence; do
  for var in none 2; do runs+=("$OUT/cartpole-$inf-missing_every$var-s0"); done
done
finished() { [ -f "$1/metrics.jsonl" ] && [ "$(wc -l < "$1/metrics.jsonl")" -ge "$EPISODES" ]; }
todo=("${runs[@]}")
while [ ${#todo[@]} -gt 0 ]; do      # whichever run is finished first is analysed first
  left=()
  for run in "${todo[@]}"; do
    if ! finished "$run"; then left+=("$run"); continue; fi
    sleep 5   # the run's last checkpoint is written just after its last metrics line
    mkdir -p "$run/analysis"
    [ -f "$run/analysis/gaps.json" ] || python -m analysis.world_model_gaps "$run" --heldout-episodes 2 --sequences 4 \
        --eval-samples 300 --q-star-max-steps 400 --encoder-steps 150 --threads 1 > "$run/analysis/gaps.log" 2>&1
    [ -f "$run/analysis/uncertainty.json" ] || python -m analysis.uncertainty "$run" --heldout-episodes 2 --samples 64 \
        --threads 1 > "$run/analysis/uncertainty.log" 2>&1
    echo "analysed $run"
  done
  todo=("${left[@]}")
  [ ${#todo[@]} -eq 0 ] || sleep 30
done
python -m analysis.compare "$OUT"/cartpole-* --out docs/study/pilot
# the seed-0 analyses, kept beside the report (the run directories are not committed)
for run in "${runs[@]}" "$@"; do
  mkdir -p "docs/study/pilot/analysis/$(basename "$run")"
  cp "$run"/analysis/*.{md,json,png} "docs/study/pilot/analysis/$(basename "$run")/"
done

