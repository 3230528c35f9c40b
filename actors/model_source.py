"""Check a model reference (local folder/file or hub id) before a loader sees it, and wrap
loader failures so the error names the reference.

Loaders such as ``from_pretrained`` fall back to the hub when a local path does not exist,
and then fail offline with a message about the network rather than the typo in the path.
Checking first turns that into "no such folder: <path>".
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the role, the reference and the cause."""


def looks_like_path(ref: str) -> bool:
    """True for references that can only be paths: absolute, ./ ../ ~, or more than one '/'.

    Hub ids are ``name`` or ``org/name``; ``a/b`` is ambiguous and is treated as a hub id
    unless it exists on disk.
    """
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or (os.sep != "/" and os.sep in ref)


def check_local_folder(ref: str, role: str, marker: Optional[str] = None) -> Optional[Path]:
    """Return the folder when ``ref`` is a local one (None for a hub id).

    Raises ModelLoadError when ``ref`` is path-like but missing, is a file, or lacks ``marker``
    (the file a loader needs, e.g. ``model_index.json``).
    """
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{role} model {ref!r} is a file, expected a model folder")
        if marker is not None and not (path / marker).is_file():
            raise ModelLoadError(f"{role} model folder {ref!r} has no {marker} (is it a saved {role} model?)")
        return path
    if looks_like_path(ref):
        raise ModelLoadError(f"{role} model folder {ref!r} does not exist")
    return None


def check_local_file(ref: str, role: str) -> Optional[Path]:
    """Like check_local_folder for references that name a weights file (or a registry tag)."""
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_file():
            raise ModelLoadError(f"{role} weights {ref!r} is a folder, expected a checkpoint file")
        return path
    if looks_like_path(ref):
        raise ModelLoadError(f"{role} weights file {ref!r} does not exist")
    return None


def load_error(role: str, ref: str, how: str, exc: BaseException) -> ModelLoadError:
    """A ModelLoadError for a loader exception, saying whether ``ref`` was tried as a local folder or a hub id."""
    where = "local" if Path(ref).expanduser().exists() else "not a local path; tried as a hub id/tag"
    return ModelLoadError(f"{role} model {ref!r} ({where}) could not be loaded with {how}: {type(exc).__name__}: {exc}")


def load_processor_and_model(ref: str, role: str, processor_cls, model_cls, dtype, device: str):
    """``processor_cls.from_pretrained(ref)`` and ``model_cls.from_pretrained(ref, dtype=...)`` on
    ``device`` in eval mode, with the folder checked first and any failure naming role and reference."""
    check_local_folder(ref, role, marker="config.json")
    try:
        processor = processor_cls.from_pretrained(ref)
        model = model_cls.from_pretrained(ref, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the model
        raise load_error(role, ref, f"{processor_cls.__name__} + {model_cls.__name__}", exc) from exc
    return processor, model.to(device).eval()
