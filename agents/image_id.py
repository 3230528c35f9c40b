"""Stable image ids: a hash of the file's bytes, so a renamed or moved image keeps its id
(and its checkpoint thread), and two different images never share one by path."""
from __future__ import annotations

import hashlib
import os

#: Hex digits kept (64 bits: collisions are negligible for any realistic image folder).
ID_HEX_DIGITS = 16


def content_id(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes, first :data:`ID_HEX_DIGITS` hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:ID_HEX_DIGITS]
