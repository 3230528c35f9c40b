"""Validate images crossing a role boundary (uint8 H×W×3 RGB numpy arrays, see actors/roles.py)."""
from __future__ import annotations

import numpy as np


def check_rgb_uint8(image, what: str = "image") -> np.ndarray:
    """Return ``image`` if it is a uint8 (H, W, 3) array, else raise naming ``what`` and the problem."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy uint8 (H, W, 3) array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{what} must be a uint8 (H, W, 3) RGB array, got dtype {image.dtype} shape {image.shape}")
    return image


def to_pil(image, what: str = "image"):
    from PIL import Image

    return Image.fromarray(check_rgb_uint8(image, what))
