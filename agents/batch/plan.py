"""Turn an image folder into work items: one per distinct image (by content), each with its output folder.

Also the checks on the two folders themselves: the output folder may lie inside the
image folder (it is then skipped when scanning), but it may not be the image folder or
contain it — a rerun would then find the job's own outputs (``reference.png``,
iteration images) and treat them as new images.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from agents.batch.errors import SetupError
from agents.images import FoundImage, discover_images
from agents.results import image_output_dir


@dataclass
class WorkItem:
    """One distinct image (by content) and where its outputs go."""

    image_id: str
    source: FoundImage
    folder: Path  # per-image output folder (absolute, inside out_dir/images)
    duplicates: list[str] = field(default_factory=list)  # other relative paths with the same content
    read_error: Optional[str] = None  # the file cannot be used at all (unreadable, too large, refused symlink)


def check_folders(image_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder that is the image folder or one of its parents (resolved paths)."""
    image_dir, out_dir = image_dir.resolve(), out_dir.resolve()
    if out_dir == image_dir:
        raise SetupError(f"--out {out_dir} is the image folder itself: reruns would read the job's own outputs "
                         "as new images; choose another output folder")
    if out_dir in image_dir.parents:
        raise SetupError(f"--out {out_dir} contains the image folder {image_dir}: reruns could read the job's own "
                         "outputs as new images; choose an output folder outside it (a subfolder of it is fine)")


def plan_work(image_dir: Path, out_dir: Path, max_file_bytes: Optional[int] = None) -> list[WorkItem]:
    """Discover images under ``image_dir`` (never inside ``out_dir``) and group them by content id.

    A file that cannot be used gets a path-derived id and a ``read_error`` (it becomes
    an error record): unreadable, larger than ``max_file_bytes`` (checked before its
    bytes are hashed), or a symlink leaving the image folder.
    """
    from agents.image_id import content_id

    items: dict[str, WorkItem] = {}
    for found in discover_images(image_dir, exclude=out_dir):
        read_error, image_id = found.refused, None
        if read_error is None:
            try:
                size = os.stat(found.path).st_size
                if max_file_bytes is not None and size > max_file_bytes:
                    read_error = f"{found.rel}: refused: file is {size} bytes, the limit (job.max_file_bytes) is {max_file_bytes}"
                else:
                    image_id = content_id(found.path)
            except OSError as exc:
                read_error = f"{found.rel}: cannot read file: {exc.strerror or exc}"
        if image_id is None:
            image_id = "unusable-" + hashlib.sha256(found.rel.encode("utf-8")).hexdigest()[:16]
        if image_id in items:
            items[image_id].duplicates.append(found.rel)
            continue
        items[image_id] = WorkItem(image_id=image_id, source=found, folder=image_output_dir(out_dir, found.rel, image_id),
                                   read_error=read_error)
    return list(items.values())
