"""Which file of a run or batch folder the page may serve, decided on the path as it resolves.

A request names a path inside a folder; what is served is the file that path resolves to, symlinks
followed. So every check is made on the resolved path relative to the resolved folder: it must stay
inside, no component of it may be hidden (the job's ``.batch.lock``, temporary files, a ``.hd/``
folder), and its own suffix — not the requested name's — must be one the page uses (a link
``db.png → checkpoints.sqlite`` is refused). A path that cannot name a file (a NUL byte, an
over-long name) is simply not there.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from agents.browser.results import UnsafePathError, contained_path

#: Served with every HTML file from a run or batch folder. ``sandbox`` gives the page an opaque origin:
#: whatever HTML lies in such a folder runs its scripts (the results browser needs its own) but cannot
#: read this server's API or post to it with the page's header; nothing outside the server loads.
FILE_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'self'; sandbox allow-scripts allow-popups allow-downloads")


def served_file(root: Path, rel: str, suffixes: frozenset[str]) -> Optional[Path]:
    """The file under ``root`` that ``rel`` ('/'-separated) resolves to, or None when it may not be served."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any("\x00" in p or len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        return None
    try:
        target = contained_path(root, *parts)
    except (UnsafePathError, OSError, RuntimeError, ValueError):  # outside the folder, a symlink loop, unencodable
        return None
    inside = target.relative_to(Path(root).resolve()).parts
    if not inside or any(part.startswith(".") for part in inside) or target.suffix.lower() not in suffixes:
        return None
    return target if target.is_file() and os.access(target, os.R_OK) else None
