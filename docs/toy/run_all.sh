#!/usr/bin/env bash
# Regenerates docs/toy at the toy experiment's defaults: each task in turn (or the tasks given as arguments, e.g. one
# list per core), resumable: --resume keeps every (method, seed) run and the true-model gaps that docs/toy/<task>/
# results.json already holds, so a stopped call continues where it was. Each finished stage is committed
# (--commit: docs/toy/<task>/ without its models), so that a fresh clone continues from git; COMMIT=0 leaves that
# to you.
set -euo pipefail
cd "$(dirname "$0")/../.."
tasks=("$@")
[ ${#tasks[@]} -eq 0 ] && tasks=(synthetic9 synthetic10 vsmc_lgssm square)
commit=(--commit); [ "${COMMIT:-1}" = 0 ] && commit=()
for task in "${tasks[@]}"; do
  OMP_NUM_THREADS=1 python -m analysis.toy_experiment --task "$task" --out "docs/toy/$task" --resume "${commit[@]}"
done
