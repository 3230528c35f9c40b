#!/usr/bin/env bash
# Issue #13's converged exposure-bias protocol on a 2-core machine, three training seeds, with issue #28's controls
# (chain_only_k10, ε-scaling of MDSS k = 4 and 10, the side probe's λ in the held-out search): about 7.0 CPU-hours,
# 1.4 of them the pretraining (python -m benchmarks.exposure_bias.timing --preset converged --costs 0.126 0.144
# 0.000681; ~4.5 before issue #28), about 3 h wall after it: the feature net and pretraining with two threads, then
# the per-variant stages in two processes of one thread each (disjoint variants: their unit folders never
# overlap), then the report. Every stage is resumable: rerun to continue. Six seeds: scripts/exposure_bias_six_seeds.sh.
# Usage: bash scripts/exposure_bias_converged.sh [python]   (default: .venv/bin/python)
set -euo pipefail
PY=${1:-.venv/bin/python}
RUN=("$PY" -m benchmarks.exposure_bias --converged)
PER_VARIANT=(--stage finetune --stage lambda --stage evaluate --stage curve --stage diagnostics --stage samples)
LOGS=runs/exposure_bias_converged
mkdir -p "$LOGS"
"${RUN[@]}" --threads 2 --stage feature_net --stage pretrain
# The groups balance the costs timing.py extrapolates (balanced_groups: 2.74 + 0.14 and 2.84 CPU-h): the
# ε-scaled variants' held-out searches over the 13-value λ grid are about 0.23 CPU-h per model.
"${RUN[@]}" --threads 1 --stage pretrain_curve --stage noise_floor "${PER_VARIANT[@]}" \
  --variant ddpm --variant mdss_k10 --variant sdss_sample --variant chain_only_k4 > "$LOGS/group_a.log" 2>&1 &
A=$!
"${RUN[@]}" --threads 1 "${PER_VARIANT[@]}" --variant mdss_k4 --variant sdss --variant ip --variant ss \
  --variant sdss_ddim --variant mdss_ddim_k4 --variant mdss_k4_sample --variant chain_only_k10 > "$LOGS/group_b.log" 2>&1 &
B=$!
status=0
wait $A || status=$?
wait $B || status=$?
if [ "$status" != 0 ]; then
  echo "a group failed (see $LOGS/group_*.log); rerun this script to resume" >&2
  exit "$status"
fi
"${RUN[@]}" --stage report
