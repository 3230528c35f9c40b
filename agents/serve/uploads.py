"""An uploaded file checked as the batch job checks a file: size, format allowlist, decompression bombs.

The upload is decoded once here (never from its claimed type) and stored as a clean RGB PNG whose
longer side is at most ``job.reference_max_side``, like the batch job's ``reference.png``.
"""
from __future__ import annotations

import io
import os

import numpy as np

from actors.chat.messages import shrink_to
from agents.config import JobConfig
from agents.images import IMAGE_EXTENSIONS, ImageLoadError, display_name, load_rgb


class UploadRefused(ValueError):
    """The upload cannot be used; the message names the file and the cause. ``status`` is the HTTP status."""

    def __init__(self, name: str, cause: str, status: int = 400):
        self.status = status
        super().__init__(f"{name}: {cause}")


def upload_limit(job: JobConfig, max_upload_bytes: int) -> int:
    return min(job.max_file_bytes, max_upload_bytes)


def check_upload(data: bytes, filename: str, job: JobConfig, max_upload_bytes: int) -> tuple[str, np.ndarray]:
    """(display-safe name, uint8 RGB pixels shrunk to ``job.reference_max_side``), or :class:`UploadRefused`."""
    name = display_name(os.path.basename(filename or "")) or "upload"
    limit = upload_limit(job, max_upload_bytes)
    if len(data) > limit:
        raise UploadRefused(name, f"is {len(data)} bytes, more than the limit of {limit} bytes", status=413)
    if not data:
        raise UploadRefused(name, "is empty")
    ext = os.path.splitext(name)[1].lower()
    if ext and ext not in IMAGE_EXTENSIONS:
        raise UploadRefused(name, f"has the extension {ext!r}; allowed: {', '.join(sorted(IMAGE_EXTENSIONS))}", status=415)
    try:
        pixels = load_rgb(io.BytesIO(data), job.max_image_pixels)
    except ImageLoadError as exc:
        raise UploadRefused(name, exc.cause, status=415 if "not a readable image" in exc.cause else 400) from None
    return name, shrink_to(pixels, job.reference_max_side)
