"""One folder per upload under ``<data>/runs/<run id>/``: ``run.json`` (what was asked, the status, the
timeline), ``reference.png``, the generated ``iter_XX/`` images, ``result.json`` and ``edits/``.

``run.json`` is replaced atomically, so a crash leaves the previous one; run ids are random
(``secrets``), 16 hex digits, and every path is checked to stay inside the run's folder.

The store keeps every run's record in memory once :meth:`RunStore.load_all` has read the folder (at
server start, in a thread): listings, the health check and the event stream never read the disk,
however many runs there are; :meth:`RunStore.save` writes the file and updates the memory copy.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field, ValidationError

from agents.browser.results import atomic_write_text, contained_path

log = logging.getLogger("agents.serve")

RUNS_DIR, RUN_JSON, REFERENCE_PNG, RESULT_JSON = "runs", "run.json", "reference.png", "result.json"
RUN_ID = re.compile(r"[0-9a-f]{16}")  # used with fullmatch: "$" would accept a trailing newline

Status = Literal["queued", "running", "stopped", "done", "error", "stale"]
#: Statuses a server start picks up again.
UNFINISHED: tuple[str, ...] = ("queued", "running")


class RunRequest(BaseModel):
    """What the user asked for (validated against the server's limits in RunManager.request)."""

    framework: Literal["vanilla", "enhanced"]
    max_steps: int
    seeds: list[int]
    init_prompt: Optional[str] = None
    prompts_per_image: int = 1
    caption_prefix: Optional[str] = None
    negative: bool = False
    style_only: bool = False


class RunMeta(BaseModel):
    run_id: str
    filename: str = Field(description="The uploaded file's name, display-safe (agents.images.display_name).")
    image_id: str = Field(description="Content id of the stored reference (the CLIP cache key).")
    created_at: float
    request: RunRequest
    settings_fingerprint: str = Field(description="The server config's result-changing settings when the run started.")
    status: Status = "queued"
    error: Optional[str] = None
    timeline: list[dict] = Field(default_factory=list, description="{'node', 't'}: seconds after the upload each node finished.")
    members: list[dict] = Field(default_factory=list, description="A set (several images uploaded together): "
                                                                  "{'filename', 'image_id'} of each; [] for one image.")

    def summary(self) -> dict:
        return {"run_id": self.run_id, "filename": self.filename, "status": self.status, "created_at": self.created_at,
                "framework": self.request.framework, "error": self.error}


def new_run_id() -> str:
    return secrets.token_hex(8)


class RunStore:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir).resolve()
        self.runs_dir = self.data_dir / RUNS_DIR
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._metas: Optional[dict[str, RunMeta]] = None  # every run, once load_all has run
        self._lock = threading.Lock()  # saves run in threads while the loop lists

    def run_dir(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise KeyError(run_id)
        return self.runs_dir / run_id

    def file(self, run_id: str, rel: str) -> Path:
        """A file inside the run's folder (KeyError for an unknown run, UnsafePathError for a path leaving it)."""
        return contained_path(self.run_dir(run_id), *rel.split("/"))

    def save(self, meta: RunMeta) -> None:
        """Write run.json (atomically) and keep a copy in memory (callers pass a copy they no longer change)."""
        folder = self.run_dir(meta.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / RUN_JSON, meta.model_dump_json(indent=1))
        with self._lock:
            if self._metas is not None:
                self._metas[meta.run_id] = meta

    def read(self, run_id: str) -> RunMeta:
        """run.json from disk (KeyError for an unknown run)."""
        path = self.run_dir(run_id) / RUN_JSON
        if not path.is_file():
            raise KeyError(run_id)
        return RunMeta.model_validate_json(path.read_text(encoding="utf-8"))

    def load(self, run_id: str) -> RunMeta:
        """The run's record: from memory once loaded, else from disk (KeyError for an unknown run)."""
        if self._metas is not None:
            return self._metas[run_id]
        return self.read(run_id)

    def load_all(self) -> None:
        """Read every readable run into memory; an unreadable run.json is logged and left out."""
        metas = {}
        for folder in self.runs_dir.iterdir():
            if not RUN_ID.fullmatch(folder.name) or not (folder / RUN_JSON).is_file():
                continue
            try:
                metas[folder.name] = self.read(folder.name)
            except (ValidationError, json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
                log.warning("%s: unreadable %s, left out: %s", folder, RUN_JSON, exc)
        with self._lock:
            self._metas = {**metas, **(self._metas or {})}  # a save made meanwhile is newer

    def all(self) -> list[RunMeta]:
        """Every readable run, newest first."""
        if self._metas is None:
            self.load_all()
        with self._lock:
            metas = list(self._metas.values())
        return sorted(metas, key=lambda m: m.created_at, reverse=True)

    def count(self) -> int:
        if self._metas is None:
            self.load_all()
        return len(self._metas)

    @staticmethod
    def now() -> float:
        return time.time()
