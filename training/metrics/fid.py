"""FID through torchmetrics' ``FrechetInceptionDistance``, on a custom feature network or on Inception-v3.

* ``FIDMetric.from_feature_net(folder)`` — the offline metric: the project's Fashion-MNIST feature
  network (:mod:`training.metrics.feature_net`), images (B, 1, 32, 32) in [-1, 1].
* ``FIDMetric.inception(weights_path)`` — standard FID (2048-d pool features of torch-fidelity's
  FID Inception-v3) where its weights file is present; grey images are repeated to 3 channels and
  quantised to uint8 as torch-fidelity expects. Needs the ``torch-fidelity`` package; a missing
  package or file is an error naming it, never a silent fallback to another network.

The real (reference) statistics are computed once and kept (``reset_real_features=False``): each
``score(fake)`` only adds the fake set's features. Scores from different feature networks are
different metrics and must never be compared with each other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn


class _InceptionInput(nn.Module):
    """[-1, 1] images (1 or 3 channels) → uint8 RGB for torch-fidelity's Inception."""

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception
        self.num_features = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.inception(x)


class FIDMetric:
    """FID of generated sets against one fixed reference set."""

    def __init__(self, feature: nn.Module, name: str, batch_size: int = 500):
        from torchmetrics.image.fid import FrechetInceptionDistance

        if not hasattr(feature, "num_features"):
            raise TypeError("the feature module needs an int attribute num_features (its output dimension)")
        self.name, self.batch_size = name, batch_size
        self._fid = FrechetInceptionDistance(feature=feature, reset_real_features=False, normalize=False)
        self._has_reference = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_feature_net(cls, folder: str | Path, batch_size: int = 500) -> "FIDMetric":
        from training.metrics.feature_net import FeatureExtractor, load_feature_net

        return cls(FeatureExtractor(load_feature_net(folder)), name="fid_fashion_featurenet", batch_size=batch_size)

    @classmethod
    def inception(cls, weights_path: str | Path, batch_size: int = 100) -> "FIDMetric":
        """Standard FID. ``weights_path``: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``."""
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no Inception-v3 FID weights file (torch-fidelity's "
                                    "weights-inception-2015-12-05-6726825d.pth); they cannot be downloaded here")
        import importlib.util

        # Asked of the import system, not of torchmetrics' private availability flags (they move between releases).
        if importlib.util.find_spec("torch_fidelity") is None:
            raise ImportError("Inception FID needs the torch-fidelity package: pip install torch-fidelity")
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(path))
        return cls(_InceptionInput(net), name="fid_inception_v3", batch_size=batch_size)

    # ------------------------------------------------------------------ use
    def _add(self, images: torch.Tensor, real: bool) -> None:
        if images.ndim != 4 or len(images) < 2:
            raise ValueError(f"expected at least 2 images shaped (B, C, H, W), got {tuple(images.shape)}")
        for i in range(0, len(images), self.batch_size):
            self._fid.update(images[i:i + self.batch_size], real=real)

    def set_reference(self, images: torch.Tensor) -> "FIDMetric":
        """Use ``images`` (B, C, H, W) in [-1, 1] as the reference set (replacing any earlier one)."""
        self._fid.reset_real_features = True
        self._fid.reset()
        self._fid.reset_real_features = False
        self._add(images, real=True)
        self._has_reference = True
        return self

    def score(self, images: torch.Tensor) -> float:
        """FID between ``images`` (B, C, H, W) in [-1, 1] and the reference set."""
        if not self._has_reference:
            raise RuntimeError("call set_reference(real_images) before score()")
        self._fid.reset()  # clears the fake statistics only (reset_real_features=False)
        self._add(images, real=False)
        return float(self._fid.compute())


def frechet_distance(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), in float64:
    ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr √(Σ_a Σ_b), the trace of the root taken as the sum of the
    square roots of Σ_a Σ_b's eigenvalues (the formula torchmetrics' FID computes, written here with
    public torch calls instead of its private helper)."""
    a, b = feat_a.double(), feat_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))  # D = 1: 0-d from cov
    trace_sqrt = torch.linalg.eigvals(sigma_a @ sigma_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + sigma_a.trace() + sigma_b.trace() - 2 * trace_sqrt)


def default_metric(feature_net_dir: Optional[str | Path] = None, inception_weights: Optional[str | Path] = None
                   ) -> FIDMetric:
    """Inception FID when its weights are given, else the feature-network FID; exactly one source."""
    if (feature_net_dir is None) == (inception_weights is None):
        raise ValueError("give exactly one of feature_net_dir or inception_weights")
    if inception_weights is not None:
        return FIDMetric.inception(inception_weights)
    return FIDMetric.from_feature_net(feature_net_dir)
