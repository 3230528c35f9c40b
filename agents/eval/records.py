"""The evaluation's resumable record log, ``<out>/eval_records.jsonl``.

Two kinds of line, both appended and fsynced as soon as they are known:

- ``{"kind": "prompt", "image_id", "method", "fp", "prompt", "clip_t", "extra"}``: a
  method's prompt for an image and its CLIP-T;
- ``{"kind": "seed", "image_id", "method", "seed", "fp", "clip_i", "dino", "vit", "image"}``:
  the image that prompt gives at one seed (path relative to the output folder) and its
  three image metrics.

``fp`` is a fingerprint of everything the value depends on (the prompt, the models and
their settings, the seed); a rerun skips a record whose fingerprint still matches and
redoes one whose inputs changed. A crash can leave at most a partial last line: it is
dropped on open (the previous lines are intact), as in agents/browser/results.py.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from agents.browser.results import append_line_durably, atomic_write_bytes

log = logging.getLogger(__name__)

RECORDS_FILE = "eval_records.jsonl"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (pydantic models are dumped first)."""
    def plain(p):
        return p.model_dump(mode="json") if hasattr(p, "model_dump") else p

    text = json.dumps([plain(p) for p in parts], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


class EvalRecords:
    """Latest prompt record per (image, method) and seed record per (image, method, seed)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.prompts: dict[tuple[str, str], dict] = {}
        self.seeds: dict[tuple[str, str, int], dict] = {}
        self._by_fp: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for number, line in enumerate(complete, 1):
            if line.strip() and not self._take(line):
                log.warning("%s: line %d is not a valid evaluation record; skipped", self.path, number)
        if tail.strip():
            if self._take(tail):  # complete record, only the newline missing
                atomic_write_bytes(self.path, raw + b"\n")
            else:
                log.warning("%s: dropping a partial last line left by an interrupted write", self.path)
                atomic_write_bytes(self.path, raw[: len(raw) - len(tail)])

    def _take(self, line: bytes) -> bool:
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(rec, dict) or rec.get("kind") not in ("prompt", "seed") or not isinstance(rec.get("fp"), str):
            return False
        self._index(rec)
        return True

    def _index(self, rec: dict) -> None:
        if rec["kind"] == "prompt":
            self.prompts[(rec["image_id"], rec["method"])] = rec
        else:
            self.seeds[(rec["image_id"], rec["method"], int(rec["seed"]))] = rec
            self._by_fp[rec["fp"]] = rec

    def append(self, rec: dict) -> dict:
        append_line_durably(self.path, rec)
        self._index(rec)
        return rec

    def prompt(self, image_id: str, method: str, fp: Optional[str] = None) -> Optional[dict]:
        """The prompt record, if there is one (and, given ``fp``, only if its fingerprint matches)."""
        rec = self.prompts.get((image_id, method))
        return rec if rec is not None and (fp is None or rec["fp"] == fp) else None

    def seed(self, image_id: str, method: str, seed: int, fp: Optional[str] = None) -> Optional[dict]:
        rec = self.seeds.get((image_id, method, seed))
        return rec if rec is not None and (fp is None or rec["fp"] == fp) else None

    def seed_by_fp(self, fp: str) -> Optional[dict]:
        """Any seed record with this fingerprint (same prompt, models and seed under another method name)."""
        return self._by_fp.get(fp)
