"""The protocol's images: Fashion-MNIST (idx files, padded to 32×32) or image folders (e.g. CIFAR-10 as PNGs,
resized and centre-cropped to 32×32 by training.data), as (N, C, 32, 32) tensors in [-1, 1]."""
from __future__ import annotations

from typing import Optional

import torch

from benchmarks.exposure_bias.config import ProtocolConfig
from training.metrics.feature_net import load_fashion_split

SOURCE_SIZE = 32


def load_split(cfg: ProtocolConfig, split: str, limit: Optional[int] = None) -> torch.Tensor:
    """``split`` is "train" or "test"; the first ``limit`` images (sorted file order for folders)."""
    if cfg.image_folders is None:
        images, _ = load_fashion_split(cfg.data_root, split, limit)
        return images
    from training.data import ImageFolder

    folders = cfg.image_folders
    ds = ImageFolder(folders.train if split == "train" else folders.test, SOURCE_SIZE, folders.channels, limit)
    return torch.stack([ds[i]["pixels"] for i in range(len(ds))])  # each C×32×32


def train_limit(cfg: ProtocolConfig) -> Optional[int]:
    return cfg.image_folders.limit if cfg.image_folders is not None else cfg.train_limit
