#!/usr/bin/env bash
# Issue #13's converged exposure-bias protocol on a 2-core machine (~4.5 CPU-hours, ~2.5 h wall): the feature net
# and pretraining with two threads, then the per-variant stages in two processes of one thread each (disjoint
# variants: their unit folders never overlap), then the report. Every stage is resumable: rerun to continue.
# Usage: bash scripts/exposure_bias_converged.sh [python]   (default: .venv/bin/python)
set -euo pipefail
PY=${1:-.venv/bin/python}
RUN=("$PY" -m benchmarks.exposure_bias --converged)
PER_VARIANT=(--stage finetune --stage lambda --stage evaluate --stage curve --stage diagnostics --stage samples)
LOGS=runs/exposure_bias_converged
mkdir -p "$LOGS"
"${RUN[@]}" --threads 2 --stage feature_net --stage pretrain
# The groups balance the measured costs (benchmarks/exposure_bias/timing.py): ddpm's two-sided λ search is
# about 1.5 variants' worth, the k candidates' held-out scores and sdss's ξ ablation a little each.
"${RUN[@]}" --threads 1 --stage pretrain_curve --stage noise_floor "${PER_VARIANT[@]}" \
  --variant ddpm --variant ip --variant ss --variant sdss_sample --variant chain_only_k4 > "$LOGS/group_a.log" 2>&1 &
A=$!
"${RUN[@]}" --threads 1 "${PER_VARIANT[@]}" --variant sdss --variant mdss_k4 --variant mdss_k10 \
  --variant mdss_k4_sample --variant sdss_ddim --variant mdss_ddim_k4 > "$LOGS/group_b.log" 2>&1 &
B=$!
status=0
wait $A || status=$?
wait $B || status=$?
if [ "$status" != 0 ]; then
  echo "a group failed (see $LOGS/group_*.log); rerun this script to resume" >&2
  exit "$status"
fi
"${RUN[@]}" --stage report
