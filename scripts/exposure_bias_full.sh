#!/usr/bin/env bash
# The recorded `--full` exposure-bias run on a 2-core machine: pretraining with two threads, then the
# per-variant stages in two processes of one thread each (disjoint variants, so their unit folders never
# overlap), then the report. Every stage is resumable: rerun this script to continue an interrupted run.
# Usage: bash scripts/exposure_bias_full.sh [python]   (default: .venv/bin/python)
set -euo pipefail
PY=${1:-.venv/bin/python}
RUN=("$PY" -m benchmarks.exposure_bias --full)
PER_VARIANT=(--stage finetune --stage lambda --stage evaluate --stage curve --stage diagnostics --stage samples)
mkdir -p runs/exposure_bias_full
"${RUN[@]}" --threads 2 --stage feature_net --stage pretrain
# the groups balance the measured costs: the ε-scaled variants (ddpm, mdss_k4) and the ξ-ablation one (sdss)
# cost about twice the others
"${RUN[@]}" --threads 1 "${PER_VARIANT[@]}" --stage noise_floor \
  --variant ddpm --variant sdss --variant ip --variant mdss_k10 > runs/exposure_bias_full/group_a.log 2>&1 &
A=$!
"${RUN[@]}" --threads 1 "${PER_VARIANT[@]}" \
  --variant mdss_k4 --variant ss --variant sdss_ddim --variant mdss_ddim_k4 > runs/exposure_bias_full/group_b.log 2>&1 &
B=$!
status=0
wait $A || status=$?
wait $B || status=$?
if [ "$status" != 0 ]; then
  echo "a group failed (see runs/exposure_bias_full/group_*.log); rerun this script to resume" >&2
  exit "$status"
fi
"${RUN[@]}" --stage report
