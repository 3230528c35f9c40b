"""Resumable units of work: a folder is "done" when its marker holds the expected config fingerprint.

A unit writes its artefacts, then ``mark_done``; ``is_done`` is true only for the same fingerprint,
so a changed config redoes the unit, and a run killed mid-unit redoes just that unit — or, for a long unit that
keeps ``PartialRecords`` (the held-out λ search, about 20 minutes of one core, and the evaluation), only what it had
not recorded yet.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from core.durable_files import append_line_durably, atomic_write_text

MARKER = "DONE.json"
STARTED = "STARTED.json"
PARTIAL = "PARTIAL.jsonl"


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
    started = folder / STARTED
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


class PartialRecords:
    """Keyed results of a unit in progress, one JSON line each, written (and fsynced) as soon as each is computed:
    a unit killed part-way resumes from its last record (``fresh`` keeps the folder for the same fingerprint, and
    the carry takes this file to the next machine). Only for results that depend on nothing but their key and the
    unit's config: a resumed unit must equal an uninterrupted one."""

    def __init__(self, folder: Path, name: str = PARTIAL, repair: bool = True):
        self.path = Path(folder) / name
        self.values: dict[str, Any] = {}
        if self.path.is_file():
            self._load(repair)
        #: records made before this process (by a stopped run, here or on another machine): the unit's wall
        #: time then covers only the rest
        self.resumed = len(self.values)

    def _load(self, repair: bool) -> None:
        lines = self.path.read_text().splitlines(keepends=True)
        good = []
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
                key, value = record["key"], record["value"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                if i == len(lines) - 1 and not line.endswith("\n"):
                    break  # the last line torn by a kill mid-write: that one result is redone
                raise ValueError(f"{self.path}: line {i + 1} is not a partial record ({err})") from err
            self.values[key] = value
            good.append(line)
        if repair and len(good) < len(lines):  # drop the torn line, so the next record starts on a line of its own
            atomic_write_text(self.path, "".join(good))

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The recorded value of ``key``, else ``compute()``, recorded before it is returned."""
        if key not in self.values:
            value = compute()
            append_line_durably(self.path, {"key": key, "value": value})
            self.values[key] = value
        return self.values[key]
