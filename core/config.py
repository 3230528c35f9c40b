"""Load a YAML config file plus dotted overrides into a typed pydantic model.

Everything is validated here, at the edge, before any model is loaded: an unknown
key or a wrong type raises :class:`ConfigError` naming the file, the key and the
reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names file, key and reason."""

    def __init__(self, source: str, key: str, reason: str):
        self.source, self.key, self.reason = source, key, reason
        super().__init__(f"{source}: {key}: {reason}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError("--set", text, "an override must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", text, "empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError("--set", key, f"value is not valid YAML: {exc}") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply dotted overrides to a nested dict, creating intermediate mappings."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError("--set", ".".join(path), f"'{part}' is not a mapping")
            node = child
        node[path[-1]] = value
    return data


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "<file>", "no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), "<file>", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(p), "<root>", "the top level must be a mapping")
    return data


def validate(model: type[M], data: dict, source: str, overrides: Iterable[str] = ()) -> M:
    """Validate ``data`` as ``model``; on failure name the source, the first bad key and why."""
    overrides = list(overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _format_loc(err["loc"])
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        if "input" in err and err["type"] != "extra_forbidden" and not isinstance(err["input"], dict):
            reason += f" (got {err['input']!r})"
        origin = source
        if any(o.split("=", 1)[0].strip() == key for o in overrides):
            origin = f"{source} (--set {key})"
        more = len(exc.errors()) - 1
        if more:
            reason += f"; and {more} more error(s)"
        raise ConfigError(origin, key, reason) from None


def load_config(model: type[M], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> M:
    """Read ``path`` (optional), apply ``--set`` overrides, and validate as ``model``."""
    overrides = list(overrides)
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    apply_overrides(data, overrides)
    return validate(model, data, source, overrides)


def expand_path(value: str) -> str:
    """Expand ``~`` and ``$VARS`` in a path-or-hub-id string (hub ids pass through unchanged)."""
    return os.path.expandvars(os.path.expanduser(value))
