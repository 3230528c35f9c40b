#!/usr/bin/env bash
# Does the one-GPU / cluster install resolve? pip's resolver on `pip install -e '.[vllm,gguf]'` (CUDA torch from
# PyPI, vLLM's GPU build) in a throwaway venv, --dry-run: metadata only, no CUDA wheel is downloaded or installed.
# Ignores pip's configuration (a local CPU wheel mirror would answer for torch) and asks PyPI. Needs network.
#   bash scripts/resolve_gpu_install.sh [SUMMARY.txt]    (default: print the summary)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/pip" --isolated install -q --dry-run --ignore-installed --report "$TMP/report.json" \
  --index-url "${INDEX_URL:-https://pypi.org/simple}" -e ".[vllm,gguf]"
"$PY" - "$TMP/report.json" "$(date -u +%F)" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" > "$TMP/summary.txt" <<'PYEOF'
import json, sys
report, day, commit = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
versions = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in report["install"]}
print(f"# bash scripts/resolve_gpu_install.sh   ({day}, commit {commit}, pip {report['pip_version']}, PyPI)")
print(f"resolved without conflict: {len(versions)} packages, {sum(n.startswith('nvidia') for n in versions)} of them nvidia-*")
for name in ("torch", "torchvision", "vllm", "triton", "flashinfer-python", "ray", "transformers", "diffusers",
             "open-clip-torch", "gguf", "mlflow-skinny", "nvidia-cuda-runtime"):
    print(f"{name} {versions.get(name, '(not in the set)')}")
PYEOF
if [ -n "${1:-}" ]; then cp "$TMP/summary.txt" "$1"; fi
cat "$TMP/summary.txt"
