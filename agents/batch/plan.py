"""Turn the job's images — a folder (``--dir``) or a few files (``--image``) — into work items:
one per distinct image (by content), each with its output folder.

Also the checks on the folders themselves:

* ``--dir``: the output folder may lie inside the image folder (it is then skipped when
  scanning), but it may not be the image folder or contain it — a rerun would then find
  the job's own outputs (``reference.png``, iteration images) and treat them as new images.
* ``--image``: no given file may lie inside the output folder (it would be one of the job's
  own outputs, which the job writes and cleans up); the output folder may be anywhere else,
  a subfolder of the files' folders included. Nothing is scanned, so nothing else can be
  read as a new image.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Sequence

from agents.batch.errors import SetupError
from agents.images import FoundImage, discover_images, display_name
from agents.browser.results import image_output_dir


@dataclass
class WorkItem:
    """One distinct image (by content) and where its outputs go."""

    image_id: str
    source: FoundImage
    folder: Path  # per-image output folder (absolute, inside out_dir/images)
    duplicates: list[str] = field(default_factory=list)  # other relative paths with the same content
    read_error: Optional[str] = None  # the file cannot be used at all (unreadable, too large, refused symlink)
    duplicate_images: list[FoundImage] = field(default_factory=list)  # the files behind ``duplicates``
    members: list["WorkItem"] = field(default_factory=list)  # a set's images (agents.batch.sets); [] for an image
    member_errors: list[str] = field(default_factory=list)  # a set's members that could not be used, and why
    kind: str = "image"  # "image", or "set" (--group-by folder: source is the subfolder)

    def images(self) -> list[FoundImage]:
        """Every file this item's caption belongs to: the source and its duplicates; for a set, every
        member's files."""
        if self.members:
            return [found for member in self.members for found in member.images()]
        return [self.source, *self.duplicate_images]


def check_folders(image_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder that is the image folder or one of its parents (resolved paths)."""
    image_dir, out_dir = image_dir.resolve(), out_dir.resolve()
    if out_dir == image_dir:
        raise SetupError(f"--out {out_dir} is the image folder itself: reruns would read the job's own outputs "
                         "as new images; choose another output folder")
    if out_dir in image_dir.parents:
        raise SetupError(f"--out {out_dir} contains the image folder {image_dir}: reruns could read the job's own "
                         "outputs as new images; choose an output folder outside it (a subfolder of it is fine)")


def check_files(files: Sequence[Path], out_dir: Path) -> None:
    """Refuse given files that lie inside the output folder (as named or as resolved)."""
    out_dir = out_dir.resolve()
    for path in files:
        for candidate in {Path(os.path.abspath(path)), Path(path).resolve()}:
            if out_dir in candidate.parents:
                raise SetupError(f"--image {display_name(str(path))} lies inside --out {out_dir}: that is the job's own "
                                 "output folder; copy the file elsewhere or choose another output folder")


def plan_work(image_dir: Path, out_dir: Path, max_file_bytes: Optional[int] = None) -> list[WorkItem]:
    """Discover images under ``image_dir`` (never inside ``out_dir``) and group them by content id.

    A file that cannot be used gets a path-derived id and a ``read_error`` (it becomes
    an error record): unreadable, larger than ``max_file_bytes`` (checked before its
    bytes are hashed), or a symlink leaving the image folder.
    """
    return group_found(discover_images(image_dir, exclude=out_dir), out_dir, max_file_bytes)


def plan_files(files: Sequence[str | os.PathLike], out_dir: Path, max_file_bytes: Optional[int] = None) -> list[WorkItem]:
    """Work items for the files given with ``--image``, grouped by content id like :func:`plan_work`.

    A missing path or a folder is a :class:`SetupError` (a typo should stop the job before
    anything starts); the same file named twice counts once. Each file's display name
    (``source`` in its record) is its name, or — when several given files share a name — the
    shortest tail of its path that tells them apart (``a/x.png``, ``b/x.png``). Symlinks are
    followed: the user named the file. A file that cannot be read or is too large becomes an
    error record, as in a folder.
    """
    seen: dict[Path, Path] = {}
    for given in files:
        path = Path(given)
        if not path.exists():
            raise SetupError(f"--image {display_name(str(given))}: no such file")
        if not path.is_file():
            raise SetupError(f"--image {display_name(str(given))}: not a file (use --dir for a folder)")
        seen.setdefault(path.resolve(), Path(os.path.abspath(path)))
    absolute = list(seen.values())
    names = unique_tails(absolute)
    found = [FoundImage(path=p, rel=display_name(names[p])) for p in absolute]
    return group_found(found, out_dir, max_file_bytes)


def unique_tails(paths: Sequence[Path]) -> dict[Path, str]:
    """For each absolute path, its shortest '/'-joined tail of components that no other path ends with."""
    parts = {p: p.parts[1:] if p.is_absolute() else p.parts for p in paths}
    names = {}
    for p, mine in parts.items():
        k = 1
        while k < len(mine) and any(other[-k:] == mine[-k:] for q, other in parts.items() if q != p):
            k += 1
        names[p] = PurePosixPath(*mine[-k:]).as_posix()
    return names


def group_found(found_images: Iterable[FoundImage], out_dir: Path, max_file_bytes: Optional[int]) -> list[WorkItem]:
    """One work item per distinct content among ``found_images`` (later files with the same bytes are its
    duplicates); a file that cannot be used is an item with ``read_error``."""
    from agents.image_id import content_id

    items: dict[str, WorkItem] = {}
    for found in found_images:
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
            items[image_id].duplicate_images.append(found)
            continue
        items[image_id] = WorkItem(image_id=image_id, source=found, folder=image_output_dir(out_dir, found.rel, image_id),
                                   read_error=read_error)
    return list(items.values())


@dataclass(frozen=True)
class ImageSource:
    """Where a job's images come from: one folder (``--dir``) or a list of files (``--image``)."""

    folder: Optional[Path] = None
    files: tuple[Path, ...] = ()

    def __post_init__(self):
        if (self.folder is None) == (not self.files):
            raise ValueError("an ImageSource is a folder or a list of files, exactly one of the two")

    @classmethod
    def of(cls, value: "ImageSource | str | os.PathLike") -> "ImageSource":
        return value if isinstance(value, ImageSource) else cls(folder=Path(value))

    def check(self, out_dir: Path) -> None:
        """The start-up checks: the folder exists and does not overlap ``out_dir`` as forbidden; or the files'."""
        if self.folder is not None:
            if not self.folder.is_dir():
                raise SetupError(f"{self.folder}: no such image folder")
            check_folders(self.folder, out_dir)
        else:
            for path in self.files:
                if not path.is_file():
                    raise SetupError(f"--image {display_name(str(path))}: "
                                     + ("not a file (use --dir for a folder)" if path.exists() else "no such file"))
            check_files(self.files, out_dir)

    def plan(self, out_dir: Path, max_file_bytes: Optional[int] = None) -> list[WorkItem]:
        """One work item per distinct image (sets: agents.batch.sets.plan_job)."""
        out_dir = Path(out_dir).resolve()
        if self.folder is not None:
            return plan_work(self.folder.resolve(), out_dir, max_file_bytes)
        return plan_files(self.files, out_dir, max_file_bytes)

    def caption_key(self, found: FoundImage) -> Optional[str]:
        """The image as training's captions reader finds it (``file`` in captions.jsonl, see
        agents.batch.captions): relative to the folder, or the file's absolute path; None when
        the name cannot be written as text (bytes that are not UTF-8)."""
        if self.folder is not None:
            try:
                key = PurePosixPath(*found.path.relative_to(self.folder.resolve()).parts).as_posix()
            except ValueError:
                return None
        else:
            key = str(found.path)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return key

    def describe(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return f"{len(self.files)} given file(s)"
