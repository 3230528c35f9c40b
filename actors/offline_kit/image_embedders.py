"""Tiny random-weight stand-ins for the DINO (ViT-S/16) and ViT (ViT-L/16) metric backbones.

Each is a ``ViTModel`` plus a ``ViTImageProcessor`` saved with ``save_pretrained``: the
same on-disk format as ``facebook/dino-vits16`` and ``google/vit-large-patch16-224``,
so ``actors.image_embedder`` loads them through the same AutoModel/AutoImageProcessor
path. 32×32 input, patch 8, 2 layers: milliseconds per batch on a CPU. Their
embeddings are meaningless (random weights).
"""
from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 32
#: stand-in name -> (hidden size, heads): the real ones are 384/6 (ViT-S) and 1024/16 (ViT-L).
STAND_INS = {"dino": (48, 3), "vit": (64, 4)}


def _build_one(out_dir: Path, hidden: int, heads: int, seed: int) -> None:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    cfg = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=8, num_channels=3, hidden_size=hidden, num_hidden_layers=2,
        num_attention_heads=heads, intermediate_size=2 * hidden,
    )
    torch.manual_seed(seed)
    model = ViTModel(cfg, add_pooling_layer=False).to(torch.float32).eval()
    model.save_pretrained(out_dir)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(out_dir)


def build(out_dir: Path, seed: int = 0) -> dict:
    """Write ``out_dir/dino`` and ``out_dir/vit``; return ``{"dino": section, "vit": section}``
    (ImageEmbedderConfig fields, CPU settings)."""
    from actors.image_embedder import ImageEmbedderConfig

    out_dir = Path(out_dir)
    sections = {}
    for offset, (name, (hidden, heads)) in enumerate(STAND_INS.items()):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        _build_one(folder, hidden, heads, seed + offset)
        sections[name] = ImageEmbedderConfig.model_validate({
            "model": str(folder),
            "pooling": "cls",
            "device": "cpu",
            "dtype": "float32",
            "batching": {"max_batch_size": 32, "max_wait_ms": 5.0},
            "resources": {"num_gpus": 0, "num_cpus": 0.25},
        }).model_dump(mode="json")
    return sections
