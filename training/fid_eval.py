"""FID during training (``TrainConfig.fid``): EMA samples against the run's own first training images.

Built on rank 0 when the first scored checkpoint comes (the feature network and the reference statistics
once per attempt), then one sampling pass of ``num_images`` per scored checkpoint. The score is a
training-progress signal logged beside the losses — the same seed and sampler at every checkpoint, so
scores of one run compare with each other — not a test-set FID (benchmarks/exposure_bias measures that).
"""
from __future__ import annotations

from typing import Optional

import torch

from training.config import FIDEvalConfig, TrainConfig
from training.data import build_dataset

SAMPLE_CHUNK = 250  # samples drawn per sampler call; chunk i uses seed fid.seed + i


def reference_images(cfg: TrainConfig, n: int) -> torch.Tensor:
    """The first ``n`` images of the run's data (fewer when it holds fewer; at least 2), in [-1, 1]."""
    dataset = build_dataset(cfg.data)
    count = min(n, len(dataset))
    if count < 2:
        raise ValueError(f"fid needs at least 2 reference images; the data holds {len(dataset)}")
    return torch.stack([dataset[i]["pixels"] for i in range(count)])


class TrainingFID:
    """Scores the EMA weights of a model at checkpoints."""

    def __init__(self, cfg: TrainConfig):
        self.cfg, self.fid_cfg = cfg, cfg.fid
        self._metric = None

    @property
    def name(self) -> str:
        return self.fid_cfg.metric_name

    def due(self, step: int) -> bool:
        return bool(self.fid_cfg.every) and step % self.fid_cfg.every == 0

    def _built(self):
        if self._metric is None:
            from training.metrics.fid import default_metric

            fid: FIDEvalConfig = self.fid_cfg
            self._metric = default_metric(feature_net_dir=fid.feature_net, inception_weights=fid.inception_weights)
            self._metric.set_reference(reference_images(self.cfg, fid.num_images))
        return self._metric

    def score(self, model, ema, diffusion, shape: tuple[int, ...], device: torch.device,
              autocast=None) -> float:
        """FID of ``num_images`` EMA samples of ``shape`` (C, H, W)."""
        from contextlib import nullcontext

        from training.samplers import sample

        metric = self._built()
        n, parts = self.fid_cfg.num_images, []
        was_training = model.training
        with ema.applied_to(model), (autocast or nullcontext()):
            model.eval()
            for i, start in enumerate(range(0, n, SAMPLE_CHUNK)):  # chunked: memory stays one chunk's
                parts.append(sample(model, diffusion, self.fid_cfg.sampler, (min(SAMPLE_CHUNK, n - start), *shape),
                                    seed=self.fid_cfg.seed + i, device=device).float().cpu())
        model.train(was_training)
        return metric.score(torch.cat(parts))


def build(cfg: TrainConfig) -> Optional[TrainingFID]:
    return TrainingFID(cfg) if cfg.fid.every else None
