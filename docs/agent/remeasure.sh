#!/usr/bin/env bash
# Retrain a run of this folder from its committed config (same settings and seed; the checkpoints are not kept in
# git) and re-measure it at the current defaults of the analysis commands: the gap decomposition
# (analysis.world_model_gaps: same-family q*, AIS, BDMC) and the calibration (analysis.uncertainty). Resumable at
# every step: a killed training resumes from its last checkpoint, finished steps are skipped. Light results go to
# docs/agent/NAME-remeasured/ (config, metrics, learning curve, analysis/*.{json,md,png}) and are committed
# (python -m sweeps.commit; COMMIT=0 leaves that to you).
#
#   docs/agent/remeasure.sh default-amortized-s0 learnedstd-semi_amortized-s0     # RUNS=<dir> for the run dirs
#
# Cost on this project's 2-core CPU, one thread, another job on the other core (session 7, learnedstd-amortized-s0):
# training 34 min (amortized; semi_amortized about 100), world_model_gaps 78 min, uncertainty a few minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
runs=${RUNS:-runs/agent}
for name in "$@"; do
  config=docs/agent/$name.config.json
  [ -f "$config" ] || { echo "remeasure.sh: no $config; valid names: $(ls docs/agent/*.config.json | xargs -n1 basename | sed 's/.config.json//' | tr '\n' ' ')" >&2; exit 2; }
  run=$runs/$name
  if [ -f "$run/config.json" ]; then resume=(--resume); else resume=(); fi
  # every stored setting as a flag (a config from before a setting existed loads with what that run did)
  mapfile -t flags < <(python -c "
import sys; from dataclasses import asdict; from agent.config import AgentConfig, flag
for k, v in asdict(AgentConfig.load(sys.argv[1])).items():
    if v is not None and k != 'wandb':
        print(flag(k)); print(int(v) if isinstance(v, bool) else v)" "$config")
  # --physics-state 1: the true physical states go into the replay (storage only) for the calibration read-out
  python run_agent.py "${flags[@]}" --physics-state 1 --wandb disabled --no-progress --run-dir "$run" "${resume[@]}"
  [ -f "$run/analysis/gaps.json" ] || python -m analysis.world_model_gaps "$run"
  [ -f "$run/analysis/uncertainty.json" ] || python -m analysis.uncertainty "$run"
  out=docs/agent/$name-remeasured
  mkdir -p "$out/analysis"
  cp "$run/config.json" "$run/metrics.jsonl" "$run/learning_curve.png" "$out/"
  cp "$run"/analysis/*.json "$run"/analysis/*.md "$run"/analysis/*.png "$out/analysis/" 2>/dev/null || true
  if [ "${COMMIT:-1}" = 0 ]; then
    echo "remeasure.sh: $name done; commit $out"
  else
    python -m sweeps.commit -m "agent re-measure (issue 15): $name" "$out" \
      && echo "remeasure.sh: $name done and committed ($out)" || echo "remeasure.sh: $name done; commit $out"
  fi
done
