"""Read a list of prompt fragments out of an LLM answer, without ever evaluating it.

LLMs asked for "a python list" answer in many shapes: a real Python list (quoted or
not, as in the thesis' Figure B.4), the same inside a fenced code block, a braced set
(``{a; b}``, §4.2.2), a numbered or bulleted list, or bare comma-separated phrases,
often after a preamble ("Sure! Here are the prompts:"). :func:`parse_fragments` tries
these shapes in that order and returns the first that yields fragments.

What comes back is clean: trimmed, unquoted, no markdown emphasis, no empties, no
duplicates (case and spacing ignored), each with a letter in it and at most
``max_words`` words (longer items are sentences of prose, not prompt fragments). When
nothing usable is found the answer is garbage and the result is ``None``; the caller
may re-ask.
"""
from __future__ import annotations

import re
from typing import Optional

from agents.prompt_parts import normalise

#: Items with more words than this are prose, not prompt fragments.
MAX_FRAGMENT_WORDS = 20
#: Items longer than this many characters are dropped for the same reason.
MAX_FRAGMENT_CHARS = 200

_FENCE_RE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_BULLET_RE = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*•+‣◦])\s+(.+?)\s*$")
_BOLD_HEAD_RE = re.compile(r"^\*\*(.+?)\*\*\s*[:\-–—]\s*\S")
_SENTENCE_BREAK_RE = re.compile(r"[.!?]\s+[A-Z]")
_EMPHASIS_RE = re.compile(r"(\*\*|__|\*|`)")
_QUOTES = "\"'`“”‘’«»"
_CLOSERS = {"[": "]", "{": "}", "(": ")"}
_MAX_NESTING = 4  # nested lists deeper than this are read as plain text (no unbounded recursion)
_ESCAPES = {"n": " ", "t": " ", "\\": "\\", "'": "'", '"': '"'}


def parse_fragments(text: Optional[str], max_words: int = MAX_FRAGMENT_WORDS) -> Optional[list[str]]:
    """The fragments listed in ``text``, in order, or ``None`` if it holds no usable list."""
    if not isinstance(text, str) or not text.strip():
        return None
    for block in _FENCE_RE.findall(text):
        found = _parse_unfenced(block, max_words)
        if found:
            return found
    return _parse_unfenced(_FENCE_RE.sub(" ", text) if "```" in text else text, max_words)


def _parse_unfenced(text: str, max_words: int) -> Optional[list[str]]:
    for extract in (_bracketed, _bulleted, _comma_separated):
        items = extract(text)
        if items:
            found = _clean_all(items, max_words)
            if found:
                return found
    return None


# --------------------------------------------------------------------------- shapes

def _bracketed(text: str) -> list[str]:
    """Items of the first ``[...]`` (or, failing that, ``{...}``) list.

    An unclosed list (an answer cut off by the token limit) runs to the end of the text,
    minus its last item, which is likely cut too.
    """
    for opener in ("[", "{"):
        start = text.find(opener)
        while start != -1:
            items, _ = _split_items(text, start + 1, _CLOSERS[opener])
            if any(i.strip() for i in items):
                return items
            start = text.find(opener, start + 1)
    return []


def _split_items(text: str, pos: int, closer: str, depth: int = 0) -> tuple[list[str], int]:
    """Split ``text[pos:]`` at top-level ',' / ';' up to ``closer``; return the items and the end position.

    Quoted items may hold separators; a nested list's items are flattened in place; a
    quoted item that never closes ends the list there.
    """
    items: list[str] = []
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            break
        ch = text[pos]
        if ch == closer:
            pos += 1
            break
        if ch in "[{" and depth < _MAX_NESTING:
            inner, pos = _split_items(text, pos + 1, _CLOSERS[ch], depth + 1)
            items.extend(inner)
        elif ch in _QUOTES and ch != "`":
            item, pos, ok = _read_quoted(text, pos)
            if not ok:
                return items, n
            items.append(item)
        else:
            item, pos = _read_bare(text, pos, closer)
            if pos >= n:  # unclosed list: the last bare item is probably cut off
                return items, n
            items.append(item)
        # between items: spaces, then a separator, the closer, or a new quoted item
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos < n and text[pos] in ",;":
            pos += 1
        elif pos < n and text[pos] != closer and text[pos] not in _QUOTES:
            _, pos = _read_bare(text, pos, closer)  # stray text after a quoted item: skip it
            if pos < n and text[pos] in ",;":
                pos += 1
    return items, pos


def _read_quoted(text: str, pos: int) -> tuple[str, int, bool]:
    quote = text[pos]
    closing = {"“": "”", "‘": "’", "«": "»"}.get(quote, quote)
    out, i, n = [], pos + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        if ch == closing:
            # An apostrophe inside a single-quoted item ("cat's") is only a close when
            # followed by a separator, the list's end or whitespace before one.
            rest = text[i + 1:].lstrip(" \t")
            if not rest or rest[0] in ",;]}\n":
                return "".join(out), i + 1, True
        out.append(ch)
        i += 1
    return "".join(out), n, False


def _read_bare(text: str, pos: int, closer: str) -> tuple[str, int]:
    depth, i, n = 0, pos, len(text)
    while i < n:
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}" and depth:
            depth -= 1
        elif depth == 0 and (ch in ",;" or ch == closer):
            break
        i += 1
    return text[pos:i], i


def _bulleted(text: str) -> list[str]:
    """Items of numbered or bulleted lines; "**head**: explanation" keeps only the bold head."""
    items = []
    for m in map(_BULLET_RE.match, text.splitlines()):
        if m:
            head = _BOLD_HEAD_RE.match(m.group(1))
            items.append(head.group(1) if head else m.group(1))
    return items


def _comma_separated(text: str) -> list[str]:
    """Bare phrases split at commas, semicolons and line breaks, after dropping preamble lines.

    Needs at least two phrases and no sentence breaks: a lone phrase or prose is not a list.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.endswith(":")]
    body = "\n".join(lines)
    if _SENTENCE_BREAK_RE.search(body):
        return []
    items = [p for p in re.split(r"[,;\n]", body) if p.strip()]
    return items if len(items) >= 2 else []


# --------------------------------------------------------------------------- cleaning

def _clean_all(items: list[str], max_words: int) -> list[str]:
    out, seen = [], set()
    for raw in items:
        frag = _clean(raw, max_words)
        if frag is None:
            continue
        key = normalise(frag)
        if key and key not in seen:
            seen.add(key)
            out.append(frag)
    return out


def _clean(raw: str, max_words: int) -> Optional[str]:
    text = _EMPHASIS_RE.sub("", raw)
    text = " ".join(text.split())
    # peel quotes and trailing punctuation repeatedly: '"soft light",' -> soft light
    prev = None
    while prev != text:
        prev = text
        text = text.strip().strip(_QUOTES + "[]{}").strip().rstrip(".,;:!").strip()
        if text.startswith(("- ", "* ", "• ")):
            text = text[2:]
    if not text or not any(c.isalpha() for c in text):
        return None
    if len(text) > MAX_FRAGMENT_CHARS or len(text.split()) > max_words:
        return None
    if text.lower() in {"etc", "...", "and so on", "python", "json"}:
        return None
    return text
