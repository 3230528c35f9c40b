"""One prompt for a set of images (``--group-by folder`` / ``job.group_by: folder``).

Each immediate subfolder of ``--dir`` is one set: its images (searched recursively, distinct by content)
are the members, and the set is one optimisation — one work item, one thread, one record (``kind: "set"``)
and one output folder ``OUT/sets/<name>-<id>/``. Images directly in ``--dir`` belong to no set: they are
listed in a warning and not run.

* **Id**: the first 16 hex digits of sha256 over the sorted member ids, so the same images in the same
  folder resume the same thread, and adding or removing an image makes a new set.
* **What the models see**: each member's reference is stored as ``member_<id>.png`` (longer side at most
  ``job.reference_max_side``); the captioner and the VLM see ``reference.png``, a 2×2 grid of the first
  :data:`GRID_MEMBERS` members (sorted by path), each letterboxed into a cell as large as the largest of them
  (the grid's side at most ``job.reference_max_side``).
* **Scores** (agents.nodes.clip_i_scores / clip_t_scores): CLIP-I of a generated image is the mean of its
  CLIP image-image similarity to every member; CLIP-T of a text, and Algorithm 8's fragment scores, the mean
  of its CLIP text-image similarity to every member, which equals |m|·cos(text, m̂) for m the members' mean
  unit embedding — the selection decides as against the mean embedding. Every member counts, not only the
  grid's four.
* A member that cannot be used (unreadable, too large, a refused symlink) is left out and named in the
  record's ``member_errors``; a set with no usable member is an error record.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from agents.batch.errors import SetupError
from agents.batch.plan import ImageSource, WorkItem, group_found
from agents.image_id import ID_HEX_DIGITS
from agents.images import FoundImage, discover_images, display_name, load_rgb, save_png
from agents.browser.results import REFERENCE_FILE, atomic_write_bytes, contained_path, image_dir_name

log = logging.getLogger(__name__)

SETS_SUBDIR = "sets"
GRID_MEMBERS = 4  # members shown to the captioner and the VLM (a 2×2 grid)
MEMBER_FILE = "member_{}.png"  # by the member's content id


def plan_job(source: ImageSource, out_dir: Path, max_file_bytes: Optional[int], group_by: str) -> list[WorkItem]:
    """The job's work items: one per distinct image (``group_by`` "image"), or one per subfolder (a set)."""
    if group_by != "folder":
        return source.plan(out_dir, max_file_bytes)
    if source.folder is None:
        raise SetupError("--group-by folder needs --dir (each subfolder is one set), not --image")
    return plan_sets(source.folder.resolve(), Path(out_dir).resolve(), max_file_bytes)


def set_id(member_ids: list[str]) -> str:
    return hashlib.sha256(("set\n" + "\n".join(sorted(member_ids))).encode()).hexdigest()[:ID_HEX_DIGITS]


def plan_sets(image_dir: Path, out_dir: Path, max_file_bytes: Optional[int] = None) -> list[WorkItem]:
    """One work item per subfolder of ``image_dir`` holding images (see the module docstring)."""
    image_dir = Path(image_dir).resolve()
    found: dict[str, list[FoundImage]] = {}
    loose: list[str] = []
    for image in discover_images(image_dir, exclude=out_dir):
        top = image.rel.split("/", 1)
        if len(top) == 1:
            loose.append(image.rel)
        else:
            found.setdefault(top[0], []).append(image)
    # distinct by content within each set (the same picture in two sets belongs to both)
    groups = {name: group_found(images, out_dir, max_file_bytes) for name, images in found.items()}
    if loose:
        log.warning("--group-by folder: %d image(s) directly in %s belong to no set and are not run: %s",
                    len(loose), image_dir, ", ".join(loose[:5]) + (" …" if len(loose) > 5 else ""))
    items = []
    for name, members in sorted(groups.items()):
        usable = [m for m in members if not m.read_error]
        errors = [m.read_error for m in members if m.read_error]
        sid = set_id([m.image_id for m in usable] or [m.image_id for m in members])
        folder = contained_path(out_dir, SETS_SUBDIR, image_dir_name(name, sid))
        source = FoundImage(path=image_dir / name, rel=display_name(name))
        items.append(WorkItem(image_id=sid, source=source, folder=folder, members=usable, member_errors=errors, kind="set",
                              read_error=None if usable else f"{name}: no usable image in the set ({'; '.join(errors)})"))
    if not items and not loose:
        return []
    if not items:
        raise SetupError(f"--group-by folder: {image_dir} has no subfolder with images (its {len(loose)} image(s) "
                         "lie directly in it); put each set's images in a subfolder")
    return items


def _letterbox(pixels: np.ndarray, side: int) -> np.ndarray:
    """``pixels`` shrunk (never enlarged) to fit a ``side``×``side`` cell, centred on black."""
    from PIL import Image

    h, w = pixels.shape[:2]
    scale = min(side / h, side / w, 1.0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS)) if scale < 1 else pixels
    cell = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    cell[top:top + small.shape[0], left:left + small.shape[1]] = small
    return cell


def grid(images: list[np.ndarray], side: int) -> np.ndarray:
    """A 2×2 grid (``side``×``side`` pixels) of the first four images; empty cells stay black."""
    cell = side // 2
    out = np.zeros((2 * cell, 2 * cell, 3), dtype=np.uint8)
    for i, pixels in enumerate(images[:GRID_MEMBERS]):
        r, c = divmod(i, 2)
        out[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = _letterbox(pixels, cell)
    return out


def set_grid(shown: list[np.ndarray], max_side: int) -> np.ndarray:
    """The grid the captioner and the VLM see: cells as large as the largest member shown (never enlarged),
    the grid's side at most ``max_side`` (job.reference_max_side)."""
    return grid(shown, min(max_side, 2 * max(max(image.shape[:2]) for image in shown)))


@dataclass
class PreparedSet:
    reference: Path  # the grid the captioner and the VLM see
    members: list[tuple[str, Path]]  # (member image id, its stored reference) for the CLIP scores


def prepare_set(item: WorkItem, max_pixels: int, max_side: int) -> PreparedSet:
    """Store each member's reference and the grid (kept when an earlier run wrote them: atomic, complete)."""
    from actors.chat.messages import shrink_to

    from agents.images import ImageLoadError

    item.folder.mkdir(parents=True, exist_ok=True)
    members, shown, usable = [], [], []
    for member in item.members:
        target = item.folder / MEMBER_FILE.format(member.image_id)
        try:
            if not target.is_file():
                atomic_write_bytes(target, save_png(shrink_to(load_rgb(member.source.path, max_pixels), max_side)))
        except ImageLoadError as exc:  # one bad member is left out, named in the record; the set goes on
            item.member_errors.append(f"{member.source.rel}: {exc.cause}")
            continue
        usable.append(member)
        members.append((member.image_id, target))
        if len(shown) < GRID_MEMBERS:
            shown.append(load_rgb(target, max_pixels))
    if not members:
        raise ImageLoadError(item.source.path, f"no usable image in the set ({'; '.join(item.member_errors)})")
    item.members = usable
    reference = item.folder / REFERENCE_FILE
    if not reference.is_file():
        atomic_write_bytes(reference, save_png(set_grid(shown, max_side)))
    return PreparedSet(reference=reference, members=members)
