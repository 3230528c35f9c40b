"""Editing a reverse prompt for novel images (thesis §4.2.3, Figures 4.4 and B.13/B.14).

Three edits, all pure functions:

- replace the content part (what is in the image) and keep the style, or the reverse;
- substitute words: ``-dog +cat`` replaces every instance of the word "dog" with "cat"
  (Figure B.14's "- Dog + Cat"). Whole words only, so ``-cat +dog`` leaves "category"
  alone; matching ignores case and the replacement follows the case of what it
  replaces ("Dog" -> "Cat", "DOG" -> "CAT"). Several pairs apply at once, so
  ``-cat +dog -dog +cat`` swaps the two; phrases of several words are allowed, quoted
  or not (``-"golden retriever" +"tabby cat"`` or ``-golden retriever +tabby cat``).
  Plural or other inflected forms are different words: write a pair for each
  (``-dogs +cats``).

The spec grammar, parsed by :func:`parse_substitutions` (never evaluated)::

    spec  := pair ( [,;] pair )*
    pair  := '-' phrase '+' phrase
    phrase:= "quoted text" | 'quoted text' | words up to the next ' +' / ' -' marker
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

from agents.prompt_parts import PromptParts


#: Limits of one edit (the page refuses larger ones naming the limit; a prompt is at most a few hundred
#: characters, so these leave room). Applying an edit costs the prompt's length times its pairs.
MAX_PART_CHARS = 2000  # new content or new style
MAX_SPEC_CHARS = 4000  # the substitution spec
MAX_PAIRS = 64  # substitutions in one spec


class EditSpecError(ValueError):
    """An edit spec could not be parsed; the message quotes the spec and says where and why."""


@dataclass(frozen=True)
class Substitution:
    """Replace every whole-word occurrence of ``old`` (any case) with ``new``."""

    old: str
    new: str

    def __post_init__(self):
        if not self.old.strip():
            raise EditSpecError("the word to replace is empty")
        if not self.new.strip():
            raise EditSpecError(f"the replacement for {self.old!r} is empty (to drop a part, replace the content or style instead)")


@dataclass(frozen=True)
class PromptEdit:
    """One edit of a reverse prompt: optional new content, optional new style, substitutions."""

    content: Optional[str] = None
    style: Optional[str] = None
    substitutions: tuple[Substitution, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.content is None and self.style is None and not self.substitutions:
            raise EditSpecError("the edit changes nothing: give new content, new style or word substitutions")
        for name in ("content", "style"):
            value = getattr(self, name)
            if value is not None and not split_fragments(value):
                raise EditSpecError(f"the new {name} is empty")

    def describe(self) -> str:
        """A short human-readable label, e.g. ``-dog +cat; style: oil painting``."""
        bits = [" ".join(f"-{_quote(s.old)} +{_quote(s.new)}" for s in self.substitutions)] if self.substitutions else []
        if self.content is not None:
            bits.append(f"content: {self.content}")
        if self.style is not None:
            bits.append(f"style: {self.style}")
        return "; ".join(bits)


def _quote(phrase: str) -> str:
    return f'"{phrase}"' if " " in phrase or phrase[:1] in "+-" else phrase


# --------------------------------------------------------------------------- parsing

_SEPARATORS = " \t\r\n,;"


def parse_substitutions(spec: str, max_chars: Optional[int] = MAX_SPEC_CHARS,
                        max_pairs: Optional[int] = MAX_PAIRS) -> tuple[Substitution, ...]:
    """``-old +new [-old2 +new2 ...]`` -> substitutions (see the module docstring); linear in the spec's length.

    ``max_chars`` / ``max_pairs`` (None: no limit) refuse a longer spec, naming the limit."""
    if not isinstance(spec, str) or not spec.strip():
        raise EditSpecError("the substitution spec is empty; expected e.g. '-dog +cat'")
    if max_chars is not None and len(spec) > max_chars:
        raise EditSpecError(f"the substitution spec has {len(spec)} characters; at most {max_chars}")
    pairs, pos = [], 0
    while True:
        pos = _skip(spec, pos, _SEPARATORS)
        if pos >= len(spec):
            break
        if max_pairs is not None and len(pairs) == max_pairs:
            raise EditSpecError(f"the substitution spec has more than {max_pairs} pairs; at most {max_pairs}")
        old, pos = _phrase(spec, pos, "-", stop="+")
        pos = _skip(spec, pos, " \t\r\n")
        new, pos = _phrase(spec, pos, "+", stop="-")
        pairs.append(Substitution(old, new))
    counts = Counter(p.old.casefold() for p in pairs)
    dupes = sorted(w for w, n in counts.items() if n > 1)
    if dupes:
        raise EditSpecError(f"{spec!r}: {', '.join(map(repr, dupes))} is replaced twice")
    return tuple(pairs)


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


_OLD_END = re.compile(r"(?<!\s)\s+\+")
_NEW_END = re.compile(r"(?<!\s)\s+-|(?<!\s)\s*[,;]")


def _phrase(spec: str, pos: int, marker: str, stop: str) -> tuple[str, int]:
    """Read ``marker phrase`` at ``pos``; an unquoted phrase ends before whitespace + ``stop``."""
    what = "word to replace" if marker == "-" else "replacement"
    if pos >= len(spec) or spec[pos] != marker:
        found = repr(spec[pos]) if pos < len(spec) else "the end"
        raise EditSpecError(f"{spec!r}: expected '{marker}' before the {what} at position {pos}, found {found}")
    pos = _skip(spec, pos + 1, " \t")
    if pos < len(spec) and spec[pos] in "\"'":
        quote = spec[pos]
        end = spec.find(quote, pos + 1)
        if end == -1:
            raise EditSpecError(f"{spec!r}: unterminated {quote} quote starting at position {pos}")
        phrase, pos = spec[pos + 1:end], end + 1
        if pos < len(spec) and spec[pos] not in _SEPARATORS:
            raise EditSpecError(f"{spec!r}: unexpected {spec[pos]!r} after the closing quote at position {pos}")
    else:
        # Unquoted: up to whitespace followed by the next marker (or ',' / ';' for the replacement).
        # Each run of whitespace is tried from its first character only (the look-behind):
        # a search from every position inside a long run would make this quadratic.
        match = (_OLD_END if stop == "+" else _NEW_END).search(spec, pos)
        end = match.start() if match else len(spec)
        phrase, pos = spec[pos:end], end
    phrase = " ".join(phrase.split())
    if not phrase:
        raise EditSpecError(f"{spec!r}: the {what} after '{marker}' is empty")
    return phrase, pos


# --------------------------------------------------------------------------- applying

def _phrase_pattern(old: str) -> str:
    # Whole words: not preceded or followed by a word character; inner spaces match any whitespace.
    body = r"\s+".join(re.escape(w) for w in old.split())
    return rf"(?<!\w){body}(?!\w)"


def match_case(replacement: str, matched: str, typed_old: str = "") -> str:
    """``replacement`` in the case pattern of the ``matched`` text.

    ALL CAPS stays all caps and a Capitalised word gives a Capitalised replacement. For
    a lower-case match the replacement is kept as typed (a proper noun stays
    capitalised), except when the user capitalised both phrases (Figure B.14's
    "- Dog + Cat"): then the capital is only the spec's typography and is dropped.
    """
    letters = [c for c in matched if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return replacement.upper()
    if matched[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    if typed_old[:1].isupper() and replacement[:1].isupper():
        return replacement[:1].lower() + replacement[1:]
    return replacement


def substitute_words(text: str, substitutions: Sequence[Substitution]) -> str:
    """Apply every substitution at once (longest phrase first where they overlap)."""
    if not substitutions:
        return text
    ordered = sorted(substitutions, key=lambda s: len(s.old), reverse=True)
    regex = re.compile("|".join(f"(?P<s{i}>{_phrase_pattern(s.old)})" for i, s in enumerate(ordered)), re.IGNORECASE)

    def replace(match: re.Match) -> str:
        sub = ordered[int(match.lastgroup[1:])]
        return match_case(sub.new, match.group(0), sub.old)

    return regex.sub(replace, text)


def split_fragments(text: str) -> tuple[str, ...]:
    """A user's comma/semicolon/newline-separated part text -> its fragments, whitespace tidied."""
    return tuple(f for f in (" ".join(p.split()).strip(" .") for p in re.split(r"[,;\n]", text or "")) if f)


def apply_edit(parts: PromptParts, edit: PromptEdit) -> PromptParts:
    """The edited prompt: substitutions in both parts, then the replaced part(s) as given."""
    content = tuple(substitute_words(f, edit.substitutions) for f in parts.content)
    style = tuple(substitute_words(f, edit.substitutions) for f in parts.style)
    if edit.content is not None:
        content = split_fragments(edit.content)
    if edit.style is not None:
        style = split_fragments(edit.style)
    return PromptParts(content, style)


def parts_of_record(record: dict) -> PromptParts:
    """The best prompt of a batch result record (``result.json``) as content and style parts."""
    prompt = record.get("prompt") or record.get("final")
    if record.get("status") != "done" or not isinstance(prompt, dict):
        raise ValueError(f"result {record.get('source') or record.get('image_id')!r} has no finished prompt (status {record.get('status')!r})")
    content, style = prompt.get("content") or [], prompt.get("style") or []
    content = split_fragments(content) if isinstance(content, str) else tuple(content)
    style = split_fragments(style) if isinstance(style, str) else tuple(style)
    if not content and not style:
        raise ValueError(f"result {record.get('source')!r}: the prompt has neither content nor style")
    return PromptParts(content, style)
