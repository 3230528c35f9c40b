"""What the batch job leaves on disk, written so a crash never leaves a half-written file.

Layout of the output folder::

    results.jsonl        one JSON line per finished image (appended, fsynced); the source of truth
    results.csv          the same records flattened for spreadsheets, one row per image (rebuilt
                         atomically when a job starts and ends; rows appended as images finish)
    report.html          the results browser's index, with report_rows.js and report_summary.js
                         (see agents/browser/report.py)
    images/<name>/       one folder per image: reference.png, the agent's iteration images,
                         result.json (the whole history), final_prompt.txt, scores.csv, and
                         index.html (the image's page in the results browser)

Every file except the JSONL log, report_rows.js and results.csv is replaced atomically (temporary file
in the same folder, fsync, ``os.replace``); results.csv is rebuilt that way and then appended to. The log is append-only; when several lines share an
image id (an error retried by a later run) the last one counts. A crash can leave at
most a partial last line, which :class:`ResultsLog` moves aside to ``results.jsonl.torn-<time>`` and
cuts off on open.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import sys
import time
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, NamedTuple, Optional

from core.durable_files import (UnsafePathError, append_bytes_durably, append_line_durably, atomic_write_bytes,
                                atomic_write_json, atomic_write_text, cut_file_durably, open_no_follow, write_all)

log = logging.getLogger(__name__)

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
IMAGES_SUBDIR = "images"
REFERENCE_FILE = "reference.png"
RESULT_JSON = "result.json"
FINAL_PROMPT_TXT = "final_prompt.txt"
SCORES_CSV = "scores.csv"
LOCK_FILE = ".batch.lock"

_MAX_SLUG = 60
_ID_CHARS = 12


# --------------------------------------------------------------------------- names

def slugify(text: str, max_len: int = _MAX_SLUG) -> str:
    """ASCII letters, digits, '.', '_' and '-' only; never empty, never starting with '.'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text)
    slug = re.sub(r"-{2,}", "-", slug).strip("-._")[:max_len].strip("-._")
    return slug or "image"


def image_dir_name(rel: str, image_id: str) -> str:
    """Folder name for one image: slug of its relative path (sans extension) + short content id.

    The id suffix keeps names unique even when two paths slugify alike; the slug keeps
    them readable. The result is a single path component of safe characters.
    """
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    short = slugify(image_id, max_len=_ID_CHARS) if image_id else "noid"
    return f"{slugify(stem.replace('/', '__'))}-{short}"


def contained_path(root: str | os.PathLike, *parts: str) -> Path:
    """``root/parts...``, refusing any result that resolves outside ``root``."""
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise UnsafePathError(f"{'/'.join(parts)!r} would leave the output folder {base}")
    return target


def image_output_dir(out_dir: str | os.PathLike, rel: str, image_id: str) -> Path:
    """The per-image folder under ``out_dir/images`` (not created)."""
    return contained_path(out_dir, IMAGES_SUBDIR, image_dir_name(rel, image_id))


# The durable writes themselves live in core/durable_files.py (shared with the evaluation records and the
# benchmarks' resumable units); they are bound here too, so ``ResultsLog`` finds them as module globals (the kill -9
# harness, tests/agents/kill9_driver.py, swaps ``append_line_durably`` in every agents module that bound it).


# --------------------------------------------------------------------------- one writer per folder

class OutputFolderBusy(RuntimeError):
    """Another batch job holds the output folder."""


@contextmanager
def exclusive_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``out_dir`` (created if missing) for one batch job.

    Two jobs appending to one results log would interleave and resume each other's
    images; the second one is refused instead.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; one job per folder is then up to the user
        yield folder
        return
    with open(folder / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputFolderBusy(f"{folder}: another batch job is writing to this output folder") from None
        try:
            yield folder
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- the JSONL log

class RecordSummary(NamedTuple):
    """Where an image's latest record lies in the log, and the two fields a run asks of every image."""
    offset: int
    length: int
    status: Optional[str]
    fingerprint: Optional[str]


class ResultsLog:
    """The append-only ``results.jsonl``: one record (a JSON object with ``image_id``) per line.

    Opening reads what is there: valid lines become records (the last per id wins), a
    partial last line left by a crash is cut off so the next append starts on a clean
    line, and an unreadable line elsewhere is skipped with a warning (it cannot come
    from this writer, so it is reported rather than silently repaired).

    Records stay on disk: the log keeps, per image, only where its latest line lies and the two
    fields a run asks of every image (status, settings fingerprint). A finished record (the whole
    history, tens of KB) is read back when asked for, so a long job's driver memory does not grow
    with the images it has finished (the scale simulation measured 44 KB per finished image while
    the log held them: docs/scale.md).
    """

    def __init__(self, path: str | os.PathLike, repair: bool = True):
        self.path = Path(path)
        if self.path.is_symlink():
            raise UnsafePathError(f"{self.path}: is a symlink; a results log must be a plain file in the output folder")
        self._repair = repair  # False: read only (e.g. a dry run), a partial last line is just ignored
        self._entries: dict[str, RecordSummary] = {}
        self.skipped_lines: list[int] = []
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            pos, number = 0, 0
            for line in fh:  # one line at a time: opening a long job's log does not read it whole into memory
                number += 1
                if not line.endswith(b"\n"):  # the last write did not finish its line
                    self._load_last_fragment(line, pos)
                    break
                if line.strip():
                    record = parse_record_line(line)
                    if record is not None:
                        self._note(record, pos, len(line))
                    else:
                        log.warning("%s: line %d is not a valid result record; skipped", self.path, number)
                        self.skipped_lines.append(number)
                pos += len(line)

    def _load_last_fragment(self, fragment: bytes, pos: int) -> None:
        record = parse_record_line(fragment)
        if record is not None:  # a complete record, only its newline is missing
            self._note(record, pos, len(fragment))
            if self._repair:
                append_bytes_durably(self.path, b"")  # adds the newline, so the next append starts a line
        elif self._repair:
            aside = self._move_aside(fragment)
            cut_file_durably(self.path, pos)
            log.warning("%s: its last line is incomplete (%d bytes: an interrupted write, or a hand edit); "
                        "moved to %s and left out", self.path, len(fragment), aside)
        else:
            log.warning("%s: its last line is incomplete (%d bytes); left out", self.path, len(fragment))

    def _note(self, record: dict, offset: int, length: int) -> None:
        self._entries[record["image_id"]] = RecordSummary(offset, length, _short(record.get("status")),
                                                   _short(record.get("settings_fingerprint")))

    def _move_aside(self, fragment: bytes) -> Path:
        """Keep an incomplete last line in ``results.jsonl.torn-<UTC time>[-n]`` (never deleted: it may be a
        hand edit worth mending) before the log is cut back to its last complete line."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for n in range(1000):
            aside = self.path.with_name(f"{self.path.name}.torn-{stamp}" + (f"-{n}" if n else ""))
            if not aside.exists():
                atomic_write_bytes(aside, fragment)
                return aside
        raise FileExistsError(f"{self.path}: too many torn-line files for {stamp}")

    def append(self, record: dict) -> None:
        """Append one record as a line and make it durable before returning."""
        if not isinstance(record.get("image_id"), str) or not record["image_id"]:
            raise ValueError("a result record needs a non-empty string image_id")
        # Through append_line_durably, the module's one append point (the kill -9 harness, tests/agents/kill9_driver.py,
        # patches it); one writer per folder (exclusive_output), so the line runs from its offset to the file's end.
        offset = append_line_durably(self.path, record)
        self._note(record, offset, os.path.getsize(self.path) - offset)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def records(self) -> Iterator[dict]:
        """Latest record per image id, in the order ids first appeared, read from the log as iterated."""
        entries = list(self._entries.values())  # appends during the iteration do not disturb it
        if not entries:
            return  # the log may not exist yet
        with open(self.path, "rb") as fh:
            for entry in entries:
                yield self._read(fh, entry)

    def get(self, image_id: str) -> Optional[dict]:
        return next((record for _, record in self.get_many((image_id,))), None)

    def get_many(self, image_ids: Iterable[str]) -> Iterator[tuple[str, dict]]:
        """``(image_id, latest record)`` for each of ``image_ids`` that has one: one open of the log, read in file
        order (a start-up pass over a large batch reads the file front to back, not one open per image)."""
        wanted = sorted(((self._entries[i], i) for i in set(image_ids) if i in self._entries), key=lambda e: e[0].offset)
        if not wanted:
            return
        with open(self.path, "rb") as fh:
            for entry, image_id in wanted:
                yield image_id, self._read(fh, entry)

    def summary(self, image_id: str) -> Optional[RecordSummary]:
        """The latest record's status and settings fingerprint (and where it lies), without reading it."""
        return self._entries.get(image_id)

    def _read(self, fh: BinaryIO, entry: RecordSummary) -> dict:
        fh.seek(entry.offset)
        record = parse_record_line(fh.read(entry.length))
        if record is None:  # the log is append-only: its lines cannot change under a live ResultsLog
            raise RuntimeError(f"{self.path}: the record at byte {entry.offset} no longer reads back; "
                               "was the log edited while a job was using it?")
        return record

    def finished_ids(self, fingerprint: Optional[str] = None) -> set[str]:
        """Ids whose latest record says ``done`` (errors are retried by a rerun); with
        ``fingerprint``, only those finished under those settings (agents.batch.identity)."""
        return {i for i, e in self._entries.items() if e.status == "done"
                and (fingerprint is None or e.fingerprint == fingerprint)}


def _short(value: Any) -> Optional[str]:
    """A status or fingerprint as kept per image: a string (shared when it repeats), or None."""
    return sys.intern(value) if isinstance(value, str) and len(value) <= 128 else None


def parse_record_line(line: bytes) -> Optional[dict]:
    """One results.jsonl line as its record, or None when it is not a JSON object with a string image_id."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("image_id"), str):
        return None
    return record


# --------------------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "image_id", "source", "status", "error", "best_iteration", "best_clip_i", "best_clip_t",
    "iterations", "stop_reason", "elapsed_s", "initial_prompt", "final_content", "final_style",
    "final_prompt", "output_dir", "duplicate_sources",
)


def joined(fragments: Any) -> str:
    """Prompt fragments (a list, as in ``ReverseResult.prompt``) as one comma-separated string."""
    if isinstance(fragments, (list, tuple)):
        return ", ".join(str(f) for f in fragments)
    return "" if fragments is None else str(fragments)


def csv_row(record: dict) -> dict:
    """Flatten one result record (a dumped ``agents.result.ReverseResult`` plus the job's keys)."""
    final = record.get("prompt") or {}
    return {
        "image_id": record.get("image_id", ""),
        "source": record.get("source", ""),
        "status": record.get("status", ""),
        "error": record.get("error") or "",
        "best_iteration": _blank_none(record.get("best_iteration")),
        "best_clip_i": _blank_none(record.get("best_clip_i")),
        "best_clip_t": _blank_none(record.get("best_clip_t")),
        "iterations": len(record.get("iterations") or []),
        "stop_reason": record.get("stop_reason") or "",
        "elapsed_s": _blank_none(record.get("elapsed_s")),
        "initial_prompt": record.get("initial_prompt") or "",
        "final_content": joined(final.get("content")),
        "final_style": joined(final.get("style")),
        "final_prompt": final.get("rendered") or "",
        "output_dir": record.get("output_dir") or "",
        "duplicate_sources": ";".join(record.get("duplicate_sources") or []),
    }


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


def render_csv(records: Iterable[dict], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for record in records:
        writer.writerow({k: _csv_safe(v) for k, v in csv_row(record).items()})
    return buf.getvalue()


def _csv_safe(value: Any) -> Any:
    """Keep spreadsheets from running a prompt as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(path: str | os.PathLike, records: Iterable[dict]) -> None:
    atomic_write_text(path, render_csv(records))


def append_csv_row(path: str | os.PathLike, record: dict) -> None:
    """Append ``record``'s row to a results.csv that :func:`write_csv` made (a symlink is refused).

    Not fsynced: the file is derived from results.jsonl and rebuilt from it when a job starts, so
    a row lost or torn by a crash is restored then; a kill -9 loses nothing that was written. A write
    that fails (disk full) is cut back to where it started, so no torn row stays behind."""
    fd = open_no_follow(Path(path), os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, render_csv([record], header=False).encode("utf-8"))
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- per-image folder

def write_image_outputs(folder: str | os.PathLike, record: dict) -> None:
    """result.json (the whole record), final_prompt.txt and scores.csv, each atomically."""
    folder = Path(folder)
    atomic_write_json(folder / RESULT_JSON, record)
    final = record.get("prompt") or {}
    if final:
        text = (
            f"{final.get('rendered') or ''}\n\n"
            f"# content\n{joined(final.get('content'))}\n\n"
            f"# style\n{joined(final.get('style'))}\n"
        )
        atomic_write_text(folder / FINAL_PROMPT_TXT, text)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["iteration", "clip_t", "clip_i", "prompt"])
    for index, it in enumerate(record.get("iterations") or []):
        writer.writerow([it.get("iteration", index), _blank_none(it.get("clip_t")), _blank_none(it.get("clip_i")), _csv_safe(it.get("rendered") or "")])
    atomic_write_text(folder / SCORES_CSV, buf.getvalue())
