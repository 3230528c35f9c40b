"""Load a YAML config file plus dotted overrides into a typed pydantic model.

Everything is validated here, at the edge, before any model is loaded: an unknown
key, a key written twice in one mapping, or a wrong type raises :class:`ConfigError`
naming the file, the key and the reason.

A ``--set key.path=value`` value is read as one YAML *flow* value — a number,
``true``/``false``, ``null``, a quoted string, a ``[list]`` or a ``{mapping}`` — and
anything else is kept as the literal text (see :func:`override_value`), so
``--set agent.init_prompt=Content: a cat`` sets that string rather than a mapping.
"""
from __future__ import annotations

import os
import re
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


class DuplicateKeyError(yaml.YAMLError):
    """A mapping in a YAML document holds the same key twice (``path`` is the dotted key)."""

    def __init__(self, path: str, first_line: int, second_line: int):
        self.path, self.first_line, self.second_line = path, first_line, second_line
        super().__init__(f"{path}: duplicate key (lines {first_line} and {second_line})")


def _check_unique_keys(node: yaml.Node, path: tuple[str, ...], visited: set[int]) -> None:
    # Each node once: aliases share nodes (a cycle, or nested aliases that would repeat exponentially).
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if name is not None:
                line = key_node.start_mark.line + 1
                ident = (key_node.tag, name)
                if ident in seen:
                    raise DuplicateKeyError(".".join(path + (name,)), seen[ident], line)
                seen[ident] = line
            _check_unique_keys(value_node, path + (str(name),), visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, path + (str(i),), visited)


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last one
    silently, so a second ``t2i:`` section would drop the first) with :class:`DuplicateKeyError`."""

    def construct_document(self, node):
        _check_unique_keys(node, (), set())
        return super().construct_document(node)


def override_value(raw: str) -> Any:
    """The value of ``--set key=raw``.

    ``raw`` is read as one YAML flow value: a number, ``true``/``false``, ``null``, a quoted
    string, a ``[list]`` or a ``{mapping}``. Anything YAML would read otherwise is kept as the
    literal text (surrounding blanks removed): a block mapping (``Content: a cat``) or block list
    (``- x``), a value with a ``# comment`` or an ``&anchor`` (YAML would drop them silently), and
    text that is not valid YAML at all. A plain string is the same either way. To get a string
    that YAML would read as a number, bool or null, quote it: ``--set 'agent.init_prompt="1984"'``.
    """
    text = raw.strip()
    if not text:
        return ""
    try:
        tokens = list(yaml.scan(text, Loader=UniqueKeyLoader))
        value = yaml.load(text, Loader=UniqueKeyLoader)
    except DuplicateKeyError:
        raise
    except yaml.YAMLError:
        return text
    block_or_anchor = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.AnchorToken)
    if any(isinstance(t, block_or_anchor) for t in tokens):
        return text
    content = [t for t in tokens if not isinstance(t, (yaml.StreamEndToken, yaml.BlockEndToken))]
    if content[-1].end_mark.index < len(text):  # a comment (all of the text, or its tail)
        return text
    return value


#: The ``--set`` help every command line shares (the rule is parse_value's).
SET_HELP = ("Override a config key (repeatable), e.g. --set agent.max_steps=5. VALUE is read as one YAML flow value "
            "(number, true/false, null, \"quoted\", [list], {mapping}); anything else is kept as literal text, so "
            "--set agent.init_prompt=Content: a cat sets that string. Quote to force a string: --set 'x=\"1984\"'.")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and its value (see :func:`override_value`)."""
    if "=" not in text:
        raise ConfigError("--set", text, "an override must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", text, "empty key segment")
    try:
        value = override_value(raw)
    except DuplicateKeyError as exc:
        raise ConfigError("--set", key, f"duplicate key {exc.path!r} in the value") from None
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


_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")


def redact(text: str) -> str:
    """Mask the credentials of any ``scheme://user:password@host`` in ``text`` (errors echo bad values)."""
    return _URL_USERINFO.sub(r"\1***@", text)


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "<file>", "no such config file")
    try:
        data = yaml.load(p.read_text(), Loader=UniqueKeyLoader) or {}
    except DuplicateKeyError as exc:
        raise ConfigError(str(p), exc.path, f"duplicate key (lines {exc.first_line} and {exc.second_line})") from None
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
            reason += f" (got {redact(repr(err['input']))})"
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
