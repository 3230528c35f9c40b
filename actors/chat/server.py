"""LLM and VLM role servers: plain classes with async methods, usable with or without Ray.

``actors/ray_actors.py`` turns them into Ray actors (``ray.remote(LLMServer).remote(cfg)``);
the model loads once in ``__init__``. Messages are validated here, at the edge, and the
configured backend (``cfg.backend``) answers.
"""
from __future__ import annotations

import asyncio
import time
from typing import Optional, Sequence

from actors.chat.base import ChatBackend, resolve_sampling
from actors.chat.messages import normalize_messages
from actors.config import LLMConfig, VLMConfig


def make_backend(cfg: LLMConfig, vision: bool) -> ChatBackend:
    """Build the backend ``cfg.backend`` names (imports only that backend's libraries)."""
    if cfg.backend == "vllm":
        from actors.chat.vllm_backend import VLLMChatBackend

        return VLLMChatBackend(cfg, vision)
    if cfg.backend == "transformers":
        from actors.chat.transformers_backend import TransformersChatBackend

        return TransformersChatBackend(cfg, vision)
    if cfg.backend == "openai":
        from actors.chat.openai_backend import OpenAIChatBackend

        return OpenAIChatBackend(cfg, vision)
    raise ValueError(f"unknown chat backend {cfg.backend!r} (expected vllm, transformers or openai)")


class _Counters:
    """Calls, failures, tokens and busy time (wall time with at least one call in flight)."""

    def __init__(self):
        self.calls = self.failures = self.prompt_tokens = self.completion_tokens = 0
        self.in_flight = self.max_in_flight = 0
        self.busy_s = self.latency_s = 0.0
        self._busy_since = 0.0

    def start(self) -> float:
        now = time.perf_counter()
        if self.in_flight == 0:
            self._busy_since = now
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return now

    def finish(self, started: float, result=None) -> None:
        now = time.perf_counter()
        self.in_flight -= 1
        if self.in_flight == 0:
            self.busy_s += now - self._busy_since
        self.latency_s += now - started
        if result is None:
            self.failures += 1
            return
        self.calls += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens

    def as_dict(self) -> dict:
        done = self.calls + self.failures
        return {
            "calls": self.calls, "failures": self.failures, "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "busy_s": round(self.busy_s, 4),
            "mean_latency_s": round(self.latency_s / done, 4) if done else 0.0,
            "completion_tokens_per_busy_s": round(self.completion_tokens / self.busy_s, 2) if self.busy_s else 0.0,
        }


class ChatServer:
    """Serves one chat model; ``chat`` answers one conversation, ``chat_many`` several at once."""

    role = "chat"
    vision = False
    config_cls: type[LLMConfig] = LLMConfig

    def __init__(self, cfg: LLMConfig | dict, backend: Optional[ChatBackend] = None):
        self.cfg = cfg if isinstance(cfg, self.config_cls) else self.config_cls.model_validate(cfg)
        self.backend = backend if backend is not None else make_backend(self.cfg, self.vision)
        self._counters = _Counters()

    def _image_size(self) -> Optional[int]:
        return None

    async def chat(self, messages: Sequence[dict], sampling: Optional[dict] = None) -> str:
        """The assistant's reply; ``sampling`` overrides SamplingConfig fields for this call."""
        norm = normalize_messages(messages, allow_images=self.vision, image_size=self._image_size())
        params = resolve_sampling(self.cfg.sampling, sampling)
        started = self._counters.start()
        result = None
        try:
            result = await self.backend.chat(norm, params)
        finally:
            self._counters.finish(started, result)
        return result.text

    async def chat_many(self, conversations: Sequence[Sequence[dict]], sampling: Optional[dict] = None) -> list[str]:
        """Answers to several conversations, submitted together so the backend can batch them."""
        return list(await asyncio.gather(*(self.chat(c, sampling) for c in conversations)))

    async def ping(self) -> dict:
        """Readiness: the model loaded in __init__, so an answer means the server can take calls."""
        return {"role": self.role, "backend": self.backend.name, "model": self.cfg.model}

    async def stats(self) -> dict:
        return {"role": self.role, "backend": self.backend.name, **self._counters.as_dict(), **self.backend.stats()}

    async def aclose(self) -> None:
        await self.backend.aclose()


class LLMServer(ChatServer):
    role = "llm"
    vision = False
    config_cls = LLMConfig


class VLMServer(ChatServer):
    role = "vlm"
    vision = True
    config_cls = VLMConfig

    def _image_size(self) -> Optional[int]:
        return self.cfg.image_size  # type: ignore[attr-defined]
