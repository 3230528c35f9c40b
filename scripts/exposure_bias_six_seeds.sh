#!/usr/bin/env bash
# Issue #28's six-seed converged exposure-bias run on a 2-core machine: the converged preset with its decisive
# controls (chain_only_k10; MDSS k = 4 and k = 10 sampled with ε-scaling; the side probe's λ in the held-out
# search) and training seeds 3-5 for ddpm, mdss_k4, mdss_k10, chain_only_k4 and chain_only_k10, on every cell of
# the preset (DDPM-30, DDIM-10/30/100, DPM-Solver-2-10: the headline cells). The feature net and the pretrained
# model are the 3-seed run's (same fingerprints and folders), and so are the units of seeds 0-2: a work folder
# holding them is continued, not redone. Every stage is resumable: rerun the script to continue.
#
# Budget (python -m benchmarks.exposure_bias.timing --preset converged --seeds 6 --costs 0.126 0.144 0.000681,
# from the per-step costs measured in docs/benchmarks/exposure_converged_timing.txt; metric time left out):
# pretraining 1.40 CPU-h (already spent when the pretrained model exists), 51 fine-tunes 2.04, evaluation 1.83
# unscaled + at most 1.29 for the ε-scaled settings, held-out searches 4.21, pretraining curve 0.14: about
# 10.9 CPU-h in all, 9.5 after the pretraining; the two single-thread groups below hold 4.81 and 4.80 CPU-h
# (the second with the pretraining curve), so about 5 h of wall time on two idle cores.
#
# Across machines (this workplace's sessions each get a fresh machine for a few hours): when WORK does not exist
# and CARRY (default docs/exposure_bias_six_seeds_carry) holds a packed run, the run continues from it (the recorded
# run finished on 2026-12-05; its last packed state is in git commit 03af60e, and the folder is no longer kept). Before a
# machine goes, stop or pause (kill -STOP) the run and pack what is finished into CARRY, then commit it:
#   .venv/bin/python -m benchmarks.exposure_bias --converged --seeds 6 --work "$WORK" --pack "$CARRY"
# (benchmarks/exposure_bias/carry.py: finished units' records, the scores an unfinished λ search or evaluation
# has recorded so far, and only the weights an unfinished unit reads.)
#
# Usage: [WORK=DIR] [OUT=DIR] [CARRY=DIR] bash scripts/exposure_bias_six_seeds.sh [python]   (default: .venv/bin/python; WORK
# default runs/exposure_bias_converged, OUT default docs/exposure_bias_six_seeds). Do not start it while another process is still pretraining in the same WORK
# (the two would train the same folder): it refuses when models/pretrained was started and is not done, unless
# RESUME_PRETRAIN=1 (a killed pretraining to be resumed here).
set -euo pipefail
PY=${1:-.venv/bin/python}
WORK=${WORK:-runs/exposure_bias_converged}
# Its own tables folder: the committed 3-seed results in docs/exposure_bias_converged/ stay as they are (the
# 3-seed run's models are gone, so seeds 0-2 here are a replicate, not those numbers).
OUT=${OUT:-docs/exposure_bias_six_seeds}
RUN=("$PY" -m benchmarks.exposure_bias --converged --seeds 6 --work "$WORK" --out "$OUT")
CARRY=${CARRY:-docs/exposure_bias_six_seeds_carry}
if [ ! -e "$WORK" ] && [ -f "$CARRY/CARRY.json" ]; then
  "${RUN[@]}" --unpack "$CARRY"
  RESUME_PRETRAIN=1  # a carried unfinished pretraining: no process here trains it yet
fi
PER_VARIANT=(--stage finetune --stage lambda --stage evaluate --stage curve --stage diagnostics --stage samples)
LOGS=$WORK/logs
mkdir -p "$LOGS"
PRE=$WORK/models/pretrained
if [ -f "$PRE/STARTED.json" ] && [ ! -f "$PRE/DONE.json" ] && [ "${RESUME_PRETRAIN:-0}" != 1 ]; then
  echo "$PRE: pretraining started and not done; wait for it, or set RESUME_PRETRAIN=1 if no process runs it" >&2
  exit 3
fi
"${RUN[@]}" --threads 2 --stage feature_net --stage pretrain
# Two groups of about equal cost (timing.balanced_groups on the costs above): the ε-scaled variants' held-out
# searches over the 13-value λ grid dominate (about 0.23 CPU-h per model), so ddpm and mdss_k10 share a group.
"${RUN[@]}" --threads 1 "${PER_VARIANT[@]}" \
  --variant ddpm --variant mdss_k10 --variant mdss_k4_sample >> "$LOGS/six_seeds_group_a.log" 2>&1 &
A=$!
"${RUN[@]}" --threads 1 --stage pretrain_curve --stage noise_floor "${PER_VARIANT[@]}" \
  --variant mdss_k4 --variant chain_only_k4 --variant chain_only_k10 --variant sdss --variant ip --variant ss \
  --variant sdss_ddim --variant mdss_ddim_k4 --variant sdss_sample >> "$LOGS/six_seeds_group_b.log" 2>&1 &
B=$!
status=0
wait $A || status=$?
wait $B || status=$?
if [ "$status" != 0 ]; then
  echo "a group failed (see $LOGS/six_seeds_group_*.log); rerun this script to resume" >&2
  exit "$status"
fi
# tables, headline.csv, contrasts.csv (with the pre-specified family) and held_out_selection.csv into $OUT,
# then the verdicts (verdicts.csv, control_verdicts.csv) from those files
"${RUN[@]}" --stage report
"$PY" -m benchmarks.exposure_bias.verdicts --dir "$OUT"
