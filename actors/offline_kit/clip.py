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


# The shape of open_clip's ViT-L-14 with OpenAI's weights (the profiles' scorer): 224 px input, 14 px
# patches (256 tokens an image), QuickGELU (what open_clip uses for the `openai` tag), CLIP's vocabulary
# and 77-token context; toy widths and depths.
VIT_L_14_TWIN_NAME = "expectdiff-twin-ViT-L-14"
VIT_L_14_TWIN_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
SHAPES = {"tiny": ("clip", TINY_CLIP_NAME, TINY_CLIP_CONFIG),
          "vit_l_14": ("clip_vit_l_14", VIT_L_14_TWIN_NAME, VIT_L_14_TWIN_CONFIG)}


def build(out_dir: Path, seed: int = 0, shape: str = "tiny") -> dict:
    """Save a random-weight open_clip model under ``out_dir/clip`` (``shape`` "tiny") or ``out_dir/clip_vit_l_14``
    (``shape`` "vit_l_14": ViT-L/14's patch, input size and activation at toy width) and return its CLIP
    config section."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from actors.config import ClipConfig

    if shape not in SHAPES:
        raise ValueError(f"unknown CLIP twin shape {shape!r}; expected one of {sorted(SHAPES)}")
    subfolder, name, config = SHAPES[shape]
    folder = Path(out_dir) / subfolder
    config_dir = write_model_config(folder / "model_configs", name, config)
    open_clip.add_model_config(str(config_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    section = {
        "model_name": name,
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
