"""Read-only access to batch jobs' output folders, so the page can open their results browser.

Only the folders the server was started with (``--batch``) are served, each under ``/batches/<n>/``;
a path must stay inside its folder (no '..', no symlink out), name no hidden file (the job's lock,
temporary files) and have a suffix the results browser uses. A running batch replaces its files
atomically, so a reader sees the last complete version.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from agents.results import RESULTS_JSONL, ResultsLog, UnsafePathError, contained_path

#: What the results browser is made of; the checkpoint database and logs are not served.
SERVED_SUFFIXES = frozenset({".html", ".js", ".css", ".png", ".jpg", ".jpeg", ".webp", ".json", ".jsonl", ".csv", ".txt"})


class BatchFolders:
    def __init__(self, folders: list[Path]):
        self.folders = [Path(f).resolve() for f in folders]

    def listing(self) -> list[dict]:
        """Each folder with its counts so far (results.jsonl is append-only: read while the batch runs)."""
        out = []
        for index, folder in enumerate(self.folders):
            entry = {"index": index, "name": folder.name, "path": str(folder), "url": f"/batches/{index}/report.html",
                     "done": 0, "failed": 0, "exists": (folder / RESULTS_JSONL).is_file()}
            if entry["exists"]:
                latest = {r.get("image_id"): r for r in ResultsLog(folder / RESULTS_JSONL, repair=False).records()}
                entry["done"] = sum(r.get("status") == "done" for r in latest.values())
                entry["failed"] = sum(r.get("status") == "error" for r in latest.values())
            out.append(entry)
        return out

    def file(self, index: int, rel: str) -> Optional[Path]:
        """The file to serve, or None (unknown folder, a path leaving it, hidden, not the browser's, missing)."""
        if not 0 <= index < len(self.folders):
            return None
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p.startswith(".") for p in parts) or Path(parts[-1]).suffix.lower() not in SERVED_SUFFIXES:
            return None
        try:
            path = contained_path(self.folders[index], *parts)
        except UnsafePathError:
            return None
        return path if path.is_file() else None
