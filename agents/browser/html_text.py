"""Text, links and embedded data for the HTML pages (report, detail pages, edits strip, evaluation gallery).

The pages are jinja2 templates (agents/templates, rendered by agents.browser.html_render with
autoescaping); these helpers are its filters.
"""
from __future__ import annotations

import html
import json
import os
from typing import Any
from urllib.parse import quote


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url_path(rel_path: str) -> str:
    """A relative URL path: URL-quoted, '/' kept, never absolute (not HTML-escaped: for the DOM or JSON).

    Quoting turns a scheme's ':' into '%3A' (so ``javascript:...`` becomes a file name), and
    leading slashes (an absolute path, or '//host/...', a protocol-relative link to another
    site) are replaced by './'. Only letters, digits, ``_.-~/`` and ``%`` escapes remain.
    """
    rel = str(rel_path).replace(os.sep, "/")
    if rel.startswith("/"):
        rel = "./" + rel.lstrip("/")
    return quote(rel, safe="/")


def href(rel_path: str) -> str:
    """A relative link target (see :func:`url_path`), escaped for an attribute."""
    return html.escape(url_path(rel_path), quote=True)


_SCRIPT_UNSAFE = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                  0x2028: "\\u2028", 0x2029: "\\u2029"}


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element or a .js file.

    ``<``, ``>``, ``&`` and U+2028/U+2029 are written as ``\\uXXXX`` escapes (the same
    value once parsed), so no string in the data can close the script (``</script>``),
    open a comment (``<!--``) or end a line inside a JavaScript string.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).translate(_SCRIPT_UNSAFE)
