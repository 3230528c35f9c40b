"""The reverse prompt as two lists of fragments, content and style (thesis Table 4.1).

Keeping the parts apart lets a user edit the content or the style of a reverse prompt
for novel images (thesis §4.2.3, Appendix B3.5). The T2I model gets them joined into
one comma-separated string, content first; people get the labelled form
``Content: ... / Style: ...``.

Where a fragment belongs: in the enhanced framework the LLM proposes content and style
candidates in separate answers, so the part is known. In the vanilla framework the
LLM gives one list, and :func:`classify_fragment` sorts it with a small style
vocabulary taken from the thesis' style template (B.6: medium, art style, technique,
lighting, colours, resolution). That is a heuristic; a misfiled fragment only changes
where it is listed, not the rendered prompt's words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

Part = Literal["content", "style"]
PARTS: tuple[Part, ...] = ("content", "style")

# Words and phrases that mark a fragment as being about style (B.6's categories: medium,
# art style, technique, lighting, colours, resolution). Whole words only (a trailing
# plural "s" allowed), so "article" is not "art" and "lighthouse" is not "lighting";
# plain "light" is left out because it is as often a colour shade ("light blue").
STYLE_WORDS = (
    "art", "artistic", "artwork", "style", "styled", "stylized", "stylised", "painting", "painted",
    "painterly", "watercolor", "watercolour", "oil", "acrylic", "pastel", "sketch", "drawing", "drawn",
    "illustration", "illustrated", "illustrative", "render", "rendered", "rendering", "cgi", "3d",
    "digital", "photo", "photograph", "photography", "photographic", "photorealistic", "realistic",
    "realism", "hyperrealistic", "surreal", "surrealism", "impressionist", "impressionism",
    "expressionist", "cubist", "cubism", "minimalist", "minimalism", "abstract", "anime", "manga",
    "cartoon", "comic", "pixel", "vector", "engraving", "woodcut", "lithograph", "medium", "technique",
    "brushwork", "brushstroke", "stroke", "texture", "textured", "lighting", "lit", "backlit", "glow",
    "glowing", "shadow", "cinematic", "bokeh", "exposure", "contrast", "saturated", "vibrant", "muted",
    "monochrome", "monochromatic", "sepia", "color", "colour", "colorful", "colourful", "palette", "hue",
    "tone", "tonal", "warm", "cool", "mood", "moody", "atmosphere", "atmospheric", "aesthetic",
    "resolution", "detailed", "4k", "8k", "hd", "sharp", "blur", "blurry", "grain", "grainy", "film",
    "vintage", "retro", "composition", "perspective", "baroque", "renaissance", "gothic", "whimsical",
    "fantastical", "dreamy", "ethereal", "dramatic", "graphic",
    "depth of field", "black and white", "soft focus", "high detail",
)
_STYLE_RE = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in sorted(STYLE_WORDS, key=len, reverse=True)) + r")s?(?!\w)")
# A "Content:" / "Style:" label at the start of the text or of a line, or after spaces.
# Each space run is scanned from its start only: "^\s*label" tried at every line start of
# a run of blank lines, and "\s*[,;\n]" at every space of a run, were quadratic in the run.
_LABEL_RE = re.compile(r"(?im)(?:\A\s*|^|(?<=\S)\s+)(content|style)\s*:\s*")
# Fragments are split at these; the spaces around them go with _split's whitespace collapse.
_SPLIT_RE = re.compile(r"[,;\n]")


def normalise(text: str) -> str:
    """Key for comparing fragments: case-folded, inner whitespace collapsed, edge punctuation dropped."""
    return " ".join(text.casefold().split()).strip(" .,;:!?\"'`")


def classify_fragment(text: str) -> Part:
    """'style' when the fragment names a medium, art style, technique, lighting, colour or mood; else 'content'."""
    return "style" if _STYLE_RE.search(text.casefold()) else "content"


@dataclass(frozen=True)
class Fragment:
    """One candidate or accepted piece of prompt and the part it belongs to."""

    text: str
    part: Part

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"fragment part must be 'content' or 'style', got {self.part!r}")
        if not self.text.strip():
            raise ValueError("fragment text is empty")

    def to_dict(self) -> dict:
        return {"text": self.text, "part": self.part}

    @classmethod
    def from_dict(cls, data: dict) -> "Fragment":
        return cls(text=data["text"], part=data["part"])


@dataclass(frozen=True)
class PromptParts:
    """A reverse prompt: content fragments and style fragments, each in the order added."""

    content: tuple[str, ...] = ()
    style: tuple[str, ...] = ()

    def render(self) -> str:
        """The text the T2I model and the CLIP scorer see: all fragments, content first, comma-joined."""
        return ", ".join((*self.content, *self.style))

    def labelled(self) -> str:
        """The thesis' Table 4.1 form, for people: ``Content: ...`` and ``Style: ...`` lines."""
        return f"Content: {', '.join(self.content)}\nStyle: {', '.join(self.style)}"

    def plus(self, fragments: Iterable[Fragment]) -> "PromptParts":
        """P + ΔP: the fragments appended to their parts, in order."""
        content, style = list(self.content), list(self.style)
        for frag in fragments:
            (content if frag.part == "content" else style).append(frag.text)
        return PromptParts(tuple(content), tuple(style))

    def contains(self, text: str) -> bool:
        """Whether an equal fragment (see :func:`normalise`) is already in the prompt."""
        key = normalise(text)
        return any(normalise(f) == key for f in (*self.content, *self.style))

    @classmethod
    def from_lists(cls, content: Sequence[str], style: Sequence[str]) -> "PromptParts":
        return cls(tuple(content), tuple(style))

    @classmethod
    def from_caption(cls, caption: str) -> "PromptParts":
        """A captioner's caption describes what is in the image: one content fragment."""
        text = " ".join(caption.split())
        if not text:
            raise ValueError("the caption is empty")
        return cls(content=(text,))

    @classmethod
    def from_text(cls, text: str) -> "PromptParts":
        """Parse a user's prompt: the labelled Table 4.1 form, or plain comma-separated fragments.

        Labelled text (``Content: a, b Style: c``) keeps its parts; in plain text each
        comma-, semicolon- or line-separated fragment is sorted by :func:`classify_fragment`.
        """
        if not text or not text.strip():
            raise ValueError("the initial prompt is empty")
        pieces = _LABEL_RE.split(text)
        if len(pieces) > 1:
            return cls._from_labelled(pieces)
        content, style = [], []
        for frag in _split(text):
            (style if classify_fragment(frag) == "style" else content).append(frag)
        return cls(tuple(content), tuple(style))

    @classmethod
    def _from_labelled(cls, pieces: list) -> "PromptParts":
        # re.split with one group yields: lead, label, text, label, text, ...
        lead, rest = pieces[0], pieces[1:]
        parts: dict[str, list[str]] = {"content": _split(lead), "style": []}
        for i in range(0, len(rest), 2):
            # casefold, not lower: the case-blind regex also matches "ſtyle" (long s)
            parts[rest[i].casefold()].extend(_split(rest[i + 1]))
        if not parts["content"] and not parts["style"]:
            raise ValueError("the initial prompt has Content:/Style: labels but no fragments")
        return cls(tuple(parts["content"]), tuple(parts["style"]))


def _split(text: str) -> list[str]:
    out, seen = [], set()
    for piece in _SPLIT_RE.split(text or ""):
        frag = " ".join(piece.split()).strip(" .")
        if frag and normalise(frag) not in seen:
            seen.add(normalise(frag))
            out.append(frag)
    return out
