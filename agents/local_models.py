"""Model folders and files a profile names by path, checked before Ray and any role start.

A role given a path that does not exist would fail only once its actor loads (tens of seconds into the job,
after Ray and the other roles started), and a loader that falls back to the hub then fails with the hub's
"Repo id must be in the form ..." instead of the path. Checked here, every missing one is named at once, with
its key, before anything starts; a path under the offline kit's folder says how to build it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from actors.model_source import looks_like_path
from actors.offline_kit.build import DEFAULT_OUT as KIT_FOLDER


def model_references(cfg) -> list[tuple[str, str]]:
    """(key, reference) of every model the roles of an ArpoConfig (or EvalConfig) load from a file or folder."""
    refs = [("t2i.model", cfg.t2i.model)]
    for role in ("llm", "vlm"):
        section = getattr(cfg, role)
        if section.backend != "openai":  # an API's model is a served name, not a path
            refs.append((f"{role}.model", section.model))
    if cfg.captioner.backend == "transformers":
        refs.append(("captioner.model", cfg.captioner.model))
    refs += [("clip.pretrained", cfg.clip.pretrained), ("clip.model_config_dir", cfg.clip.model_config_dir)]
    for role in ("dino", "vit"):  # the evaluation's image embedders
        section = getattr(cfg, role, None)
        if section is not None:
            refs.append((f"{role}.model", section.model))
    return [(key, ref) for key, ref in refs if ref]


def missing_model_paths(cfg) -> list[tuple[str, str]]:
    """(key, path) of each path-like model reference that does not exist."""
    return [(key, ref) for key, ref in model_references(cfg)
            if looks_like_path(ref) and not Path(ref).expanduser().exists()]


def missing_models_problem(cfg) -> Optional[str]:
    """One message naming every missing model path (None when all exist)."""
    missing = missing_model_paths(cfg)
    if not missing:
        return None
    lines = "; ".join(f"{key}: {ref!r} does not exist" for key, ref in missing)
    kit = KIT_FOLDER.expanduser().resolve()
    in_kit = any(kit == Path(ref).expanduser().resolve() or kit in Path(ref).expanduser().resolve().parents
                 for _, ref in missing)
    hint = " (the offline kit's models: build them with `python -m agents.offline_kit`)" if in_kit else ""
    return f"model files missing before any role started: {lines}{hint}"
