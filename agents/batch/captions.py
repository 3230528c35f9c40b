"""Captions for training: each finished image's best prompt, as MDSS fine-tuning reads them.

``OUT/captions.jsonl`` holds one ``{"file": ..., "text": ...}`` line per source image whose
latest record is ``done`` — exactly what :func:`training.data.read_captions` reads:

* ``file`` is the image's path relative to ``--dir`` (the real name; a name whose bytes are
  not UTF-8 cannot be written as text and gets no line, with a warning), or with ``--image``
  the file's absolute path. Training then reads the pairs with
  ``data.path=<the --dir folder> data.captions_file=<OUT>/captions.jsonl`` (an absolute
  ``file`` is used as it is, whatever ``data.path`` is).
* ``text`` is the best prompt (``prompt.rendered`` of the record: content then style).
* Every path with the image's content gets its own line (duplicates are captioned too).

Lines are appended durably (fsynced) as images finish, right after the image's record in
``results.jsonl``. When a later run changes a caption (``--settings-changed fresh``) the
new line is appended and the last line for a file wins (the reader keeps the last one too).
At start-up the file is reconciled with ``results.jsonl`` under the output folder's lock:
a caption missing because the job was killed between the record and the caption is
written, torn or superseded lines are dropped, and lines for files that no longer exist are
removed; if anything changed the file is rewritten atomically, one line per file.

On request, a ``.txt`` per image (the caption, one line) — the convention of most
fine-tuning tools (``photo.png`` → ``photo.txt``):

* ``--captions-txt``: a mirror tree under ``OUT/captions/`` (``sub/photo.png`` →
  ``OUT/captions/sub/photo.txt``, by the image's display name);
* ``--captions-beside-images``: next to each image in the image folder itself; nothing is
  written there otherwise. An existing ``photo.txt`` there is replaced.

Each ``.txt`` is written atomically. When two images would share one ``.txt`` (``photo.png``
and ``photo.jpg`` in one folder, with different content) the first by name gets it and the
other is skipped with a warning.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

from agents.batch.plan import ImageSource, WorkItem
from agents.images import FoundImage
from agents.results import (ResultsLog, UnsafePathError, append_line_durably, atomic_write_bytes,
                            atomic_write_text, contained_path)

log = logging.getLogger("agents.batch.captions")

CAPTIONS_JSONL = "captions.jsonl"
CAPTIONS_DIR = "captions"


@dataclass(frozen=True)
class CaptionOptions:
    """Which ``.txt`` captions to write besides ``captions.jsonl`` (always written)."""

    txt_mirror: bool = False  # --captions-txt: OUT/captions/<display path stem>.txt
    beside_images: bool = False  # --captions-beside-images: <image folder>/<stem>.txt


def caption_text(record: Optional[dict]) -> Optional[str]:
    """The caption of a record: its best prompt; None unless the record is ``done`` with a prompt."""
    if not record or record.get("status") != "done":
        return None
    text = (record.get("prompt") or {}).get("rendered")
    return text if isinstance(text, str) and text.strip() else None


def txt_name(name: str) -> str:
    """``photo.png`` → ``photo.txt`` (a name without a suffix gets ``.txt`` added)."""
    stem, dot, _ = name.rpartition(".")
    return f"{stem if dot and stem else name}.txt"


@dataclass
class _Target:
    key: Optional[str]  # "file" in captions.jsonl; None: the name cannot be written as text
    txts: list[Path]  # .txt files this image owns


class Captions:
    """Writes the captions of one run's images (see the module docstring)."""

    def __init__(self, out_dir: Path, source: ImageSource, items: Sequence[WorkItem],
                 options: CaptionOptions = CaptionOptions()):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / CAPTIONS_JSONL
        self.source = source
        self.options = options
        self._targets: dict[str, list[_Target]] = {}
        self._order: list[str] = []  # caption keys in plan order
        owners: dict[Path, tuple[str, str]] = {}  # .txt path -> (display name, image id)
        pairs = sorted(((found, item) for item in items for found in item.images()), key=lambda fi: fi[0].rel)
        for found, item in pairs:
            key = source.caption_key(found)
            if key is None:
                log.warning("captions: %s: the file name is not valid UTF-8; no line in %s for it", found.rel, CAPTIONS_JSONL)
            else:
                self._order.append(key)
            txts = []
            for txt in self._txt_paths(found):
                owner = owners.setdefault(txt, (found.rel, item.image_id))
                if owner[1] != item.image_id:
                    log.warning("captions: %s and %s would share %s; it holds the caption of %s only",
                                owner[0], found.rel, txt, owner[0])
                    continue
                txts.append(txt)
            self._targets.setdefault(item.image_id, []).append(_Target(key, txts))
        self._current: dict[str, str] = {}

    def _txt_paths(self, found: FoundImage) -> list[Path]:
        paths = []
        if self.options.txt_mirror:
            rel = PurePosixPath(found.rel)
            try:
                paths.append(contained_path(self.out_dir, CAPTIONS_DIR, *rel.parent.parts, txt_name(rel.name)))
            except UnsafePathError as exc:
                log.warning("captions: %s", exc)
        if self.options.beside_images:
            paths.append(found.path.with_name(txt_name(found.path.name)))
        return paths

    # ----------------------------------------------------------------- as images finish
    def write(self, item: WorkItem, record: dict) -> None:
        """Caption ``item`` from its (just recorded) ``record``; only a done record has one.

        A failed write is a warning, never the batch's end: results.jsonl holds the prompt,
        and the next run's :meth:`reconcile` writes the caption.
        """
        text = caption_text(record)
        if text is None:
            return
        for target in self._targets.get(item.image_id, []):
            try:
                if target.key is not None and self._current.get(target.key) != text:
                    append_line_durably(self.path, {"file": target.key, "text": text})
                    self._current[target.key] = text
                for txt in target.txts:
                    _write_txt(txt, text)
            except (OSError, UnsafePathError) as exc:
                log.warning("captions: cannot write the caption of %s (%s: %s); a rerun writes it",
                            item.source.rel, type(exc).__name__, exc)

    # ----------------------------------------------------------------- at start-up
    def reconcile(self, results: ResultsLog) -> int:
        """Bring the captions in line with ``results`` (the latest record per image); returns
        how many captions were written or removed. Call under the output folder's lock."""
        existing, clean = self._read()
        wanted = {k: v for k, v in existing.items() if k not in self._planned_keys() and self._exists(k)}
        texts: dict[str, str] = {}
        for image_id, targets in self._targets.items():
            text = caption_text(results.get(image_id))
            if text is None:
                continue
            for target in targets:
                if target.key is not None:
                    texts[target.key] = text
        wanted.update(texts)
        ordered = {k: wanted[k] for k in [*self._order, *existing] if k in wanted}
        changes = sum(1 for k in set(existing) | set(ordered) if existing.get(k) != ordered.get(k))
        if changes or not clean:
            body = "".join(json.dumps({"file": k, "text": v}, ensure_ascii=False) + "\n" for k, v in ordered.items())
            try:
                atomic_write_bytes(self.path, body.encode("utf-8"))
            except OSError as exc:
                log.warning("captions: cannot rewrite %s (%s)", self.path, exc)
                ordered = existing
            else:
                if changes:
                    log.info("captions: %d caption line(s) brought in line with %s", changes, self.path.name)
        self._current = dict(ordered)
        for image_id, targets in self._targets.items():
            text = caption_text(results.get(image_id))
            if text is None:
                continue
            for target in targets:
                for txt in target.txts:
                    try:
                        if _write_txt(txt, text):
                            changes += 1
                    except OSError as exc:
                        log.warning("captions: cannot write %s (%s)", txt, exc)
        return changes

    def _planned_keys(self) -> set[str]:
        return set(self._order)

    def _exists(self, key: str) -> bool:
        path = Path(key)
        if not path.is_absolute():
            if self.source.folder is None:
                return True  # written by an earlier --dir run: nothing to check it against
            path = self.source.folder / path
        return path.is_file()

    def _read(self) -> tuple[dict[str, str], bool]:
        """The captions file as {file: text} (the last line per file wins) and whether it is
        clean: every line valid, one line per file, ending in a newline."""
        if not self.path.is_file():
            return {}, True
        raw = self.path.read_bytes()
        entries: dict[str, str] = {}
        lines = raw.split(b"\n")
        clean = raw.endswith(b"\n") or not raw
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                clean = False
                continue
            if not (isinstance(row, dict) and isinstance(row.get("file"), str) and isinstance(row.get("text"), str)):
                clean = False
                continue
            if row["file"] in entries:
                clean = False
                del entries[row["file"]]  # keep the order of the last line
            entries[row["file"]] = row["text"]
        return entries, clean


def _write_txt(path: Path, text: str) -> bool:
    """Write ``text`` (one line) to ``path`` atomically unless it already holds it; True when written."""
    content = text + "\n"
    try:
        if not path.is_symlink() and path.is_file() and path.read_text(encoding="utf-8") == content:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, content)
    return True


__all__ = ["CAPTIONS_DIR", "CAPTIONS_JSONL", "CaptionOptions", "Captions", "caption_text", "txt_name"]
