"""The interface every chat backend (vLLM, transformers, OpenAI-compatible) implements.

A backend receives messages already validated by actors.chat.messages and a fully
resolved SamplingConfig, and returns the answer with token counts. Backends are built
inside the server (and so inside the Ray actor), never shipped between processes.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional, Sequence

from pydantic import ValidationError

from actors.chat.messages import ChatMessage
from actors.config import SamplingConfig


@dataclass(frozen=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()  # the answer's tokens, stop token excluded (empty where the backend does not say)


class ChatBackendError(RuntimeError):
    """A backend could not produce an answer (the message says which endpoint or model and why)."""


class ChatBackend(abc.ABC):
    """One model behind ``chat``; concurrent calls are allowed (each backend batches or queues them)."""

    name: str = "?"

    @abc.abstractmethod
    async def chat(self, messages: Sequence[ChatMessage], sampling: SamplingConfig) -> ChatResult:
        """Answer one conversation; the answer must depend only on the messages and the sampling (seed included)."""

    def stats(self) -> dict:
        """Backend-specific counters (e.g. batch sizes)."""
        return {}

    async def aclose(self) -> None:
        """Release the engine, threads or connections."""


def resolve_sampling(default: SamplingConfig, overrides: Optional[dict]) -> SamplingConfig:
    """The config's sampling with per-call ``overrides`` applied and validated (unknown keys are errors)."""
    if not overrides:
        return default
    if not isinstance(overrides, dict):
        raise ValueError(f"sampling overrides must be a dict of SamplingConfig fields, got {type(overrides).__name__}")
    try:
        return SamplingConfig.model_validate({**default.model_dump(), **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ValueError(f"sampling override {key!r}: {reason}") from None
