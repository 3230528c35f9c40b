#!/usr/bin/env bash
# Build the git-ignored wheelhouse .gpu_wheels/ that scripts/gpu_figures.sh installs from on a
# device machine with no network (torch and numpy are already there; diffusers and the rest are not).
#
# Holds exactly the wheels that benchmarks/serving_gpu.py and benchmarks/strategy_step_cost.py
# import beyond torch/numpy (through actors/, training/ and core/), plus their hard dependencies:
# diffusers, transformers, tokenizers, huggingface_hub, safetensors, open_clip_torch, ftfy, regex,
# pydantic, PyYAML, Pillow, ... (list below). Versions are pinned to this checkout's .venv
# (`.venv/bin/pip freeze`), wheels only (`pip download --no-deps --only-binary=:all:`), for
# CPython 3.11 on manylinux x86_64.
#
# Left out on purpose:
#   torch, numpy, triton, nvidia-*  the device has its own CUDA torch stack;
#   timm                            optional for open_clip (only timm vision towers), and imports torchvision;
#   accelerate, ray, vllm           not used by these two scripts.
# torchvision (imported by open_clip at import time) is tied to one torch build and is 7.7 MB, so it
# is left out by default: gpu_figures.sh uses the device's torchvision, else a text-only stand-in
# (CLIP text encodes never touch it). GPU_WHEELS_TORCHVISION=auto adds the .venv's pin (0.28.0, for
# torch 2.13.0 from PyPI), which gpu_figures.sh uses only when the device has exactly that torch.
#
# Usage (from anywhere; it runs here, never on the device):
#   bash scripts/gpu_wheels.sh
# Environment:
#   GPU_WHEELS_PYTHONS="3.11"      CPython versions to fetch wheels for, space-separated. If the
#                                  device's Python is not 3.11 (gpu_figures.sh prints it), set e.g.
#                                  "3.11 3.12": only Pillow, PyYAML, regex, pydantic_core and charset-normalizer
#                                  have per-version wheels (+10.8 MiB per version: 3.11 + 3.12 = 54.4 MiB).
#   GPU_WHEELS_TORCHVISION=0       "0" = none; "auto" = the .venv's torchvision version; or versions, e.g. "0.28.0 0.27.0".
#   GPU_WHEELS_DIR=.gpu_wheels     where to write (wiped first).
#   GPU_WHEELS_VENV=.venv          the virtualenv whose `pip freeze` gives the versions (and whose pip downloads).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${GPU_WHEELS_VENV:-.venv}
DEST=${GPU_WHEELS_DIR:-.gpu_wheels}
PYTHONS=${GPU_WHEELS_PYTHONS:-3.11}
TORCHVISION=${GPU_WHEELS_TORCHVISION:-0}
PY="$VENV/bin/python"

# Distributions (pip names). Roots first: what the two scripts import; then their hard dependencies
# (Requires-Dist without extras), minus what the device's torch already brings (filelock, fsspec,
# typing_extensions, jinja2, sympy, networkx, setuptools are re-shipped only where small and version-sensitive).
PACKAGES=(
  # roots
  diffusers transformers tokenizers huggingface_hub safetensors open_clip_torch ftfy regex
  pydantic pydantic_core PyYAML pillow
  # huggingface_hub / transformers / diffusers dependencies
  hf-xet httpx2 httpcore2 h11 anyio idna truststore certifi requests urllib3 charset-normalizer
  tqdm packaging filelock fsspec typing_extensions importlib_metadata zipp lazy-importer
  typer click shellingham rich markdown-it-py mdurl Pygments annotated-doc
  # pydantic / ftfy dependencies
  annotated-types typing-inspection wcwidth
)

# manylinux tags, most compatible first: pip takes the first listed platform that has a wheel,
# so the wheel needing the oldest glibc wins.
PLATFORMS=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64
           manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64)

[ -x "$PY" ] || { echo "no python at $PY (set GPU_WHEELS_VENV)" >&2; exit 1; }
FREEZE=$("$PY" -m pip freeze --all 2>/dev/null)

norm() { echo "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/-/g'; }
pin_of() {  # name -> name==version from the freeze (error if absent)
  local want line n
  want=$(norm "$1")
  while IFS= read -r line; do
    case "$line" in *==*) ;; *) continue ;; esac
    n=$(norm "${line%%==*}")
    if [ "$n" = "$want" ]; then echo "${line%%+*}"; return 0; fi   # drop local version (+cpu)
  done <<< "$FREEZE"
  echo "gpu_wheels.sh: $1 is not installed in $VENV" >&2
  return 1
}

PINS=()
for p in "${PACKAGES[@]}"; do PINS+=("$(pin_of "$p")"); done
TV_PINS=()
case "$TORCHVISION" in
  0|"") ;;
  auto) TV_PINS+=("$(pin_of torchvision)") ;;
  *) for v in $TORCHVISION; do TV_PINS+=("torchvision==$v"); done ;;
esac

rm -rf "$DEST"
mkdir -p "$DEST"
PLAT_ARGS=()
for p in "${PLATFORMS[@]}"; do PLAT_ARGS+=(--platform "$p"); done

for v in $PYTHONS; do
  echo "== wheels for CPython $v (manylinux x86_64)"
  nice -n 10 "$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    --implementation cp --python-version "$v" "${PLAT_ARGS[@]}" --dest "$DEST" "${PINS[@]}" "${TV_PINS[@]}"
done

{
  echo "# Wheelhouse for scripts/gpu_figures.sh, built $(date -u +%Y-%m-%dT%H:%MZ) by scripts/gpu_wheels.sh"
  echo "# pins from $VENV (pip freeze); CPython: $PYTHONS; manylinux x86_64; torchvision: ${TV_PINS[*]:-none}"
  printf '%s\n' "${PINS[@]}"
} > "$DEST/requirements.txt"
printf '%s\n' "${TV_PINS[@]}" > "$DEST/torchvision.txt"

echo
echo "== $DEST"
ls -l "$DEST" | awk 'NR>1 {printf "%10d  %s\n", $5, $9}'
total=$(du -cb "$DEST"/* | tail -1 | cut -f1)
echo "total: $total bytes ($(awk -v b="$total" 'BEGIN {printf "%.1f MiB", b/1048576}')) in $(ls "$DEST"/*.whl | wc -l) wheels"
if [ "$total" -gt $((48 * 1024 * 1024)) ]; then
  echo "WARNING: over 48 MiB; a device call carries at most 64 MiB in all" >&2
fi
