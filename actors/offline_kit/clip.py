"""Tiny random-weight open_clip model for the CLIP scorer role.

The architecture is a custom open_clip JSON config written to
``<out>/clip/model_configs/<name>.json`` (registered with ``open_clip.add_model_config``);
the weights are a safetensors checkpoint that ``create_model_and_transforms(name,
pretrained=<file>)`` loads. The text tower has CLIP's real vocabulary and 77-token context,
so open_clip's own tokenizer applies.
"""
from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP_NAME = "expectdiff-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def write_model_config(config_dir: Path, name: str = TINY_CLIP_NAME, config: dict = TINY_CLIP_CONFIG) -> Path:
    """Write an open_clip model JSON config; returns the folder to register."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / f"{name}.json").write_text(json.dumps(config, indent=2))
    return config_dir


def build(out_dir: Path, seed: int = 0) -> dict:
    """Save the tiny CLIP under ``out_dir/clip`` and return the CLIP config section for it."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from actors.config import ClipConfig

    folder = Path(out_dir) / "clip"
    config_dir = write_model_config(folder / "model_configs")
    open_clip.add_model_config(str(config_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    weights = folder / f"{TINY_CLIP_NAME}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    section = {
        "model_name": TINY_CLIP_NAME,
        "pretrained": str(weights),
        "model_config_dir": str(config_dir),
        "device": "cpu",
        "precision": "fp32",
        "text_cache_size": 100_000,
        "image_cache_size": 4096,
        "batching": {"max_batch_size": 64, "max_wait_ms": 10.0},
        "resources": {"num_gpus": 0, "num_cpus": 0.25},
    }
    return ClipConfig.model_validate(section).model_dump(mode="json")
