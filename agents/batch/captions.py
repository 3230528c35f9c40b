"""Captions for training: each finished image's best prompt, as MDSS fine-tuning reads them.

``OUT/captions.jsonl`` holds one ``{"file": ..., "text": ...}`` line per source image whose
latest record is ``done`` — exactly what :func:`training.data.read_captions` reads:

* ``file`` is the image's path relative to ``--dir`` (the real name; a name whose bytes are
  not UTF-8 cannot be written as text and gets no line, with a warning), or with ``--image``
  the file's absolute path. Training then reads the pairs with
  ``data.path=<the --dir folder> data.captions_file=<OUT>/captions.jsonl`` (an absolute
  ``file`` is used as it is, whatever ``data.path`` is).
* ``text`` is the record's ``caption``: the best prompt (``prompt.rendered``: content then style),
  after ``agent.caption_prefix`` when one is set (``--caption-prefix ohwx`` → ``"ohwx, <prompt>"``;
  agents.training_caption).
* Every path with the image's content gets its own line (duplicates are captioned too).

``OUT/metadata.jsonl`` holds the same captions in the image-folder layout that 🤗 datasets'
``imagefolder`` loader (and the diffusers and LoRA training scripts built on it) reads: one
``{"file_name": ..., "text": ...}`` line per image, ``file_name`` as ``file`` above. With
``agent.prompts_per_image`` K > 1 a line also has ``alternatives``: the captions of the
prompts ranked 2..K (agents.ranked_prompts), for trainers that draw one caption per epoch.
``file_name`` is relative to ``--dir``: copy the file into that folder (``cp OUT/metadata.jsonl
images/``) to load the folder as a dataset; MDSS fine-tuning reads it where it is
(``data.captions_file=<OUT>/metadata.jsonl``). It is kept exactly like captions.jsonl, except
that when it got a second line for one image during a run (a changed caption) it is rewritten
with one line per image when the run ends, since dataset loaders expect one.

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
from agents.browser.results import (ResultsLog, UnsafePathError, append_line_durably, atomic_write_bytes,
                            atomic_write_text, contained_path)

log = logging.getLogger("agents.batch.captions")

CAPTIONS_JSONL = "captions.jsonl"
METADATA_JSONL = "metadata.jsonl"
CAPTIONS_DIR = "captions"


@dataclass(frozen=True)
class CaptionOptions:
    """Which ``.txt`` captions to write besides ``captions.jsonl`` (always written)."""

    txt_mirror: bool = False  # --captions-txt: OUT/captions/<display path stem>.txt
    beside_images: bool = False  # --captions-beside-images: <image folder>/<stem>.txt


def caption_text(record: Optional[dict]) -> Optional[str]:
    """The caption of a record: its ``caption`` (the best prompt with agent.caption_prefix), or for a record
    written before captions had prefixes its best prompt; None unless the record is ``done`` with a prompt."""
    if not record or record.get("status") != "done":
        return None
    text = record.get("caption") or (record.get("prompt") or {}).get("rendered")
    return text if isinstance(text, str) and text.strip() else None


def txt_name(name: str) -> str:
    """``photo.png`` → ``photo.txt`` (a name without a suffix gets ``.txt`` added)."""
    stem, dot, _ = name.rpartition(".")
    return f"{stem if dot and stem else name}.txt"


@dataclass
class _Target:
    key: Optional[str]  # "file" in captions.jsonl; None: the name cannot be written as text
    txts: list[Path]  # .txt files this image owns


@dataclass(frozen=True)
class _Entry:
    """One image's caption: the best prompt's, and the further ranked prompts' (agent.prompts_per_image > 1)."""

    text: str
    alternatives: tuple[str, ...] = ()


class _CaptionFile:
    """One JSON-lines caption file: ``{<key field>: file, "text": caption[, "alternatives": [...]]}`` per line."""

    def __init__(self, path: Path, key_field: str, alternatives: bool):
        self.path, self.key_field, self.alternatives = path, key_field, alternatives

    def line(self, key: str, entry: _Entry) -> dict:
        row: dict = {self.key_field: key, "text": entry.text}
        if self.alternatives and entry.alternatives:
            row["alternatives"] = list(entry.alternatives)
        return row

    def same(self, a: Optional[_Entry], b: Optional[_Entry]) -> bool:
        """Whether two entries are written as the same line (captions.jsonl holds the text only)."""
        if a is None or b is None:
            return a is b
        return a.text == b.text and (not self.alternatives or a.alternatives == b.alternatives)

    def read(self) -> tuple[dict[str, _Entry], bool]:
        """The file as {file: entry} (the last line per file wins) and whether it is clean: every line
        valid, one line per file, ending in a newline."""
        if not self.path.is_file():
            return {}, True
        raw = self.path.read_bytes()
        entries: dict[str, _Entry] = {}
        clean = raw.endswith(b"\n") or not raw
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                clean = False
                continue
            alternatives = row.get("alternatives", []) if isinstance(row, dict) else None
            if not (isinstance(row, dict) and isinstance(row.get(self.key_field), str) and isinstance(row.get("text"), str)
                    and isinstance(alternatives, list) and all(isinstance(a, str) for a in alternatives)):
                clean = False
                continue
            key = row[self.key_field]
            if key in entries:
                clean = False
                del entries[key]  # keep the order of the last line
            entries[key] = _Entry(row["text"], tuple(alternatives))
        return entries, clean

    def rewrite(self, entries: dict[str, _Entry]) -> None:
        body = "".join(json.dumps(self.line(k, v), ensure_ascii=False) + "\n" for k, v in entries.items())
        atomic_write_bytes(self.path, body.encode("utf-8"))


class Captions:
    """Writes the captions of one run's images (see the module docstring)."""

    def __init__(self, out_dir: Path, source: ImageSource, items: Sequence[WorkItem],
                 options: CaptionOptions = CaptionOptions()):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / CAPTIONS_JSONL
        self.files = (_CaptionFile(self.path, "file", alternatives=False),
                      _CaptionFile(self.out_dir / METADATA_JSONL, "file_name", alternatives=True))
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
        self._current: list[dict[str, _Entry]] = [{} for _ in self.files]
        self._repeated = False  # a file got a second line for one key during this run: compact at close()

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
        entry = _entry(record)
        if entry is None:
            return
        for target in self._targets.get(item.image_id, []):
            try:
                if target.key is not None:
                    for file, current in zip(self.files, self._current):
                        if not file.same(current.get(target.key), entry):
                            self._repeated |= target.key in current
                            append_line_durably(file.path, file.line(target.key, entry))
                            current[target.key] = entry
                for txt in target.txts:
                    _write_txt(txt, entry.text)
            except (OSError, UnsafePathError) as exc:
                log.warning("captions: cannot write the caption of %s (%s: %s); a rerun writes it",
                            item.source.rel, type(exc).__name__, exc)

    def close(self) -> None:
        """At the end of a run: rewrite metadata.jsonl if it got a second line for one image (a changed caption),
        so that it has one line per file, as dataset loaders expect (captions.jsonl's readers take the last line
        per file; the next start compacts it). Call under the output folder's lock."""
        if not self._repeated:
            return
        file, current = self.files[1], self._current[1]
        try:
            file.rewrite(current)
        except OSError as exc:
            log.warning("captions: cannot rewrite %s (%s); the next run does", file.path, exc)
        self._repeated = False

    # ----------------------------------------------------------------- at start-up
    def reconcile(self, results: ResultsLog) -> int:
        """Bring the captions in line with ``results`` (the latest record per image); returns
        how many captions were written or removed. Call under the output folder's lock."""
        per_image: dict[str, Optional[_Entry]] = dict.fromkeys(self._targets)
        per_image.update((image_id, _entry(record)) for image_id, record in results.get_many(self._targets))
        entries: dict[str, _Entry] = {}
        for image_id, targets in self._targets.items():
            if per_image[image_id] is None:
                continue
            for target in targets:
                if target.key is not None:
                    entries[target.key] = per_image[image_id]
        changes = 0
        for n, file in enumerate(self.files):
            existing, clean = file.read()
            wanted = {k: v for k, v in existing.items() if k not in self._planned_keys() and self._exists(k)}
            wanted.update(entries)
            ordered = {k: wanted[k] for k in [*self._order, *existing] if k in wanted}
            changed = sum(1 for k in set(existing) | set(ordered) if not file.same(existing.get(k), ordered.get(k)))
            if changed or not clean:
                try:
                    file.rewrite(ordered)
                except OSError as exc:
                    log.warning("captions: cannot rewrite %s (%s)", file.path, exc)
                    ordered = existing
                else:
                    if changed:
                        log.info("captions: %d caption line(s) brought in line with %s", changed, file.path.name)
            self._current[n] = dict(ordered)
            changes = max(changes, changed)
        for image_id, targets in self._targets.items():
            entry = per_image[image_id]
            if entry is None:
                continue
            for target in targets:
                for txt in target.txts:
                    try:
                        if _write_txt(txt, entry.text):
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


def _entry(record: Optional[dict]) -> Optional[_Entry]:
    text = caption_text(record)
    if text is None:
        return None
    alternatives = [p.get("caption") or p.get("rendered") for p in (record.get("prompts") or [])[1:] if isinstance(p, dict)]
    return _Entry(text, tuple(a for a in alternatives if isinstance(a, str) and a.strip()))


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


__all__ = ["CAPTIONS_DIR", "CAPTIONS_JSONL", "METADATA_JSONL", "CaptionOptions", "Captions", "caption_text", "txt_name"]
