"""A model's JSON config files, read from one source: a local folder, the Hugging Face cache, the hub
(asked with a deadline through actors/hub_probe.py), or the built-in table of actors/known_models.py."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

from actors.memory.sizes import SizingError

class ConfigReader:
    """Reads a model's JSON config files from one source, chosen at the first file read.

    ``use_hub``: fetch config files the cache lacks from the hub (after the first failure
    the hub is not tried again). ``cache_dir``: the Hugging Face hub cache (None: the default).
    """

    def __init__(self, ref: str, *, use_hub: bool = True, cache_dir: Optional[str] = None,
                 table: Optional[Mapping[str, Mapping[str, dict]]] = None):
        from actors.known_models import KNOWN_CONFIGS

        self.ref = ref
        self.use_hub = use_hub and not _hub_offline()
        self.cache_dir = cache_dir
        self.table = KNOWN_CONFIGS if table is None else table
        self.source: Optional[str] = None  # "local folder" | "Hugging Face cache" | "hub" | "built-in table"
        self._hub_problem: Optional[str] = None

    @property
    def from_table(self) -> bool:
        return self.source == "built-in table"

    @property
    def source_text(self) -> str:
        """Where the sizes came from, and for the built-in table why not from the hub."""
        if self.source != "built-in table":
            return self.source or ""
        why = (f"the hub could not be asked: {self._hub_problem}" if self._hub_problem
               else "the hub was not asked: HF_HUB_OFFLINE" if _hub_offline()
               else "the hub was not asked" if not self.use_hub else "")
        return f"built-in table; {why}" if why else "built-in table"

    def json(self, relpath: str) -> Optional[dict]:
        """The parsed file, or None when the model has no such file."""
        path = Path(self.ref).expanduser()
        if path.is_dir():
            self.source = "local folder"
            f = path / relpath
            return _load_json(f) if f.is_file() else None
        from actors.model_source import looks_like_path

        if path.exists() or looks_like_path(self.ref):
            raise SizingError(f"{self.ref!r} is not a model folder" if path.exists() else f"model folder {self.ref!r} does not exist")
        if self.source in (None, "Hugging Face cache"):
            found = self._cached(relpath)
            if found is not None or self.source == "Hugging Face cache":
                return found or None
        if self.source in (None, "hub") and self.use_hub and self._hub_problem is None:
            found = self._from_hub(relpath)
            if found is not None or self.source == "hub":
                return found or None
        if self.ref in self.table:
            self.source = "built-in table"
            return self.table[self.ref].get(relpath)
        why = (f"the hub could not be reached ({self._hub_problem})" if self._hub_problem
               else "the hub was not asked (offline)" if not self.use_hub else "the hub has no such file")
        raise SizingError(f"{self.ref!r}: no local folder, not in the Hugging Face cache, {why}, and not in the "
                          f"built-in table of actors/known_models.py")

    def _cached(self, relpath: str):
        """The cached file's content, {} when the cache knows the file does not exist, None when not cached."""
        try:
            from huggingface_hub import try_to_load_from_cache
            from huggingface_hub.file_download import _CACHED_NO_EXIST
        except ImportError:
            return None
        try:
            hit = try_to_load_from_cache(self.ref, relpath, cache_dir=self.cache_dir)
        except Exception:  # noqa: BLE001 - a malformed id: not in the cache
            return None
        if hit is _CACHED_NO_EXIST:
            self.source = "Hugging Face cache"
            return {}
        if isinstance(hit, str) and os.path.isfile(hit):
            self.source = "Hugging Face cache"
            return _load_json(Path(hit))
        return None

    def _from_hub(self, relpath: str):
        """The file from the hub, {} when the hub answered that it has no such file, None when the hub could
        not be asked or would not say (``_hub_problem`` then says why). Asked with a short deadline first
        (actors/hub_probe.py): huggingface_hub's download retries an unreachable hub for ~20 s and reports it
        with an error class that also means "no such file"."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        from actors import hub_probe

        answer = hub_probe.ask_hub(self.ref, relpath)
        if answer.verdict == "missing":
            self.source = "hub"
            return {}
        if answer.verdict != "found":
            self._hub_problem = answer.detail if answer.verdict == "unreachable" else f"the hub refused: {answer.detail}"
            return None
        try:
            local = hf_hub_download(self.ref, relpath, cache_dir=self.cache_dir, endpoint=hub_probe.endpoint(),
                                    etag_timeout=hub_probe.HUB_TIMEOUT_S)
        except LocalEntryNotFoundError as exc:  # before its base class: the hub went away, not "no such file"
            self._hub_problem = f"{type(exc).__name__}: the hub stopped answering"
            return None
        except EntryNotFoundError:
            self.source = "hub"
            return {}
        except Exception as exc:  # noqa: BLE001 - unknown repo, gated, a broken download: fall back to the table
            self._hub_problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            return None
        self.source = "hub"
        return _load_json(Path(local))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SizingError(f"{path}: unreadable config ({type(exc).__name__}: {exc})") from None
