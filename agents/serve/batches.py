"""Read-only access to batch jobs' output folders, so the page can open their results browser.

Only the folders the server was started with (``--batch``) are served, each under ``/batches/<n>/``;
a path must resolve inside its folder, name no hidden file (the job's lock, temporary files) and
resolve to a suffix the results browser uses (agents.serve.files). A running batch replaces its files
atomically, so a reader sees the last complete version.

The listing's counts come from each folder's results.jsonl, read incrementally: the log is
append-only, so only the bytes added since the last listing are parsed, and only each image's
latest status is kept (not its record). A log that shrank or was replaced is read again whole.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from agents.browser.results import RESULTS_JSONL, parse_record_line
from agents.serve.files import served_file

#: What the results browser is made of; the checkpoint database and logs are not served.
READ_BLOCK = 4 << 20
SERVED_SUFFIXES = frozenset({".html", ".js", ".css", ".png", ".jpg", ".jpeg", ".webp", ".json", ".jsonl", ".csv", ".txt"})


@dataclass
class LogTally:
    """Each image's latest status in one results.jsonl, as far as ``offset`` (a complete line's end)."""

    identity: tuple = ()  # (st_dev, st_ino) of the file read
    offset: int = 0
    status: dict[str, str] = field(default_factory=dict)

    def update(self, path: Path) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.identity, self.offset, self.status = (), 0, {}
            return
        if (st.st_dev, st.st_ino) != self.identity or st.st_size < self.offset:
            self.identity, self.offset, self.status = (st.st_dev, st.st_ino), 0, {}
        if st.st_size == self.offset:
            return
        with open(path, "rb") as fh:
            fh.seek(self.offset)
            tail, left = b"", st.st_size - self.offset
            while left > 0:  # in blocks: memory stays bounded however large the log
                data = fh.read(min(READ_BLOCK, left))
                if not data:  # cut short meanwhile: the next listing starts again
                    break
                left -= len(data)
                block = tail + data
                end = block.rfind(b"\n") + 1  # a partial last line is read when it is complete
                self._count(block[:end])
                self.offset += end
                tail = block[end:]

    def _count(self, lines: bytes) -> None:
        for line in lines.splitlines():
            record = parse_record_line(line)
            if record is not None:
                self.status[record["image_id"]] = str(record.get("status"))

    def count(self, status: str) -> int:
        return sum(s == status for s in self.status.values())


class BatchFolders:
    def __init__(self, folders: list[Path]):
        self.folders = [Path(f).resolve() for f in folders]
        self._tallies = [LogTally() for _ in self.folders]
        self._lock = threading.Lock()  # listings run in threads

    def listing(self) -> list[dict]:
        """Each folder with its counts so far (no absolute paths: the folder's name and index only)."""
        out = []
        with self._lock:
            for index, (folder, tally) in enumerate(zip(self.folders, self._tallies)):
                tally.update(folder / RESULTS_JSONL)
                out.append({"index": index, "name": folder.name, "url": f"/batches/{index}/report.html",
                            "done": tally.count("done"), "failed": tally.count("error"), "exists": bool(tally.identity)})
        return out

    def file(self, index: int, rel: str) -> Optional[Path]:
        """The file to serve, or None (unknown folder, a path leaving it, hidden, not the browser's, missing)."""
        if not 0 <= index < len(self.folders):
            return None
        return served_file(self.folders[index], rel, SERVED_SUFFIXES)
