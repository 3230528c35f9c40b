#!/usr/bin/env bash
# Checks a venv made by `bash scripts/install_python.sh` (a user's no-GPU install, no --dev) as a user meets it:
# the main job's --dry-run on the sample images with the offline profile, no test tools in it, and the CPU build of
# torch. scripts/setup_env.sh runs it on every fresh venv between the user's install and the test tools, so CI
# checks README's no-GPU install on each run. Exits non-zero naming what failed.
# Usage: [VENV=.venv] bash scripts/check_user_install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/user_install_check.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
if ! DRY=$("$PY" -m agents.batch_reverse --dir examples/images --config configs/offline.yaml --out "$OUT/out" --dry-run 2>&1); then
  echo "user install check: the main job's --dry-run failed in $VENV:" >&2
  echo "$DRY" | tail -20 >&2
  exit 1
fi
if ! grep -q "4 images: 4 to run" <<<"$DRY"; then
  echo "user install check: the dry run did not plan the 4 sample images:" >&2
  echo "$DRY" | tail -20 >&2
  exit 1
fi
PROBE=$("$PY" -c "import importlib.util as u, torch; print(u.find_spec('pytest') is None, torch.version.cuda is None)")
if [ "$PROBE" != "True True" ]; then
  echo "user install check: expected no pytest and a CPU torch in $VENV, got (no pytest, CPU torch) = $PROBE" >&2
  exit 1
fi
echo "user install ok: the main job's dry run planned 4 images; no test tools; CPU torch"
