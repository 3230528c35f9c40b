"""Chat messages: validation of the role schema (actors/roles.py) and conversion per backend.

Callers send OpenAI-style messages whose content is a string or a list of parts
``{"type": "text", "text": ...}`` / ``{"type": "image", "image": uint8 HxWx3 ndarray}``.
They are checked once, at the server's edge, into :class:`ChatMessage`; each backend
then converts them to what its model expects (a chat-template conversation, or
OpenAI's ``image_url`` data-URL parts).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True, eq=False)
class ImagePart:
    image: np.ndarray  # uint8 (H, W, 3) RGB


Part = Union[TextPart, ImagePart]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    parts: tuple[Part, ...]

    @property
    def images(self) -> list[np.ndarray]:
        return [p.image for p in self.parts if isinstance(p, ImagePart)]

    @property
    def text(self) -> str:
        """The text parts joined by newlines (what a text-only template receives)."""
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))


def _check_image(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{where}: image must be a numpy uint8 array of shape (H, W, 3), got {type(value).__name__}")
    if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3 or value.shape[0] < 1 or value.shape[1] < 1:
        raise ValueError(f"{where}: image must be a uint8 array of shape (H, W, 3), got dtype {value.dtype} shape {value.shape}")
    return value


def _parse_part(part: Any, where: str, allow_images: bool) -> Part:
    if not isinstance(part, dict) or "type" not in part:
        raise ValueError(f"{where}: a content part must be a dict with a 'type', got {part!r:.80}")
    kind = part["type"]
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise ValueError(f"{where}: a text part needs a string 'text'")
        return TextPart(part["text"])
    if kind == "image":
        if not allow_images:
            raise ValueError(f"{where}: this role takes text only, but the part is an image (send images to the VLM)")
        return ImagePart(_check_image(part.get("image"), where))
    raise ValueError(f"{where}: unknown content part type {kind!r} (expected 'text' or 'image')")


def normalize_messages(messages: Sequence[Any], *, allow_images: bool, image_size: Optional[int] = None) -> list[ChatMessage]:
    """Validate role-schema messages; optionally shrink images so the longer side is ``image_size``."""
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ValueError(f"{where}: must be a dict with 'role' and 'content', got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ROLES:
            raise ValueError(f"{where}: role must be one of {ROLES}, got {role!r}")
        content = msg.get("content")
        if isinstance(content, str):
            parts: tuple[Part, ...] = (TextPart(content),)
        elif isinstance(content, (list, tuple)) and content:
            parts = tuple(_parse_part(p, f"{where}.content[{j}]", allow_images) for j, p in enumerate(content))
        else:
            raise ValueError(f"{where}: content must be a string or a non-empty list of parts, got {type(content).__name__}")
        if image_size is not None:
            parts = tuple(ImagePart(shrink_to(p.image, image_size)) if isinstance(p, ImagePart) else p for p in parts)
        out.append(ChatMessage(role, parts))
    return out


def count_images(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.images) for m in messages)


def all_images(messages: Sequence[ChatMessage]) -> list[np.ndarray]:
    """Images in the order they appear, which is the order of the template's image placeholders."""
    return [img for m in messages for img in m.images]


def shrink_to(image: np.ndarray, longer_side: int) -> np.ndarray:
    """Resize (bicubic) so the longer side is ``longer_side``; smaller images are left as they are."""
    h, w = image.shape[:2]
    if max(h, w) <= longer_side:
        return image
    from PIL import Image

    scale = longer_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.array(Image.fromarray(image).resize(size, Image.BICUBIC))  # writable: torch warns on a read-only array


def to_template_conversation(messages: Sequence[ChatMessage], vision: bool) -> list[dict]:
    """Messages for a Hugging Face chat template.

    Text models get string content (most text templates expect it); vision models get
    part lists with ``{"type": "image"}`` placeholders, the form LLaVA processors' templates read.
    """
    if not vision:
        return [{"role": m.role, "content": m.text} for m in messages]
    conv = []
    for m in messages:
        parts = [{"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"} for p in m.parts]
        conv.append({"role": m.role, "content": parts})
    return conv


def png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict]:
    """OpenAI chat-completions messages: plain strings for text-only content, parts with PNG data URLs otherwise."""
    out = []
    for m in messages:
        if not m.images:
            out.append({"role": m.role, "content": m.text})
            continue
        parts = [{"type": "text", "text": p.text} if isinstance(p, TextPart)
                 else {"type": "image_url", "image_url": {"url": png_data_url(p.image)}} for p in m.parts]
        out.append({"role": m.role, "content": parts})
    return out
