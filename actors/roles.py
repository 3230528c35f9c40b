"""The five role interfaces the agent depends on (structural typing).

Graph nodes know these roles, not models. The Ray actor shells (actors/ray_actors.py)
and the scripted doubles in tests/ both satisfy them. Images cross role boundaries as
``numpy.ndarray`` of dtype uint8, shape (H, W, 3), RGB.

Message format for ``chat`` (LLM and VLM) follows the OpenAI chat schema:
``{"role": "system"|"user"|"assistant", "content": str | list[part]}`` where a part is
``{"type": "text", "text": str}`` or, for the VLM only, ``{"type": "image", "image": ndarray}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

Image = np.ndarray  # uint8 (H, W, 3) RGB
Message = dict[str, Any]


@runtime_checkable
class T2IRole(Protocol):
    async def generate(self, prompt: str, seeds: Sequence[int], negative_prompt: Optional[str] = None) -> list[Image]:
        """One image per seed; the same (prompt, seed, negative prompt) always gives the same image."""

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts under the pipeline's text encoder tokenizer (without special tokens)."""


@runtime_checkable
class ChatRole(Protocol):
    async def chat(self, messages: Sequence[Message], sampling: Optional[dict] = None) -> str:
        """The assistant's reply. ``sampling`` overrides SamplingConfig fields for this call."""


@runtime_checkable
class CaptionerRole(Protocol):
    async def caption(self, image: Image) -> str:
        """A short caption of the image."""


@runtime_checkable
class ClipRole(Protocol):
    async def text_image_scores(self, texts: Sequence[str], image: Image, image_key: Optional[str] = None) -> list[float]:
        """Cosine similarity of each text with the image. ``image_key`` caches the image embedding."""

    async def image_image_scores(self, images: Sequence[Image], reference: Image, reference_key: Optional[str] = None) -> list[float]:
        """Cosine similarity of each image with the reference image."""

    async def style_scores(self, images: Sequence[Image], reference: Image, reference_key: Optional[str] = None) -> list[float]:
        """Style similarity of each image with the reference (agent.style_only; actors.clip_scorer)."""


@dataclass
class Roles:
    """The five role clients a graph run needs (Ray actor clients in production, doubles in tests)."""

    t2i: T2IRole
    llm: ChatRole
    vlm: ChatRole
    captioner: CaptionerRole
    clip: ClipRole
