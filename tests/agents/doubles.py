"""Deterministic scripted doubles of the five model roles, for agent tests only.

They share a :class:`World`: the hidden truth of which prompt fragments bring an image
closer to the reference. The T2I double paints a pseudo-random image per (prompt, seed)
and remembers which prompt made which pixels, so the CLIP double can score a generated
image by the prompt behind it, and the VLM double can say which image it was shown.
Every double counts its calls per method and can be told to fail at the n-th call of a
method (to interrupt a run), and the chat doubles keep every conversation they got.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Callable, Optional, Sequence

import numpy as np

from actors.roles import Roles
from agents import prompts


class InjectedFailure(RuntimeError):
    """Raised by a double at a scripted call, standing in for a crashed model."""


def _key(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def fragment_sum(weights: dict[str, float], unknown: float = 0.0) -> Callable[[str], float]:
    """Score = sum over the rendered prompt's comma-separated fragments of their weight (unknown ones: ``unknown``)."""
    def score(text: str) -> float:
        return sum(weights.get(f.strip(), unknown) for f in text.split(",") if f.strip())
    return score


class World:
    """The reference image and how close any prompt (as text) or generated image gets to it."""

    def __init__(self, text_gain: Callable[[str], float], image_gain: Optional[Callable[[str], float]] = None,
                 base_text: float = 0.20, base_image: float = 0.50, seed_effect: float = 0.001, size: int = 16,
                 negative_gain: Optional[Callable[[str], float]] = None):
        self.text_gain = text_gain
        self.image_gain = image_gain or text_gain
        self.negative_gain = negative_gain or (lambda text: 0.0)  # CLIP-I change of a negative prompt
        self.base_text, self.base_image, self.seed_effect, self.size = base_text, base_image, seed_effect, size
        self.reference = self.paint("<<reference>>", 0)
        self._origin: dict[str, tuple[str, int]] = {}

    def paint(self, prompt: str, seed: int) -> np.ndarray:
        digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return rng.integers(0, 256, size=(self.size, self.size, 3), dtype=np.uint8)

    def generate(self, prompt: str, seed: int) -> np.ndarray:
        image = self.paint(prompt, seed)
        self._origin[_key(image)] = (prompt, seed)
        return image

    def origin(self, image: np.ndarray) -> tuple[str, int]:
        """(prompt, seed) that made ``image``; ('<<reference>>', 0) for the reference."""
        if np.array_equal(image, self.reference):
            return ("<<reference>>", 0)
        return self._origin[_key(image)]

    def text_score(self, text: str) -> float:
        return self.base_text + self.text_gain(text)

    def image_score(self, prompt: str, seed: int) -> float:
        prompt, mark, negative = prompt.partition(NEGATIVE_MARK)
        return (self.base_image + self.image_gain(prompt) + (self.negative_gain(negative) if mark else 0.0)
                + self.seed_effect * seed)


#: How the doubles' T2I names an image generated with a negative prompt: "<prompt> -- negative: <negative>".
NEGATIVE_MARK = " -- negative: "


class Scripted:
    """Call counting and failure injection: ``fail_at={"generate": 2}`` fails the 2nd generate call, once."""

    def __init__(self, fail_at: Optional[dict[str, int]] = None):
        self.calls: Counter = Counter()
        self.attempts: Counter = Counter()
        self.fail_at = dict(fail_at or {})

    def _tick(self, method: str) -> None:
        self.attempts[method] += 1
        if self.fail_at.get(method) == self.attempts[method]:
            del self.fail_at[method]
            raise InjectedFailure(f"scripted failure at call {self.attempts[method]} of {type(self).__name__}.{method}")
        self.calls[method] += 1


class ScriptedT2I(Scripted):
    def __init__(self, world: World, token_limit: int = 77, **kw):
        super().__init__(**kw)
        self.world = world
        self.token_limit = token_limit
        self.prompts: list[str] = []
        self.negatives: list[str] = []
        self.token_batches: list[list[str]] = []

    async def generate(self, prompt: str, seeds: Sequence[int], negative_prompt: Optional[str] = None) -> list[np.ndarray]:
        self._tick("generate")
        self.prompts.append(prompt)
        if negative_prompt is not None:
            self.negatives.append(negative_prompt)
            prompt = f"{prompt}{NEGATIVE_MARK}{negative_prompt}"
        return [self.world.generate(prompt, s) for s in seeds]

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self._tick("count_tokens")
        self.token_batches.append(list(texts))
        return [count_tokens(t) for t in texts]

    async def prompt_budget(self) -> dict:
        return {"tokenizer": "tokenizer", "encoder": "CLIP", "limit": self.token_limit, "special": 2,
                "max_sequence_length": None, "note": f"scripted double: a CLIP-like count, {self.token_limit} tokens"}


def count_tokens(text: str) -> int:
    """A CLIP-like count: every word and every punctuation mark is a token."""
    return len(re.findall(r"\w+|[^\w\s]", text))


class ScriptedClip(Scripted):
    def __init__(self, world: World, **kw):
        super().__init__(**kw)
        self.world = world
        self.text_batches: list[list[str]] = []
        self.keys: set = set()

    def _check_reference(self, image: np.ndarray) -> None:
        assert np.array_equal(image, self.world.reference), "CLIP double was given something other than the reference"

    async def text_image_scores(self, texts, image, image_key=None) -> list[float]:
        self._tick("text_image_scores")
        self._check_reference(image)
        self.keys.add(image_key)
        self.text_batches.append(list(texts))
        return [self.world.text_score(t) for t in texts]

    async def image_image_scores(self, images, reference, reference_key=None) -> list[float]:
        self._tick("image_image_scores")
        self._check_reference(reference)
        self.keys.add(reference_key)
        return [self.world.image_score(*self.world.origin(img)) for img in images]


class ScriptedCaptioner(Scripted):
    def __init__(self, world: World, caption: str = "a black and white cat", **kw):
        super().__init__(**kw)
        self.world, self.caption_text = world, caption

    async def caption(self, image) -> str:
        self._tick("caption")
        assert np.array_equal(image, self.world.reference)
        return self.caption_text


def _text_of(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p["type"] == "text")


def _images_of(message: dict) -> list[np.ndarray]:
    content = message["content"]
    return [] if isinstance(content, str) else [p["image"] for p in content if p["type"] == "image"]


_PROPOSE_RE = re.compile(r"incorporate the following (content |style )?differences")


class ScriptedVLM(Scripted):
    """Describes an image by naming the prompt behind it; compares two images the same way."""

    def __init__(self, world: World, **kw):
        super().__init__(**kw)
        self.world = world
        self.described: list[tuple[str, str]] = []  # (aspect, prompt of the image)
        self.conversations: list[list[dict]] = []

    async def chat(self, messages, sampling=None) -> str:
        self._tick("chat")
        self.conversations.append(list(messages))
        text, images = _text_of(messages[-1]), _images_of(messages[-1])
        names = [self.world.origin(img)[0] for img in images]
        if text == prompts.DESCRIBE_CONTENT or text == prompts.DESCRIBE_STYLE:
            assert len(images) == 1
            aspect = "content" if text == prompts.DESCRIBE_CONTENT else "style"
            self.described.append((aspect, names[0]))
            return f"The {aspect} of the image made from: {names[0]}"
        if text == prompts.COMPARE_IMAGES:
            assert len(images) == 2 and names[0] == "<<reference>>", names
            return f"Image 1 is the reference; Image 2 was made from: {names[1]}"
        if text == prompts.NEGATIVE_EXTRAS:
            assert len(images) == 2 and names[0] == "<<reference>>", names
            return f"Image 2 has extras; it was made from: {names[1]}"
        raise AssertionError(f"unexpected VLM request: {text[:80]!r}")


class ScriptedLLM(Scripted):
    """Answers difference requests with a fixed text and proposal requests from per-aspect queues.

    ``replies`` maps an aspect ("content", "style", or None for vanilla) to the answers
    to give, in order, to proposal requests of that aspect (re-asks included). Like a
    seeded model, the same conversation always gets the same answer: a repeated request
    (a node re-run after a crash) is answered from memory, not from the queue.
    """

    def __init__(self, replies: dict[Optional[str], list[str]], **kw):
        super().__init__(**kw)
        self.replies = {k: list(v) for k, v in replies.items()}
        self.conversations: list[list[dict]] = []
        self.proposals_asked: Counter = Counter()
        self._answered: dict[str, str] = {}

    async def chat(self, messages, sampling=None) -> str:
        self._tick("chat")
        self.conversations.append(list(messages))
        first = _text_of(messages[0])
        if first.startswith(prompts.LIST_DIFFERENCES.split("{")[0]):
            aspect = "content" if "the content of Image 1" in first else "style"
            return f"{aspect} differences: Image 2 lacks what Image 1 has"
        if first.startswith(prompts.NEGATIVE_FRAGMENTS.split("{")[0]):
            self.proposals_asked["negative"] += 1
            queue = self.replies.get("negative")
            assert queue, "LLM script for negative fragments is exhausted"
            return queue.pop(0)
        match = _PROPOSE_RE.search(first)
        if match:
            aspect = match.group(1).strip() if match.group(1) else None
            self.proposals_asked[aspect] += 1
            key = repr([(m["role"], _text_of(m)) for m in messages])
            if key not in self._answered:
                queue = self.replies.get(aspect)
                assert queue, f"LLM script for aspect {aspect!r} is exhausted"
                self._answered[key] = queue.pop(0)
            return self._answered[key]
        raise AssertionError(f"unexpected LLM request: {first[:80]!r}")


def make_roles(world: World, llm_replies: dict[Optional[str], list[str]], caption: str = "a black and white cat",
               fail_at: Optional[dict[str, dict[str, int]]] = None) -> Roles:
    """The five doubles; ``fail_at`` maps a role name to its failure script."""
    fail_at = fail_at or {}
    return Roles(
        t2i=ScriptedT2I(world, fail_at=fail_at.get("t2i")),
        llm=ScriptedLLM(llm_replies, fail_at=fail_at.get("llm")),
        vlm=ScriptedVLM(world, fail_at=fail_at.get("vlm")),
        captioner=ScriptedCaptioner(world, caption, fail_at=fail_at.get("captioner")),
        clip=ScriptedClip(world, fail_at=fail_at.get("clip")),
    )


def call_counts(roles: Roles) -> dict[str, dict[str, int]]:
    """Successful calls per role and method."""
    return {name: dict(getattr(roles, name).calls) for name in ("t2i", "llm", "vlm", "captioner", "clip")}


def write_reference(world: World, folder) -> "Path":
    """Save the world's reference image as a PNG in ``folder`` and return its path."""
    from pathlib import Path

    from agents.images import save_png

    path = Path(folder) / "reference.png"
    path.write_bytes(save_png(world.reference))
    return path
