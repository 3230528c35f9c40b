"""A small Fashion-MNIST classifier whose penultimate layer is the feature space of an offline FID.

Inception-v3's weights cannot be downloaded here, and Inception features of 28×28 grey garments say
little anyway; FID on the features of a classifier trained on the data itself is the usual
substitute (e.g. the "FID with a LeNet/classifier" of MNIST-scale diffusion papers). The network:

    input 1×32×32 in [-1, 1]  (Fashion-MNIST padded to 32×32, exactly what the diffusion models produce)
    [conv3×3 → GroupNorm(8) → SiLU] ×2 at 32 ch, avg-pool 2      → 32×16×16
    [conv3×3 → GroupNorm(8) → SiLU] ×2 at 64 ch, avg-pool 2      → 64×8×8
    [conv3×3 → GroupNorm(8) → SiLU] ×2 at 128 ch, global mean    → 128     ← FID features
    linear 128 → 10 classes

GroupNorm (not BatchNorm) so the features of an image do not depend on the batch it is in.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn

from core.config import StrictModel

FEATURE_DIM = 128
WEIGHTS_FILE, INFO_FILE = "feature_net.pt", "feature_net.json"


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]


class FashionFeatureNet(nn.Module):
    """``features(x)`` → (B, 128); ``forward(x)`` → class logits (B, 10). Input (B, 1, 32, 32) in [-1, 1]."""

    num_features = FEATURE_DIM  # read by torchmetrics' FrechetInceptionDistance

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(*_block(1, 32), nn.AvgPool2d(2), *_block(32, 64), nn.AvgPool2d(2),
                                  *_block(64, FEATURE_DIM))
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"FashionFeatureNet expects (B, 1, H, W) images in [-1, 1], got shape {tuple(x.shape)}")
        return self.body(x.float()).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureExtractor(nn.Module):
    """The feature map as torchmetrics wants it: ``module(images) -> (B, D)`` and a ``num_features``."""

    def __init__(self, net: FashionFeatureNet):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.num_features = FEATURE_DIM

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class FeatureNetTrainConfig(StrictModel):
    """How the feature network is trained (AdamW, cosine-free constant lr: it converges in a few epochs)."""

    epochs: float = Field(3.0, gt=0, description="Passes over the training images (fractions allowed).")
    batch_size: int = Field(128, ge=1, description="Images per step.")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate.")
    train_limit: Optional[int] = Field(None, ge=1, description="Use only the first N training images (tests).")
    test_limit: Optional[int] = Field(None, ge=1, description="Score on only the first N test images (tests).")
    seed: int = Field(0, description="Seeds initialisation and batch order.")


def _padded(images_uint8: np.ndarray) -> torch.Tensor:
    from training.data import to_unit_range

    pad = (32 - images_uint8.shape[1]) // 2
    arr = np.pad(images_uint8, ((0, 0), (pad, pad), (pad, pad)))
    return to_unit_range(arr.transpose(1, 2, 0)).unsqueeze(1)  # (N, 1, 32, 32) in [-1, 1]


def load_fashion_split(root: str | Path, split: str, limit: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, 32, 32) in [-1, 1], labels (N,)) of a Fashion-MNIST split."""
    from training.data import FashionMNIST

    ds = FashionMNIST(root, split, limit)
    return _padded(ds.images), torch.from_numpy(ds.labels.astype(np.int64))


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((net(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / len(images)


def train_feature_net(cfg: FeatureNetTrainConfig, root: str | Path, out_dir: str | Path) -> dict:
    """Train on the train split, score on the test split, save weights + an info JSON; return the info."""
    torch.manual_seed(cfg.seed)
    x_train, y_train = load_fashion_split(root, "train", cfg.train_limit)
    x_test, y_test = load_fashion_split(root, "test", cfg.test_limit)
    net = FashionFeatureNet()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = max(1, int(round(cfg.epochs * len(x_train) / cfg.batch_size)))
    gen = torch.Generator().manual_seed(cfg.seed)
    order, pos, started = torch.randperm(len(x_train), generator=gen), 0, time.perf_counter()
    net.train()
    for _ in range(steps):
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(x_train), generator=gen), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    info = {
        "architecture": "FashionFeatureNet: 3 stages of 2×(conv3×3-GroupNorm-SiLU) at 32/64/128 channels, "
                        "avg-pool between stages, global mean → 128-d features → linear 10",
        "parameters": sum(p.numel() for p in net.parameters()),
        "feature_dim": FEATURE_DIM,
        "train_images": len(x_train), "test_images": len(x_test), "steps": steps,
        "train_seconds": round(time.perf_counter() - started, 1),
        "test_accuracy": accuracy(net, x_test, y_test),
        "config": cfg.model_dump(),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / WEIGHTS_FILE)
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


def load_feature_net(folder: str | Path) -> FashionFeatureNet:
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained feature network (train it with train_feature_net or the "
                                "benchmark's feature_net stage)")
    net = FashionFeatureNet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()
