"""Writes that a crash, kill -9 or power cut cannot leave half-done: atomic replaces and fsynced appends.

Shared by everything that must lose no finished result: the batch job's results log and per-image files
(agents/browser/results.py), the evaluation records (agents/eval/), and the resumable units of the long benchmarks
(benchmarks/exposure_bias/units.py). One implementation, so a fix to one (a symlink refused, a failed write cut
back) holds for all of them.

* :func:`atomic_write_bytes` (``_text``, ``_json``): readers see the old file or the new one, never a mix
  (temporary file in the same folder, fsync, ``os.replace``, fsync of the folder).
* :func:`append_bytes_durably` / :func:`append_line_durably`: whole lines appended and fsynced before returning;
  a crash during one leaves at most a torn last line for the reader to drop, a failed write (disk full) is cut back.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class UnsafePathError(ValueError):
    """A write would go where it must not: through a symlink, or (for derived paths) outside the output folder."""


def fsync_dir(folder: Path) -> None:
    """Make ``folder``'s entries (a file created or renamed in it) durable; a no-op where the platform can't."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_no_follow(path: Path, flags: int) -> int:
    """``os.open`` that refuses a symlink at ``path`` (``O_NOFOLLOW``): it could point anywhere."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise UnsafePathError(f"{path}: is a symlink; refusing to write through it") from None
        raise exc


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (one call may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a mix."""
    target = Path(path)
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        fsync_dir(target.parent.parent)  # the new folder's own entry
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def json_line(record: dict) -> bytes:
    """One JSON-lines record: compact JSON (UTF-8, not ASCII-escaped) and a newline."""
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def append_line_durably(path: str | os.PathLike, record: dict) -> int:
    """Append ``record`` as one JSON line and fsync it: a crash after return never loses it.

    A crash during it leaves at most a truncated last line (readers skip or cut it). A write that fails without
    a crash (disk full, an I/O error) is undone by truncating back, so a later append cannot glue itself onto the
    fragment; and a file not ending in a newline gets one first. A symlink at ``path`` is refused.
    Returns the offset the line starts at.
    """
    return append_bytes_durably(path, json_line(record))


def append_bytes_durably(path: str | os.PathLike, line: bytes) -> int:
    """Append ``line`` (whole lines, ending in a newline) durably, as :func:`append_line_durably` does;
    returns the offset it starts at (past the newline added to a file that lacked one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    fd = open_no_follow(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        start = size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line, start = b"\n" + line, size + 1
        try:
            write_all(fd, line)
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    if not existed:
        fsync_dir(path.parent)
    return start


def cut_file_durably(path: str | os.PathLike, size: int) -> None:
    """Truncate ``path`` to ``size`` bytes and make the cut durable."""
    fd = open_no_follow(Path(path), os.O_RDWR)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(folder: str | os.PathLike, root: str | os.PathLike) -> None:
    """``mkdir -p folder`` (inside ``root``), fsyncing the parent of every folder it creates,
    so a crash after a file inside was made durable cannot lose the folder's entry."""
    folder, root = Path(folder), Path(root)
    missing = []
    for p in (folder, *folder.parents):
        if p.exists() or p == root:
            break
        missing.append(p)
    folder.mkdir(parents=True, exist_ok=True)
    for p in reversed(missing):
        fsync_dir(p.parent)
