"""OpenAI-compatible backend: POST {base_url}/chat/completions over async HTTP (httpx).

The key is read from the environment variable the config names, once, when the client
is built; it is sent only in the Authorization header and is kept out of reprs, logs
and error messages (any server text quoted in an error has it masked). Connection
errors, 429 and 5xx are retried with exponential backoff (honouring Retry-After), at
most ``openai.max_retries`` times; other failures raise at once, naming the URL and
the HTTP status.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Optional, Sequence

from actors.chat.base import ChatBackend, ChatBackendError, ChatResult
from actors.chat.messages import ChatMessage, to_openai_messages
from actors.config import LLMConfig, SamplingConfig

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
_QUOTED_BODY_CHARS = 300


def _retry_after_s(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; fall back to our own backoff


class OpenAIChatBackend(ChatBackend):
    name = "openai"

    def __init__(self, cfg: LLMConfig, vision: bool, backoff_base_s: float = 0.5):
        import httpx

        opts = cfg.openai
        self.model = cfg.model
        self.url = opts.base_url.rstrip("/") + "/chat/completions"
        self.max_retries = opts.max_retries
        self.backoff_base_s = backoff_base_s
        self.retries = 0
        self.__key: Optional[str] = None
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env)
            if not key:
                raise ValueError(f"openai.api_key_env names {opts.api_key_env!r}, but that environment variable is "
                                 "not set or empty (set it, or set api_key_env to null for an endpoint without a key)")
            self.__key = key
        self._client = httpx.AsyncClient(timeout=opts.timeout_s)

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(url={self.url!r}, model={self.model!r}, key={'set' if self.__key else 'none'})"

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.__key}"} if self.__key else {}

    def _mask(self, text: str) -> str:
        return text.replace(self.__key, "***") if self.__key else text

    def _body(self, messages: Sequence[ChatMessage], s: SamplingConfig) -> dict:
        body = {"model": self.model, "messages": to_openai_messages(messages), "max_tokens": s.max_new_tokens,
                "temperature": s.temperature, "top_p": s.top_p}
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    def _backoff_s(self, attempt: int, retry_after: Optional[float]) -> float:
        own = self.backoff_base_s * (2 ** attempt)
        return min(MAX_BACKOFF_S, retry_after if retry_after is not None else own)

    async def chat(self, messages: Sequence[ChatMessage], sampling: SamplingConfig) -> ChatResult:
        import httpx

        body = self._body(messages, sampling)
        attempt = 0
        while True:
            try:
                resp = await self._client.post(self.url, json=body, headers=self._headers())
            except httpx.TransportError as exc:  # connect/read errors and timeouts
                problem, retry_after = f"{type(exc).__name__}: {self._mask(str(exc))}", None
            else:
                if resp.status_code == 200:
                    return self._parse(resp)
                problem = f"HTTP {resp.status_code}: {self._mask(resp.text[:_QUOTED_BODY_CHARS])}"
                if resp.status_code != 429 and resp.status_code < 500:
                    raise ChatBackendError(f"POST {self.url} failed: {problem}")
                retry_after = _retry_after_s(resp.headers.get("retry-after"))
            if attempt >= self.max_retries:
                raise ChatBackendError(f"POST {self.url} failed after {attempt + 1} attempt(s): {problem}")
            delay = self._backoff_s(attempt, retry_after)
            log.warning("POST %s: %s; retry %d/%d in %.2fs", self.url, problem, attempt + 1, self.max_retries, delay)
            self.retries += 1
            attempt += 1
            await asyncio.sleep(delay)

    def _parse(self, resp) -> ChatResult:
        try:
            data = resp.json()
            text = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ChatBackendError(f"POST {self.url}: response is not a chat completion "
                                   f"(expected choices[0].message.content): {self._mask(resp.text[:_QUOTED_BODY_CHARS])}") from None
        if not isinstance(text, str):
            raise ChatBackendError(f"POST {self.url}: choices[0].message.content is {type(text).__name__}, not a string")
        usage = data.get("usage") or {}
        return ChatResult(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0))

    def stats(self) -> dict:
        return {"retries": self.retries}

    async def aclose(self) -> None:
        await self._client.aclose()
