"""Resumable units of work: a folder is "done" when its marker holds the expected config fingerprint.

A unit writes its artefacts, then ``mark_done``; ``is_done`` is true only for the same fingerprint,
so a changed config redoes the unit, and a run killed mid-unit redoes just that unit.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

MARKER = "DONE.json"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (pydantic models are dumped first)."""
    def plain(p: Any) -> Any:
        return p.model_dump(mode="json") if hasattr(p, "model_dump") else p

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_done(folder: Path, fp: str) -> bool:
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fp
    except json.JSONDecodeError:
        return False


def fresh(folder: Path, fp: str) -> Path:
    """Prepare ``folder`` for a unit: keep it if a partial run with this fingerprint may resume from it,
    else wipe it (a stale result from another config must never mix in)."""
    folder = Path(folder)
    started = folder / "STARTED.json"
    if folder.exists() and not (started.is_file() and json.loads(started.read_text()).get("fingerprint") == fp):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps({"fingerprint": fp}))
    return folder


def mark_done(folder: Path, fp: str, **info: Any) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"fingerprint": fp, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                    **info}, indent=2))


def read_done(folder: Path) -> dict:
    return json.loads((Path(folder) / MARKER).read_text())
