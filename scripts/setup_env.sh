#!/usr/bin/env bash
# Set up the CPU environment from scratch on a fresh Debian/Ubuntu machine with Python 3.11:
# apt packages, a venv at .venv (or $VENV) with this package and the CPU builds of torch and vLLM.
# Used by README's commands and by .ci/run. Safe to rerun (pip skips what is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

# Debian packages, only those missing: Fashion-MNIST for MDSS training runs and the exposure-bias
# benchmark (offline), a Postgres server whose initdb/pg_ctl the tests use to start throwaway
# servers of their own (tests/postgres_server.py), and Chromium (with a font) that Playwright
# drives headless to test and time the results browser (tests/agents/test_report_browser.py,
# benchmarks/report_browser.py): Playwright's own browser download is never used. Prometheus: the
# metrics test starts one on loopback (tests/agents/test_batch_ray.py); the package's service is not started.
APT=()
[ -d /usr/share/datasets/fashion-mnist ] || APT+=(dataset-fashion-mnist)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || APT+=(postgresql)
command -v chromium >/dev/null || APT+=(chromium)
[ -d /usr/share/fonts/truetype/dejavu ] || APT+=(fonts-dejavu-core)
command -v prometheus >/dev/null || APT+=(prometheus)  # a real server for the metrics test (never started as a service)
if [ ${#APT[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # The package would start its default cluster as a system service (port 5432); nothing here needs
  # it. policy-rc.d exiting 101 ("forbidden") stops invoke-rc.d / deb-systemd-invoke from starting it.
  GUARD=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    GUARD=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$GUARD" >/dev/null
    $SUDO chmod 755 "$GUARD"
  fi
  status=0
  # env: sudo would drop a DEBIAN_FRONTEND set in front of it.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT[@]}" >/dev/null || status=$?
  [ -z "$GUARD" ] || $SUDO rm -f "$GUARD"
  [ "$status" = 0 ] || exit "$status"
  if [[ " ${APT[*]} " == *" postgresql "* ]]; then
    # Keep the cluster the package created (no data is deleted) but stopped, and not started at boot.
    pg_lsclusters -h | while read -r ver name _port state _rest; do
      [ "$state" != online ] || $SUDO pg_ctlcluster "$ver" "$name" stop -m fast
      echo manual | $SUDO tee "/etc/postgresql/$ver/$name/start.conf" >/dev/null
    done
  fi
fi

# The Python side, with the test tools (the same script a user's no-GPU install runs without --dev).
if [ ! -x "$VENV/bin/python" ]; then
  # A fresh venv gets a user's install first (README's no-GPU row: no test tools) and is checked as a user meets it
  # (scripts/check_user_install.sh) before the test tools go on top: CI checks the newcomer's install on every run.
  VENV="$VENV" PYTHON="$PY" bash scripts/install_python.sh
  VENV="$VENV" bash scripts/check_user_install.sh
fi
VENV="$VENV" PYTHON="$PY" bash scripts/install_python.sh --dev
