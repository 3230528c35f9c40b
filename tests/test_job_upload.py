"""What `ray job submit --runtime-env deploy/job_runtime_env.yaml` uploads (issue #27 item 4): the code and
the profiles, never a venv, outputs, images, model files, caches, tests or docs.

The package is built the way `ray job submit` builds it (Ray's own working_dir code with the file's
``excludes`` and Ray's default excludes), from a copy of this checkout's tracked files plus the things a
user's checkout also holds: a venv, outputs, an image folder, a checkpoint database, weights, caches. Both
with Ray's reading of .gitignore and without it (RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1), since the file's
excludes must hold on their own. tests/agents/test_batch_ray.py submits a real job with the file.
"""
from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RUNTIME_ENV = REPO / "deploy" / "job_runtime_env.yaml"

#: What a user's checkout holds besides the tracked files, none of which may be uploaded.
NEVER = [".venv/lib/python3.11/site-packages/torch/big.so", "venv/bin/python", "outputs/demo/results.jsonl",
         "runs/exposure_bias/ckpt.pt", "images/cat.png", "data/images/dog.jpg", "checkpoints.sqlite",
         "out/checkpoints.sqlite-wal", "model.safetensors", "weights/tiny.gguf", ".cache/huggingface/x",
         "agents/__pycache__/api.cpython-311.pyc", ".git/objects/ab/cdef", "expectdiff.egg-info/PKG-INFO",
         ".hypothesis/examples/x", "tests/artifacts/serve_page/01.png"]


def _package(checkout: Path, tmp: Path, include_gitignore: bool) -> list[str]:
    from ray._private.runtime_env.packaging import create_package
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text())
    runtime_env["working_dir"] = str(checkout / runtime_env["working_dir"])
    target = tmp / f"pkg_{include_gitignore}.zip"

    def build(working_dir, excludes, is_file=False):  # as the job SDK's upload does, into a file here
        assert not is_file
        create_package(working_dir, target, include_gitignore=include_gitignore, excludes=excludes)

    upload_working_dir_if_needed(runtime_env, include_gitignore=include_gitignore, upload_fn=build)
    with zipfile.ZipFile(target) as zf:
        return sorted(n for n in zf.namelist() if not n.endswith("/"))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checkout")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, tracked):
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / rel, root / rel)
    for rel in ("deploy/job_runtime_env.yaml", ".gitignore"):  # also before they are committed
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, root / rel)
    for rel in NEVER:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * 64)
    return root


@pytest.mark.parametrize("include_gitignore", [True, False], ids=["with .gitignore", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1"])
def test_the_job_package_holds_the_code_and_profiles_only(checkout, tmp_path, include_gitignore):
    files = _package(checkout, tmp_path, include_gitignore)
    leaked = sorted(set(files) & set(NEVER))
    assert not leaked, leaked
    tops = {f.split("/")[0] for f in files}
    assert not tops & {".git", ".venv", "venv", "outputs", "runs", "images", "examples", "tests", "docs", ".cache"}, tops
    assert not [f for f in files if f.endswith((".sqlite", ".sqlite-wal", ".safetensors", ".pt", ".gguf", ".pyc"))]
    # what the job needs: the packages, the profiles, the project file
    for needed in ("agents/batch_reverse.py", "actors/t2i.py", "core/cli.py", "training/train.py", "benchmarks/scale/__main__.py",
                   "configs/gpu_cluster.yaml", "configs/offline.yaml", "agents/templates/report_index.html",
                   "pyproject.toml", "cluster.yaml"):
        assert needed in files, needed
    size = sum((checkout / f).stat().st_size for f in files)
    print(f"\nupload package ({'with' if include_gitignore else 'without'} .gitignore): {len(files)} files, "
          f"{size / 1e6:.2f} MB uncompressed; top level: {sorted(tops)}")
    assert size < 8e6  # the code is a few MB; a leaked folder of images or weights is not
