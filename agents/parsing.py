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

Cost: linear in the answer's length, whatever it holds, and the answer is cut to
:data:`MAX_ANSWER_CHARS` first. The parser runs on the event loop every optimisation
shares (agents.chat_steps), so an adversarial or runaway answer must not be able to
stall it: no regex here can backtrack over a run more than once, and the search for a
bracketed list, which retries at later brackets when one yields nothing, finds where
each item ends in look-up tables instead of re-reading the text
(benchmarks/parser_linear.py measures it).
"""
from __future__ import annotations

import logging
import re
from bisect import bisect_left
from typing import Optional

from agents.prompt_parts import normalise

log = logging.getLogger(__name__)

#: Items with more words than this are prose, not prompt fragments.
MAX_FRAGMENT_WORDS = 20
#: Items longer than this many characters are dropped for the same reason.
MAX_FRAGMENT_CHARS = 200
#: Longer answers are cut to this many characters before parsing (with a warning). An
#: answer is at most llm.sampling.max_new_tokens tokens (at most 8192, default 512) at
#: ~4 characters a token: ~32 KiB at the very most, so 64 KiB cuts no real answer, and
#: bounds the worst adversarial parse to ~0.25 s of CPU (3.6 us a character; real answers
#: take ~0.02 us: docs/benchmarks.md, "Parser: linear time").
MAX_ANSWER_CHARS = 64 * 1024

_FENCE_RE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.DOTALL)  # one forward scan per fence
# A bullet or number and the spaces after it; the item is the rest of the line, right-stripped.
# (Matching the item inside the regex, "(.+?)\s*$", backtracked over every space run: quadratic.)
_BULLET_RE = re.compile(r"\s*(?:\(?\d{1,3}[.):]|[-*•+‣◦])\s+")
# Linear despite the lazy group: it can only stop at a "**", and the spaces scanned after
# one "**" end before the next.
_BOLD_HEAD_RE = re.compile(r"^\*\*(.+?)\*\*\s*[:\-–—]\s*\S")
_SENTENCE_BREAK_RE = re.compile(r"[.!?]\s+[A-Z]")
_EMPHASIS_RE = re.compile(r"(\*\*|__|\*|`)")
_QUOTES = "\"'`“”‘’«»"
_CLOSING_QUOTE = {"“": "”", "‘": "’", "«": "»"}
_CLOSERS = {"[": "]", "{": "}", "(": ")"}
_MAX_NESTING = 4  # nested lists deeper than this are read as plain text (no unbounded recursion)
_ESCAPES = {"n": " ", "t": " ", "\\": "\\", "'": "'", '"': '"'}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_SPACES_RE = re.compile(r"[ \t\r\n]*")
_BRACKET_OR_SEPARATOR_RE = re.compile(r"[()\[\]{},;]")
# What may follow a closing quote for it to end the item: nothing, or spaces and a separator.
_CLOSE_FOLLOWS_RE = re.compile(r"[ \t]*(?:[,;\]}\n]|\Z)")
#: The bracket search gives up (finds no bracketed list) after this much work per character
#: of the answer (a unit: one item or separator read, or one character skipped or copied).
#: Real answers need 1-3; the worst adversarial text found by fuzzing needs ~13 (each empty
#: item re-read by up to five retries). The bound makes linear time a guarantee rather than
#: an argument about which retries can overlap.
_WORK_PER_CHAR = 32


def parse_fragments(
    text: Optional[str], max_words: int = MAX_FRAGMENT_WORDS, max_chars: int = MAX_ANSWER_CHARS,
) -> Optional[list[str]]:
    """The fragments listed in ``text``, in order, or ``None`` if it holds no usable list.

    Only the first ``max_chars`` characters are read (see :data:`MAX_ANSWER_CHARS`).
    """
    if not isinstance(text, str):
        return None
    text = _capped(text, max_chars)
    if not text.strip():
        return None
    for block in _FENCE_RE.findall(text):
        found = _parse_unfenced(block, max_words)
        if found:
            return found
    return _parse_unfenced(_FENCE_RE.sub(" ", text) if "```" in text else text, max_words)


def _capped(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    # A cut list reads like one cut by the token limit: its last item is dropped.
    log.warning("LLM answer of %d characters cut to its first %d before parsing", len(text), max_chars)
    return text[:max_chars]


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
    """Items of the first ``[...]`` (or, failing that, ``{...}``) list that has any.

    An unclosed list (an answer cut off by the token limit) runs to the end of the text,
    minus its last item, which is likely cut too. A list with only empty items (``[]``,
    ``["", " "]``) does not count: the search goes on at the next bracket.
    """
    answer = _Answer(text)
    try:
        for opener in ("[", "{"):
            start = text.find(opener)
            while start != -1:
                if start not in answer.empty_lists:
                    items, _ = _split_items(answer, start + 1, _CLOSERS[opener])
                    if any(i.strip() for i in items):
                        return items
                start = text.find(opener, start + 1)
    except _OutOfWork:
        log.debug("bracketed-list search given up on a %d-character answer", len(text))
    return []


def _split_items(answer: "_Answer", pos: int, closer: str, depth: int = 0) -> tuple[list[str], int]:
    """Split the text from ``pos`` at top-level ',' / ';' up to ``closer``; return the items and the end position.

    Quoted items may hold separators; a nested list's items are flattened in place; a
    quoted item that never closes ends the list there.
    """
    text, n = answer.text, answer.n
    items: list[str] = []
    while pos < n:
        answer.spend(1)
        pos = answer.skip_spaces(pos)
        if pos >= n:
            break
        ch = text[pos]
        if ch == closer:
            pos += 1
            break
        if ch in "[{" and depth < _MAX_NESTING:
            inner, end = _split_items(answer, pos + 1, _CLOSERS[ch], depth + 1)
            if end < n and not any(i.strip() for i in inner):
                # It closed with only empty items, so no bracket inside it met the depth limit
                # (that is read as a non-empty bare item): a search starting at this bracket
                # would read the same empty list, and can be skipped.
                answer.empty_lists.add(pos)
            items.extend(inner)
            pos = end
        elif ch in _QUOTES and ch != "`":
            item, pos, ok = answer.read_quoted(pos)
            if not ok:
                return items, n
            items.append(item)
        else:
            end = answer.bare_end(pos, closer)
            if end >= n:  # unclosed list: the last bare item is probably cut off
                return items, n
            items.append(text[pos:end])
            answer.spend(end - pos)
            pos = end
        # between items: spaces, then a separator, the closer, or a new quoted item
        pos = answer.skip_spaces(pos)
        if pos < n and text[pos] in ",;":
            pos += 1
        elif pos < n and text[pos] != closer and text[pos] not in _QUOTES:
            pos = answer.bare_end(pos, closer)  # stray text after a quoted item: skip it
            if pos < n and text[pos] in ",;":
                pos += 1
    return items, pos


class _OutOfWork(Exception):
    """The bracket search spent its budget (see _WORK_PER_CHAR)."""


class _Answer:
    """The text searched for a bracketed list, with what makes every read of an item O(log n).

    A search retries at each later bracket while the lists found are empty, and each
    retry may read the same stretch of text as the one before (``[[[[...`` is read once
    per bracket). Scanning for where an item ends was therefore quadratic; here it is a
    look-up in positions found once, in one pass over the text.
    """

    def __init__(self, text: str):
        self.text, self.n = text, len(text)
        self.empty_lists: set[int] = set()  # starts of nested lists known to hold only empty items
        self._work_left = _WORK_PER_CHAR * self.n + 1024
        self._stops: Optional[list[int]] = None  # positions of ( ) [ ] { } , ;
        self._bare_ends: dict[str, list[int]] = {}
        self._quote_ends: dict[str, list[int]] = {}

    def spend(self, work: int) -> None:
        self._work_left -= work
        if self._work_left < 0:
            raise _OutOfWork

    def skip_spaces(self, pos: int) -> int:
        if pos >= self.n or self.text[pos] not in " \t\r\n":
            return pos
        end = _SPACES_RE.match(self.text, pos).end()
        self.spend(end - pos)
        return end

    def bare_end(self, pos: int, closer: str) -> int:
        """Where an unquoted item starting at ``pos`` ends: at the first ',', ';' or ``closer``
        outside brackets it opened, or at the end of the text."""
        if closer not in self._bare_ends:
            self._bare_ends[closer] = self._find_bare_ends(closer)
        return self._bare_ends[closer][bisect_left(self._stops, pos)]

    def read_quoted(self, pos: int) -> tuple[str, int, bool]:
        """The quoted item opening at ``pos`` (escapes resolved), the position after it, and
        whether it closes at all."""
        closing = _CLOSING_QUOTE.get(self.text[pos], self.text[pos])
        if closing not in self._quote_ends:
            self._quote_ends[closing] = self._find_quote_ends(closing)
        ends = self._quote_ends[closing]
        k = bisect_left(ends, pos + 1)
        if k == len(ends):
            return "", self.n, False
        end = ends[k]
        self.spend(end - pos)
        return _ESCAPE_RE.sub(_unescape, self.text[pos + 1:end]), end + 1, True

    def _find_bare_ends(self, closer: str) -> list[int]:
        """For each bracket/separator position (and one past the last), where a bare item
        starting there (or anywhere after the previous one) ends.

        Reading a bare item counts brackets and stops at a separator or ``closer`` at depth
        0; a closer at depth 0 that is not ``closer`` is text. Between two bracket/separator
        positions nothing changes, so only those positions need an answer; an opening bracket
        hands on the answer of the position after its match (everything in between is deeper).
        """
        if self._stops is None:
            self._stops = [m.start() for m in _BRACKET_OR_SEPARATOR_RE.finditer(self.text)]
        stops, text = self._stops, self.text
        match = _matching_brackets(text, stops)
        ends = [self.n] * (len(stops) + 1)
        for k in range(len(stops) - 1, -1, -1):
            ch = text[stops[k]]
            if ch in ",;" or ch == closer:
                ends[k] = stops[k]
            elif ch in "([{":
                ends[k] = ends[match[k] + 1] if match[k] >= 0 else self.n
            else:  # a closer with nothing open: plain text
                ends[k] = ends[k + 1]
        return ends

    def _find_quote_ends(self, closing: str) -> list[int]:
        """Positions where a quoted item can close with ``closing``: the quote is not escaped
        (an even run of backslashes before it) and what follows is the end of the text or
        spaces and a separator (an apostrophe in "cat's" is not a close).

        Whether a backslash escapes the quote does not depend on where the item opened: the
        opening quote is not a backslash, so a run of them lies wholly inside the item.
        """
        text, ends = self.text, []
        pos = text.find(closing)
        while pos != -1:
            back = pos
            while back > 0 and text[back - 1] == "\\":
                back -= 1
            if (pos - back) % 2 == 0 and _CLOSE_FOLLOWS_RE.match(text, pos + 1):
                ends.append(pos)
            pos = text.find(closing, pos + 1)
        return ends


def _matching_brackets(text: str, stops: list[int]) -> list[int]:
    """For each position in ``stops`` holding an opening bracket, the index (in ``stops``) of
    the closing bracket of any kind that brings the depth back, or -1 if none does."""
    match = [-1] * len(stops)
    open_ = []
    for k, pos in enumerate(stops):
        ch = text[pos]
        if ch in "([{":
            open_.append(k)
        elif ch in ")]}" and open_:
            match[open_.pop()] = k
    return match


def _unescape(m: re.Match) -> str:
    return _ESCAPES.get(m.group(1), m.group(1))


def _bulleted(text: str) -> list[str]:
    """Items of numbered or bulleted lines; "**head**: explanation" keeps only the bold head."""
    items = []
    for line in text.splitlines():
        m = _BULLET_RE.match(line)
        item = line[m.end():].rstrip() if m else ""
        if item:
            head = _BOLD_HEAD_RE.match(item)
            items.append(head.group(1) if head else item)
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

_EDGE_CHARS = frozenset(_QUOTES + "[]{}")
_TRAILING_PUNCTUATION = frozenset(".,;:!")
_LEADING_BULLETS = ("- ", "* ", "• ")


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
    text = _peeled(" ".join(text.split()))
    if not text or not any(c.isalpha() for c in text):
        return None
    if len(text) > MAX_FRAGMENT_CHARS or len(text.split()) > max_words:
        return None
    if text.lower() in {"etc", "...", "and so on", "python", "json"}:
        return None
    return text


def _peeled(text: str) -> str:
    """Quotes, brackets, trailing punctuation and leading "- " peeled off repeatedly:
    '"soft light",' -> soft light; '- "- x"' -> x.

    The span is narrowed in place, so peeling k layers costs k steps, not k copies of the
    text (``- - - - ...`` was quadratic).
    """
    lo, hi = 0, len(text)
    while True:
        before = (lo, hi)
        lo, hi = _narrowed(text, lo, hi, str.isspace)
        lo, hi = _narrowed(text, lo, hi, _EDGE_CHARS.__contains__)
        lo, hi = _narrowed(text, lo, hi, str.isspace)
        _, hi = _narrowed(text, lo, hi, _TRAILING_PUNCTUATION.__contains__, left=False)
        lo, hi = _narrowed(text, lo, hi, str.isspace)
        if text.startswith(_LEADING_BULLETS, lo, hi):
            lo += 2
        if (lo, hi) == before:
            return text[lo:hi]


def _narrowed(text: str, lo: int, hi: int, strip, left: bool = True) -> tuple[int, int]:
    """``text[lo:hi]`` stripped of the characters ``strip`` accepts (as str.strip does), as a span."""
    while left and lo < hi and strip(text[lo]):
        lo += 1
    while hi > lo and strip(text[hi - 1]):
        hi -= 1
    return lo, hi
