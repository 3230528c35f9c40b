"""Build the offline model kit and write the config profiles that point every role at it.

    python -m agents.offline_kit [--out ~/.cache/expectdiff/offline] [--profile FILE]
                                 [--llm smollm2|tiny] [--llm-backend vllm|transformers]
                                 [--vlm-backend vllm|transformers] [--force]

The models are built by ``actors.offline_kit.build`` (see there); this layer validates
and writes the profiles: ``<out>/offline.yaml`` (unless ``--profile`` says otherwise), a
normal ArpoConfig file (CPU devices, float32, fractional CPUs so all roles fit a 2-core
local Ray), and ``offline_eval.yaml`` beside it for ``agents.evaluate``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from actors.offline_kit.build import DEFAULT_OUT, build_kit

PROFILE_HEADER = ("# Offline profile written by `python -m agents.offline_kit`: every role points at the\n"
                  "# offline model kit. Random-weight models (LLM: the real SmolLM2-135M-Instruct):\n"
                  "# outputs are meaningful for plumbing and speed only.\n")


OFFLINE_MAX_FLAVORS = 300


def split_profiles(kit: dict) -> tuple[dict, dict]:
    """(batch profile for ArpoConfig, evaluation profile for EvalConfig = the batch one plus DINO/ViT)."""
    batch = {k: v for k, v in kit.items() if k != "embedders"}
    # The CLIP-Interrogator baseline scores the first 300 of flavors.txt's 100,970 terms here (one CLIP text
    # encoding each): enough for plumbing and speed, minutes instead of hours on a CPU (docs/evaluation.md).
    evaluation = dict(batch, **kit["embedders"], evaluation={"interrogator": {"max_flavors": OFFLINE_MAX_FLAVORS}})
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
    p = argparse.ArgumentParser(prog="python -m agents.offline_kit", description=__doc__,
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
