"""An uploaded file checked as the batch job checks a file: size, format allowlist, decompression bombs.

The upload is decoded once here (never from its claimed type) and stored as a clean RGB PNG whose
longer side is at most ``job.reference_max_side``, like the batch job's ``reference.png``.
"""
from __future__ import annotations

import io
import os
from typing import Optional

import numpy as np

from actors.chat.messages import shrink_to
from agents.config import JobConfig
from agents.images import IMAGE_EXTENSIONS, ImageLoadError, display_name, image_size, load_rgb


class UploadRefused(ValueError):
    """The upload cannot be used; the message names the file and the cause. ``status`` is the HTTP status."""

    def __init__(self, name: str, cause: str, status: int = 400):
        self.status = status
        super().__init__(f"{name}: {cause}")


def upload_limit(job: JobConfig, max_upload_bytes: int) -> int:
    return min(job.max_file_bytes, max_upload_bytes)


def check_upload(data: bytes, filename: str, job: JobConfig, max_upload_bytes: int,
                 max_pixels: Optional[int] = None) -> tuple[str, np.ndarray]:
    """(display-safe name, uint8 RGB pixels shrunk to ``job.reference_max_side``), or :class:`UploadRefused`.

    ``max_pixels`` (default ``job.max_image_pixels``) is checked from the header before any pixel is decoded:
    a small file can hold a huge image (a 120 KB PNG of 6000×6000 decodes to 108 MB of RGB)."""
    max_pixels = job.max_image_pixels if max_pixels is None else min(max_pixels, job.max_image_pixels)
    name = display_name(os.path.basename(filename or "")) or "upload"
    limit = upload_limit(job, max_upload_bytes)
    if len(data) > limit:
        raise UploadRefused(name, f"is {len(data)} bytes, more than the limit of {limit} bytes", status=413)
    if not data:
        raise UploadRefused(name, "is empty")
    ext = os.path.splitext(name)[1].lower()
    if ext and ext not in IMAGE_EXTENSIONS:
        raise UploadRefused(name, f"has the extension {ext!r}; allowed: {', '.join(sorted(IMAGE_EXTENSIONS))}", status=415)
    size = image_size(io.BytesIO(data))
    if size is not None and size[0] * size[1] > max_pixels:
        raise UploadRefused(name, f"is {size[0]}×{size[1]} = {size[0] * size[1]} pixels, more than the limit of "
                                  f"{max_pixels} pixels (the server's --max-upload-pixels)", status=413)
    try:
        pixels = load_rgb(io.BytesIO(data), max_pixels)
    except ImageLoadError as exc:
        status = 415 if "not a readable image" in exc.cause else 413 if "decompression bomb" in exc.cause else 400
        raise UploadRefused(name, exc.cause, status=status) from None
    return name, shrink_to(pixels, job.reference_max_side)
