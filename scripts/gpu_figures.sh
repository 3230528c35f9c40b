#!/usr/bin/env bash
# GPU figures for docs/benchmarks.md (issue #12, item 6), in one command on a device machine:
#   1. prints the GPU (nvidia-smi), python and torch;
#   2. installs from the wheelhouse .gpu_wheels/ (built here by scripts/gpu_wheels.sh, carried to the
#      device) into a throwaway folder on PYTHONPATH: only what is missing or too old, never from the
#      network, never into the device's own site-packages;
#   3. runs, each under `timeout`, in this order:
#        serving_quick  benchmarks/serving_gpu.py --device cuda --quick   (SD1.5-size t2i batches 1, 8; CLIP L/14 texts)
#        step_cost      benchmarks/strategy_step_cost.py --preset cifar10 --device cuda --bf16 --rounds 12 --steps 3 --warmup 3
#        serving_full   benchmarks/serving_gpu.py --device cuda           (t2i batches 1, 8, 32, 3 repeats)
#      serving_quick goes first so that a figure exists even if the full run is cut by its timeout
#      (serving_gpu.py prints its table only at the end).
#   4. writes everything under "$OUT/gpu_figures/": gpu.txt, env.txt, install.txt, <step>.out (stdout:
#      the tables), <step>.err (stderr), serving_gpu_{quick,full}.json, summary.md.
# It keeps going when a part fails (recorded in summary.md) and exits non-zero only if no benchmark ran.
#
# Time budget (GPU_FIGURES_BUDGET_S, default 450 s = 7.5 min, for a device call of under 8 min):
#   setup (nvidia-smi, import checks, install, checks)    ~30-60 s  (pip install capped at 120 s)
#   serving_quick   cap 150 s  expected ~40-70 s on an H100/H200 (model build + 2 batches x 2 calls)
#   step_cost       cap 150 s  expected ~30-60 s (8 strategies x 39 steps; DDPM step ~50-150 ms at batch 128;
#                   12 rounds as docs/benchmarks.md quotes for the CPU table: few rounds make the min noisy)
#   serving_full    cap = what is left of the budget (<= 300 s); expected ~100-180 s (batch 32 x 4 calls
#                   of 25 CFG steps at 512^2 is most of it: ~15-20 s per call from published SD1.5 fp16 speeds)
#   A step is skipped when under 30 s would be left for it; the caps bound the whole run at the budget.
#
# Usage (repository root, device machine):
#   bash scripts/gpu_figures.sh
# Environment:
#   OUT                   results go to $OUT/gpu_figures (default: /tmp/gpu_figures_out/gpu_figures)
#   GPU_FIGURES_DEVICE    torch device (default cuda)
#   GPU_FIGURES_SET       "serving" (default: the three steps above) or "calibration" (issue #24 item 7: three steps of
#                         benchmarks/gpu_calibration.py — t2i batch 1/4/8 cap 120 s, share cap 150 s, llm cap 240 s —
#                         calib_<part>.out and calib_<part>.json; expected ~4-6 min on an H100/H200)
#   GPU_FIGURES_TINY=1    dry run: the scripts' tiny/small modes (serving_gpu --tiny twice; step cost --preset small,
#                         batch 4, DDPM and MDSS, 1 step), for checking the plumbing on a CPU
#   GPU_FIGURES_BUDGET_S  total seconds (default 450)
#   GPU_FIGURES_INSTALL   "missing" (default: only what is missing or too old for the rest) or "all" (every pin)
#   GPU_FIGURES_PYTHON    interpreter (default: the first of python3, python that imports torch)
#   GPU_WHEELS_DIR        wheelhouse (default .gpu_wheels)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
START=$SECONDS
BUDGET=${GPU_FIGURES_BUDGET_S:-450}
DEVICE=${GPU_FIGURES_DEVICE:-cuda}
TINY=${GPU_FIGURES_TINY:-0}
INSTALL_MODE=${GPU_FIGURES_INSTALL:-missing}
WHEELS=${GPU_WHEELS_DIR:-.gpu_wheels}
PY=${GPU_FIGURES_PYTHON:-}
if [ -z "$PY" ]; then  # the first of python3, python that has torch
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch" >/dev/null 2>&1; then PY=$(command -v "$c"); break; fi
  done
  PY=${PY:-$(command -v python3 || command -v python)}
fi
OUT=${OUT:-/tmp/gpu_figures_out}
DIR="$OUT/gpu_figures"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_figures.XXXXXX")
SITE="$WORK/site"      # wheels from the wheelhouse
TVSITE="$WORK/tv"      # torchvision wheel, if it matches the device's torch
mkdir -p "$DIR" "$SITE"
SUMMARY="$DIR/summary.md"

# Nothing may reach the network: hub libraries offline, pip without an index.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export HF_HOME="$WORK/hf_home" TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

elapsed() { echo $((SECONDS - START)); }
log() { echo "[gpu_figures +$(elapsed)s] $*"; }
STEP_ROWS=()
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }

# ---------------------------------------------------------------- 1. machine
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) CPUs"
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1
    echo
    timeout 30 nvidia-smi 2>&1
  else
    echo "nvidia-smi: not found"
  fi
} > "$DIR/gpu.txt"
cat "$DIR/gpu.txt" | head -20
if [ -z "$PY" ]; then
  echo "no python3/python on PATH" | tee "$DIR/env.txt"
  exit 1
fi
"$PY" - <<'EOF' > "$DIR/env.txt" 2>&1
import platform, sys
print("python", platform.python_version(), sys.executable)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
except Exception as e:  # noqa: BLE001
    print("torch: import failed:", repr(e))
try:
    import numpy
    print("numpy", numpy.__version__)
except Exception as e:  # noqa: BLE001
    print("numpy: import failed:", repr(e))
EOF
cat "$DIR/env.txt"

# ---------------------------------------------------------------- 2. install from the wheelhouse
# Roots: what the two benchmarks import beyond torch/numpy. A root is installed when `import` fails
# (or GPU_FIGURES_INSTALL=all); any other wheel only when something being installed (or a root
# already there) requires it and the device lacks it or has a version outside the requirement.
cat > "$WORK/plan.py" <<'EOF'
import importlib.metadata as md
import json, os, re, subprocess, sys, zipfile
from email.parser import Parser

wheelhouse, site, mode, plan_file = sys.argv[1:5]
ROOTS = {  # distribution -> module
    "diffusers": "diffusers", "transformers": "transformers", "tokenizers": "tokenizers",
    "huggingface-hub": "huggingface_hub", "safetensors": "safetensors", "open-clip-torch": "open_clip",
    "ftfy": "ftfy", "regex": "regex", "pydantic": "pydantic", "pyyaml": "yaml", "pillow": "PIL",
}
NEVER = {"torch", "numpy", "torchvision", "timm", "triton", "setuptools", "colorama"}  # device's own / optional

def norm(n): return re.sub(r"[-_.]+", "-", n).lower()

try:
    from packaging.requirements import Requirement
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
except ImportError:
    try:
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.tags import sys_tags
        from pip._vendor.packaging.utils import parse_wheel_filename
    except ImportError:
        Requirement = None
if Requirement is None:  # neither packaging nor pip: match tags by hand, check names only
    v = f"{sys.version_info[0]}{sys.version_info[1]}"
    def parse(fn):
        name, ver = fn.split("-")[:2]
        tags = fn[:-4]
        p = 0 if f"-cp{v}-" in tags else 1 if ("-abi3-" in tags and "x86_64" in tags) or tags.endswith("none-any") else None
        return norm(name), ver, p
else:
    order = {str(t): i for i, t in enumerate(sys_tags())}
    def parse(fn):
        name, ver, _, tags = parse_wheel_filename(fn)
        ps = [order[str(t)] for t in tags if str(t) in order]
        return norm(str(name)), str(ver), (min(ps) if ps else None)

wheels, skipped = {}, []
for fn in sorted(os.listdir(wheelhouse)):
    if not fn.endswith(".whl"):
        continue
    name, ver, p = parse(fn)
    if p is None:
        skipped.append(fn)
        continue
    if name not in wheels or p < wheels[name][2]:
        wheels[name] = (fn, ver, p)

def wheel_requires(fn):
    with zipfile.ZipFile(os.path.join(wheelhouse, fn)) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(meta).decode()).get_all("Requires-Dist") or []

def have(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None

def importable(module):
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]

report, install = [], {}
for dist, module in ROOTS.items():
    ok, err = importable(module)
    why = None
    if mode == "all":
        why = "GPU_FIGURES_INSTALL=all"
    elif not ok:
        why = f"import {module} failed: {err}"
    report.append(f"root {dist:<16} device {have(dist) or '-':<14} import {'ok' if ok else 'FAILS'}")
    if why:
        if dist in wheels:
            install[dist] = why
        else:
            report.append(f"  !! {dist} is needed ({why}) but has no compatible wheel in {wheelhouse}")
if mode == "all":
    for dist in wheels:
        if dist not in NEVER:
            install.setdefault(dist, "GPU_FIGURES_INSTALL=all")

def requires_of(dist):
    if dist in install:
        return wheel_requires(wheels[dist][0])
    try:
        return md.requires(dist) or []
    except md.PackageNotFoundError:
        return []

used = set(ROOTS)  # every distribution the benchmarks end up importing from: roots, installs, kept dependencies
changed = True
while changed:  # add what installed (or kept) packages need and the device lacks
    changed = False
    for dist in sorted(used | set(install)):
        for line in requires_of(dist):
            if Requirement is None:
                name = norm(re.split(r"[ ;<>=!~(\[]", line, 1)[0])
                if "extra ==" in line or name in NEVER or name in install:
                    continue
                if have(name) is None and name in wheels:
                    install[name] = f"required by {dist} ({line}), missing"; changed = True
                continue
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = norm(req.name)
            if name in NEVER:
                continue
            if name in install:  # shadowing `name` must not break a device package we keep using
                ver = wheels[name][1]
                if dist not in install and dist in wheels and not req.specifier.contains(ver, prereleases=True):
                    install[dist] = f"device's {dist} {have(dist)} needs {line}; the wheelhouse's {name} is {ver}"
                    changed = True
                continue
            cur = have(name)
            if cur is not None and req.specifier.contains(cur, prereleases=True):
                if name not in used:
                    used.add(name); changed = True
                continue
            why = f"required by {dist} ({line}), device has {cur or 'none'}"
            if name in wheels:
                install[name] = why; changed = True
            else:
                report.append(f"  !! {why}; no wheel for it")

print("\n".join(report))
if skipped:
    print(f"wheels not for this interpreter (ignored): {', '.join(skipped)}")
print(f"to install ({len(install)}):")
for dist, why in sorted(install.items()):
    print(f"  {wheels[dist][0]}  <- {why}")
with open(plan_file, "w") as f:
    f.write("\n".join(os.path.join(wheelhouse, wheels[d][0]) for d in sorted(install)) + ("\n" if install else ""))
tv = wheels.get("torchvision")
with open(plan_file + ".torchvision", "w") as f:
    if tv:
        pins = [r for r in wheel_requires(tv[0]) if norm(r.split()[0].split("(")[0].split("=")[0]) == "torch"]
        f.write(os.path.join(wheelhouse, tv[0]) + "\t" + (pins[0] if pins else "") + "\n")
EOF

cat > "$WORK/unzip_wheels.py" <<'EOF'
import sys, zipfile  # fallback installer when the device has no pip: a wheel is a zip of site-packages
target = sys.argv[1]
for whl in sys.argv[2:]:
    with zipfile.ZipFile(whl) as z:
        z.extractall(target)
    print("unzipped", whl)
EOF

install_wheels() {  # target, wheel files...
  local target=$1; shift
  if "$PY" -m pip --version >/dev/null 2>&1; then
    timeout 120 "$PY" -m pip install --no-index --no-deps --no-compile --target "$target" "$@"
  else
    echo "(no pip: unzipping the wheels)"
    "$PY" "$WORK/unzip_wheels.py" "$target" "$@"
  fi
}

{
  log "install: wheelhouse $WHEELS, mode $INSTALL_MODE, target $SITE"
  if [ -d "$WHEELS" ]; then
    PLAN=()
    if "$PY" "$WORK/plan.py" "$WHEELS" "$SITE" "$INSTALL_MODE" "$WORK/plan.txt"; then
      mapfile -t PLAN < "$WORK/plan.txt"
    else
      echo "!! planning the install failed"
    fi
    if [ "${#PLAN[@]}" -gt 0 ]; then
      install_wheels "$SITE" "${PLAN[@]}" && log "installed ${#PLAN[@]} wheels" || echo "!! install failed (rc $?)"
    fi
  else
    echo "!! no wheelhouse at $WHEELS (build it with scripts/gpu_wheels.sh and carry it); using what the device has"
  fi
} > "$DIR/install.txt" 2>&1
cat "$DIR/install.txt"
grep -q '!!' "$DIR/install.txt" && note "install: problems, see install.txt"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

# torchvision: open_clip imports torchvision.transforms at import. Use, in order: the device's own;
# the wheelhouse's if built for exactly the device's torch; else run serving_gpu.py through
# tv_standin.py (below): a text-only stand-in that open_clip's imports get but that availability
# probes (transformers' and diffusers' importlib.util.find_spec("torchvision")) do not see, so
# transformers and diffusers behave as on a machine without torchvision. Text encodes never use it.
cat > "$WORK/tv_standin.py" <<'EOF'
"""python tv_standin.py SCRIPT ARGS...: run SCRIPT with a text-only torchvision stand-in (scripts/gpu_figures.sh)."""
import enum
import importlib
import importlib.abc
import importlib.machinery
import os
import runpy
import sys

SUBMODULES = {"transforms", "functional", "v2", "io", "ops", "misc", "models", "datasets", "utils"}


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class Placeholder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"torchvision stand-in (scripts/gpu_figures.sh): {type(self).__name__} is not available")

    def __repr__(self):
        return f"{type(self).__name__}(stand-in)"


def unavailable(name):
    def fn(*args, **kwargs):
        raise RuntimeError(f"torchvision stand-in (scripts/gpu_figures.sh): {name} is not available")
    fn.__name__ = name
    return fn


class Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        modname = module.__name__
        module.__path__ = []  # a package: any submodule imports
        module.InterpolationMode = InterpolationMode
        if modname == "torchvision":
            module.__version__ = "0.0.0+gpu-figures-stand-in"

        def __getattr__(name):
            if name.startswith("__"):
                raise AttributeError(name)
            if name in SUBMODULES:
                value = importlib.import_module(f"{modname}.{name}")
            elif name[:1].isupper():
                value = type(name, (Placeholder,), {"__module__": modname})
            else:
                value = unavailable(f"{modname}.{name}")
            setattr(module, name, value)
            return value

        module.__getattr__ = __getattr__


class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision" and not fullname.startswith("torchvision."):
            return None
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == "_find_and_load":  # an import statement: serve the stand-in
                break
            if frame.f_code.co_name == "find_spec" and frame.f_globals.get("__name__") == "importlib.util":
                return None  # an availability probe: no torchvision here
            frame = frame.f_back
        return importlib.machinery.ModuleSpec(fullname, Loader(), is_package=True)


sys.meta_path.insert(0, Finder())
# Settle transformers' and diffusers' (cached) torchvision checks before anything imports the stand-in.
try:
    from transformers.utils import import_utils as _t

    _t.is_torchvision_available()
except ImportError:
    pass
try:
    from diffusers.utils import import_utils as _d

    _d.is_torchvision_available()
except ImportError:
    pass
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
runpy.run_path(script, run_name="__main__")
EOF

cat > "$WORK/check_imports.py" <<'EOF'
import importlib
for m in ("diffusers", "transformers", "tokenizers", "huggingface_hub", "safetensors", "open_clip", "pydantic", "yaml", "PIL", "torchvision"):
    try:
        mod = importlib.import_module(m)
        print(f"{m} {getattr(mod, '__version__', '?')} from {getattr(mod, '__file__', None) or 'stand-in'}")
    except Exception as e:  # noqa: BLE001
        print(f"{m}: import FAILED: {e!r}")
try:
    from transformers.utils.import_utils import is_torchvision_available
    print("transformers sees torchvision:", is_torchvision_available())
except Exception as e:  # noqa: BLE001
    print("transformers torchvision check FAILED:", repr(e))
EOF

SERVE=("$PY")  # how serving_gpu.py (open_clip) is started
TORCHVISION_MODE=""
{
  if "$PY" -c "import torchvision, torchvision.transforms" 2>/dev/null; then
    TORCHVISION_MODE="device's torchvision $("$PY" -c 'import torchvision; print(torchvision.__version__)')"
  else
    echo "device torchvision: $("$PY" -c 'import torchvision' 2>&1 | tail -1)"
    if [ -s "$WORK/plan.txt.torchvision" ]; then
      IFS=$'\t' read -r TV_WHEEL TV_PIN < "$WORK/plan.txt.torchvision"
      TORCH_BASE=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)
      if [ "${TV_PIN//[^0-9.]/}" = "$TORCH_BASE" ]; then
        mkdir -p "$TVSITE"
        if install_wheels "$TVSITE" "$TV_WHEEL" && PYTHONPATH="$TVSITE:$PYTHONPATH" "$PY" -c "import torchvision, torchvision.transforms"; then
          export PYTHONPATH="$TVSITE:$PYTHONPATH"
          TORCHVISION_MODE="wheelhouse $(basename "$TV_WHEEL")"
        else
          echo "wheelhouse torchvision does not import with this torch; removing it"
          rm -rf "$TVSITE"
        fi
      else
        echo "wheelhouse $(basename "$TV_WHEEL") needs $TV_PIN, device has torch $TORCH_BASE"
      fi
    fi
    if [ -z "$TORCHVISION_MODE" ]; then
      SERVE=("$PY" "$WORK/tv_standin.py")
      TORCHVISION_MODE="text-only stand-in for open_clip (no usable torchvision; CLIP text encodes unaffected)"
    fi
  fi
  echo "torchvision: $TORCHVISION_MODE"
} >> "$DIR/install.txt" 2>&1
case "$TORCHVISION_MODE" in *stand-in*) note "torchvision: $TORCHVISION_MODE";; esac

"${SERVE[@]}" "$WORK/check_imports.py" >> "$DIR/env.txt" 2>&1
echo "PYTHONPATH=$PYTHONPATH" >> "$DIR/env.txt"
echo "torchvision: $TORCHVISION_MODE" >> "$DIR/env.txt"
tail -14 "$DIR/env.txt"
grep -q "FAILED" "$DIR/env.txt" && note "imports: some failed after install, see env.txt"

# ---------------------------------------------------------------- 3. benchmarks
RAN_OK=0
run_step() {  # name, cap seconds, command...
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - $(elapsed) - 10))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -lt 30 ]; then
    STEP_ROWS+=("| $name | skipped | - | - | under 30 s of the ${BUDGET} s budget left |")
    log "$name: skipped (budget)"
    return
  fi
  log "$name: timeout ${cap}s: $*"
  local t0=$SECONDS rc status
  timeout -k 10 "$cap" "$@" > "$DIR/$name.out" 2> "$DIR/$name.err"
  rc=$?
  case $rc in
    0) status=ok; RAN_OK=$((RAN_OK + 1)) ;;
    124|137) status="TIMEOUT" ;;
    *) status="FAILED" ;;
  esac
  STEP_ROWS+=("| $name | $status | $rc | $((SECONDS - t0)) s (cap $cap) | \`$*\` |")
  log "$name: $status (rc $rc, $((SECONDS - t0)) s)"
  [ "$status" = ok ] || tail -5 "$DIR/$name.err"
}

SET=${GPU_FIGURES_SET:-serving}
if [ "$SET" = calibration ]; then  # benchmarks/gpu_calibration.py, one part per step (each prints its own table)
  TINY_FLAG=(); [ "$TINY" = 1 ] && TINY_FLAG=(--tiny)
  run_step calib_t2i 120 "${SERVE[@]}" benchmarks/gpu_calibration.py --device "$DEVICE" --parts t2i "${TINY_FLAG[@]}" --json "$DIR/calib_t2i.json"
  run_step calib_share 150 "${SERVE[@]}" benchmarks/gpu_calibration.py --device "$DEVICE" --parts share "${TINY_FLAG[@]}" --json "$DIR/calib_share.json"
  run_step calib_llm 240 "${SERVE[@]}" benchmarks/gpu_calibration.py --device "$DEVICE" --parts llm "${TINY_FLAG[@]}" --json "$DIR/calib_llm.json"
elif [ "$TINY" = 1 ]; then
  run_step serving_quick 150 "${SERVE[@]}" benchmarks/serving_gpu.py --device "$DEVICE" --tiny --json "$DIR/serving_gpu_quick.json"
  run_step step_cost 150 "$PY" benchmarks/strategy_step_cost.py --preset small --device "$DEVICE" --bf16 --batch 4 --rounds 1 --steps 1 --warmup 0 --strategies ddpm mdss
  run_step serving_full 300 "${SERVE[@]}" benchmarks/serving_gpu.py --device "$DEVICE" --tiny --json "$DIR/serving_gpu_full.json"
else
  run_step serving_quick 150 "${SERVE[@]}" benchmarks/serving_gpu.py --device "$DEVICE" --quick --json "$DIR/serving_gpu_quick.json"
  run_step step_cost 150 "$PY" benchmarks/strategy_step_cost.py --preset cifar10 --device "$DEVICE" --bf16 --rounds 12 --steps 3 --warmup 3
  run_step serving_full 300 "${SERVE[@]}" benchmarks/serving_gpu.py --device "$DEVICE" --json "$DIR/serving_gpu_full.json"
fi

# ---------------------------------------------------------------- 4. summary
{
  echo "# GPU figures, set ${SET} ($(date -u +%Y-%m-%dT%H:%MZ), $( [ "$TINY" = 1 ] && echo "TINY dry run" || echo "full" ), device $DEVICE)"
  echo
  echo "GPU: $(timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)"
  echo "Host: $(sed -n 2p "$DIR/gpu.txt" | sed 's/^host: //')"
  echo
  echo '```'
  cat "$DIR/env.txt"
  echo '```'
  echo
  echo "Installed from $WHEELS into $SITE: $(grep -c '^  .*\.whl' "$DIR/install.txt" || true) wheels (see install.txt)."
  echo
  echo "| step | status | rc | time | command |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${STEP_ROWS[@]}"
  if [ "${#NOTES[@]}" -gt 0 ]; then
    echo
    printf -- '- %s\n' "${NOTES[@]}"
  fi
  for name in serving_quick step_cost serving_full calib_t2i calib_share calib_llm; do
    [ -s "$DIR/$name.out" ] || continue
    echo
    echo "## $name"
    echo
    echo '```'
    cat "$DIR/$name.out"
    echo '```'
  done
  echo
  echo "Total $(elapsed) s of the ${BUDGET} s budget."
} > "$SUMMARY"
cat "$SUMMARY"
rm -rf "$WORK"

if [ "$RAN_OK" -eq 0 ]; then
  log "no benchmark completed"
  exit 1
fi
exit 0
