"""A validated config as a flat list of settings: dotted key, value, where the value came from, description.

What ``python -m agents.config show`` prints. The keys are the ones ``--set`` takes, so a line can be copied
into an override; where a value came from (the profile file, a ``--set``, or the field's default) is read from
the raw data before validation, not guessed from the value.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from typing import Any, Iterable

from pydantic import BaseModel

from core.config import apply_overrides, redact


@dataclass(frozen=True)
class Setting:
    key: str  # dotted, as --set takes it
    value: Any  # JSON-ready
    source: str  # "profile", "--set" or "default"
    description: str


def _paths(data: dict, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path present in a nested mapping (inner mappings and their leaves)."""
    found = set()
    for key, value in data.items():
        path = prefix + (str(key),)
        found.add(path)
        if isinstance(value, dict):
            found |= _paths(value, path)
    return found


def settings(config: BaseModel, data: dict, overrides: Iterable[str] = ()) -> list[Setting]:
    """The settings of ``config``, validated from ``data`` (the profile with ``overrides`` applied), in field order.

    A key is "--set" where an override gave it (a mapping given whole sets only the keys it holds), "profile"
    where the profile file gave it and no override replaced it, else "default"."""
    in_sets = _paths(apply_overrides({}, overrides))
    in_data = _paths(data)
    rows: list[Setting] = []

    def walk(model: BaseModel, prefix: tuple[str, ...]) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            path = prefix + (name,)
            if isinstance(value, BaseModel):  # a section: its fields, not the section itself
                walk(value, path)
                continue
            if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
                for entry, section in value.items():  # named entries (evaluation.arpo_variants.<name>)
                    walk(section, path + (str(entry),))
                continue
            source = "--set" if path in in_sets else "profile" if path in in_data else "default"
            rows.append(Setting(".".join(path), _plain(value), source, " ".join((field.description or "").split())))

    walk(config, ())
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def format_settings(rows: list[Setting], width: int = 100, describe: bool = True) -> str:
    """One line per setting, ``key = value  [source]``, its description wrapped and indented below."""
    lines = []
    for row in rows:
        shown = redact(json.dumps(row.value, ensure_ascii=False))
        lines.append(f"{row.key} = {shown}  [{row.source}]")
        if describe and row.description:
            lines.extend(textwrap.wrap(row.description, width=width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)
