"""LLM and VLM role servers: plain classes with async methods, usable with or without Ray.

``actors/ray_actors.py`` turns them into Ray actors (``ray.remote(LLMServer).remote(cfg)``);
the model loads once in ``__init__``. Messages are validated here, at the edge, and the
configured backend (``cfg.backend``) answers.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Optional, Sequence

from actors.chat.base import ChatBackend, resolve_sampling
from actors.chat.messages import normalize_messages
from actors.config import LLMConfig, VLMConfig
from core.metrics import record


def engine_id(backend: ChatBackend) -> str:
    return f"{os.getpid()}:{id(backend):x}"


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
    #: Cheap methods that must answer while long calls queue (a Ray shell runs them in a concurrency
    #: group of their own, on another event loop: they touch no asyncio object or engine state of the others).
    #: Not ``aclose``: it stops the engine, which lives on the default group's event loop.
    CONTROL_METHODS = ("ping", "stats")

    def __init__(self, cfg: LLMConfig | dict, backend: Optional[ChatBackend] = None):
        self.cfg = cfg if isinstance(cfg, self.config_cls) else self.config_cls.model_validate(cfg)
        self.backend = backend if backend is not None else make_backend(self.cfg, self.vision)
        self._counters = _Counters()

    @property
    def engine_id(self) -> str:
        """Names the loaded model instance (process and backend object): servers sharing one engine report the same id."""
        return engine_id(self.backend)

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
        record("role_tokens_total", result.prompt_tokens, {"role": self.role, "direction": "prompt"})
        record("role_tokens_total", result.completion_tokens, {"role": self.role, "direction": "completion"})
        return result.text

    async def chat_many(self, conversations: Sequence[Sequence[dict]], sampling: Optional[dict] = None) -> list[str]:
        """Answers to several conversations, submitted together so the backend can batch them."""
        return list(await asyncio.gather(*(self.chat(c, sampling) for c in conversations)))

    async def ping(self) -> dict:
        """Readiness: the model loaded in __init__, so an answer means the server can take calls."""
        return {"role": self.role, "backend": self.backend.name, "model": self.cfg.model, "engine": self.engine_id}

    async def stats(self) -> dict:
        return {"role": self.role, "backend": self.backend.name, "engine": self.engine_id,
                **self._counters.as_dict(), **self.backend.stats()}

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


class ChatGroupServer:
    """One actor answering several roles over one chat engine (see actors/role_groups.py).

    ``cfgs`` maps role names to their sections: ``vlm`` always, ``llm`` when the LLM shares
    the VLM's engine, ``captioner`` when captions come from the VLM (``backend: vlm``). The
    backend is built once from the VLM section, with vision on; each role keeps its own
    interface (the LLM still refuses images), default sampling and counters. Callers reach a
    role through ``call(role, method, ...)`` (``RoleClient(route=role)`` does that), or, for a role's
    cheap control methods (its ``CONTROL_METHODS``), through ``call_control(role, method, ...)``,
    which a Ray shell runs in the control concurrency group so they do not queue behind chats.
    """

    CONTROL_METHODS = ("ping", "stats", "call_control")

    def __init__(self, cfgs: dict[str, Any], backend: Optional[ChatBackend] = None):
        from actors.captioner import VLMCaptioner
        from actors.config import CaptionerConfig

        unknown = set(cfgs) - {"llm", "vlm", "captioner"}
        if "vlm" not in cfgs or unknown:
            raise ValueError(f"a chat group serves vlm with llm and/or captioner, got roles {sorted(cfgs)}")
        vlm = VLMServer(cfgs["vlm"], backend=backend)
        self.servers: dict[str, Any] = {"vlm": vlm}
        if "llm" in cfgs:
            self.servers["llm"] = LLMServer(cfgs["llm"], backend=vlm.backend)
        if "captioner" in cfgs:
            cap = cfgs["captioner"]
            self.servers["captioner"] = VLMCaptioner(cap if isinstance(cap, CaptionerConfig) else CaptionerConfig.model_validate(cap), vlm)
        self.backend = vlm.backend
        self._closing: Optional[asyncio.Future] = None

    async def call(self, role: str, method: str, *args, **kwargs):
        """``method(*args, **kwargs)`` of ``role``'s interface."""
        server = self.servers.get(role)
        if server is None:
            raise ValueError(f"this actor serves roles {sorted(self.servers)}, not {role!r}")
        if method.startswith("_") or method in ("aclose", "call") or not callable(getattr(server, method, None)):
            raise AttributeError(f"role {role!r} has no method {method!r}")
        return await getattr(server, method)(*args, **kwargs)

    @staticmethod
    def role_control_methods(role: str) -> tuple[str, ...]:
        """The control methods of ``role``'s interface in a group (what ``call_control`` accepts)."""
        from actors.captioner import VLMCaptioner

        server = {"llm": LLMServer, "vlm": VLMServer, "captioner": VLMCaptioner}.get(role)
        return tuple(getattr(server, "CONTROL_METHODS", ()))

    async def call_control(self, role: str, method: str, *args, **kwargs):
        """``call`` for one of ``role``'s control methods only (anything else is refused)."""
        if method not in self.role_control_methods(role):
            raise AttributeError(f"role {role!r} has no control method {method!r} (control methods: "
                                 f"{', '.join(self.role_control_methods(role)) or 'none'})")
        return await self.call(role, method, *args, **kwargs)

    async def ping(self) -> dict:
        return {role: await server.ping() for role, server in self.servers.items()}

    async def stats(self) -> dict:
        return {role: await server.stats() for role, server in self.servers.items()}

    async def aclose(self) -> None:
        """Release the engine once, however many roles' clients ask (each waits until it is released)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.backend.aclose())
        await asyncio.shield(self._closing)
