"""Text and links for the hand-written HTML pages (report, edits strip, evaluation gallery)."""
from __future__ import annotations

import html
import os
from urllib.parse import quote


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def href(rel_path: str) -> str:
    """A relative link target: URL-quoted, '/' kept, escaped for an attribute.

    Always relative to the page: quoting turns a scheme's ':' into '%3A', and leading
    slashes (an absolute path, or '//host/...', a protocol-relative link to another
    site) are replaced by './'.
    """
    rel = rel_path.replace(os.sep, "/")
    if rel.startswith("/"):
        rel = "./" + rel.lstrip("/")
    return html.escape(quote(rel, safe="/"), quote=True)
