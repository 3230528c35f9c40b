"""The thesis' fidelity metrics (§4.3.1) as pure functions on embeddings, all ×100.

- CLIP-T (prompt fidelity): cosine between the CLIP text embedding of the reverse prompt
  and the CLIP image embedding of the reference image.
- CLIP-I, DINO, ViT (image fidelity): cosine between the embeddings of the recreated
  and the reference image under CLIP's image encoder, DINO ViT-S/16 and ViT-L/16.

Image metrics are computed once per generation seed; the table reports, per method,
the mean over images for each seed, then the mean ± standard deviation of those
per-seed means over the seeds (Table 4.2's "running each experiment three times with
different random seeds"). The standard deviation is the population one (ddof=0),
numpy's default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

CLIP_T = "clip_t"
CLIP_I = "clip_i"
DINO = "dino"
VIT = "vit"
IMAGE_METRICS: tuple[str, ...] = (CLIP_I, DINO, VIT)
ALL_METRICS: tuple[str, ...] = (CLIP_T, *IMAGE_METRICS)
#: Column headers as the thesis writes them.
METRIC_LABELS = {CLIP_T: "CLIP-T", CLIP_I: "CLIP-I", DINO: "DINO", VIT: "ViT"}


def _as_matrix(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{what} must be a vector or an (N, D) matrix of embeddings, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def cosine_x100(a, b) -> np.ndarray:
    """100 × cosine similarity of matching rows of ``a`` and ``b`` (a single row broadcasts).

    Vectors need not be normalised. A zero vector has no direction: that is an error,
    not a score of 0.
    """
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"row counts differ: {a.shape[0]} vs {b.shape[0]} (one side may have a single row)")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if np.any(na == 0) or np.any(nb == 0):
        raise ValueError("cannot take the cosine of a zero embedding")
    return 100.0 * np.sum(a * b, axis=1) / (na * nb)


def clip_t(prompt_text_embedding, reference_image_embedding) -> float:
    """CLIP-T: prompt text embedding vs reference image embedding (CLIP), ×100."""
    return float(cosine_x100(prompt_text_embedding, reference_image_embedding)[0])


def image_fidelity(recreated_embeddings, reference_embedding) -> np.ndarray:
    """CLIP-I / DINO / ViT of each recreated image against the reference, ×100 (one value per row)."""
    return cosine_x100(recreated_embeddings, reference_embedding)


@dataclass(frozen=True)
class MeanStd:
    """A table cell: mean ± std over seeds, and how many seeds (and images) went in."""

    mean: float
    std: float
    n_seeds: int
    n_images: int

    def format(self, digits: int = 2, with_std: bool = True) -> str:
        if math.isnan(self.mean):
            return "–"
        if not with_std:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f}±{self.std:.{digits}f}"


def mean_std_over_seeds(per_seed_values: Mapping[int, Sequence[float]]) -> MeanStd:
    """Mean over images within each seed, then mean and std (ddof=0) of those means over seeds.

    ``per_seed_values`` maps a seed to the metric values of every image at that seed.
    Seeds with no values are an error: a missing seed would silently shrink the std.
    """
    if not per_seed_values:
        return MeanStd(float("nan"), float("nan"), 0, 0)
    means, counts = [], set()
    for seed, values in per_seed_values.items():
        vals = np.asarray(list(values), dtype=np.float64)
        if vals.size == 0:
            raise ValueError(f"seed {seed} has no values")
        means.append(float(vals.mean()))
        counts.add(vals.size)
    if len(counts) != 1:
        raise ValueError(f"seeds cover different numbers of images ({sorted(counts)}); compare like with like")
    arr = np.asarray(means)
    return MeanStd(float(arr.mean()), float(arr.std()), len(means), counts.pop())


def mean_over(values: Iterable[float]) -> MeanStd:
    """Mean of a seed-independent metric (CLIP-T) over images, as a cell without spread."""
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.size == 0:
        return MeanStd(float("nan"), float("nan"), 0, 0)
    return MeanStd(float(vals.mean()), 0.0, 1, int(vals.size))
