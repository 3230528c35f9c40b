"""An LRU cache of embeddings that also coalesces concurrent misses for the same key.

Many agent threads ask for the same text embedding at about the same time; without
coalescing, each miss would queue its own copy for the encoder. Here the first miss starts
the computation and later askers await the same future until it lands in the cache.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Awaitable, Callable, Generic, Hashable, Optional, TypeVar

from core.metrics import record

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Bounded mapping that evicts the least recently used key; capacity 0 disables it."""

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._data: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> Optional[V]:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class CoalescingCache(Generic[V]):
    """LRU cache in front of an async computation, with one in-flight computation per key.

    Counters: ``hits`` (served from the cache), ``coalesced`` (joined a computation already
    running for the key), ``misses`` (started a computation).
    """

    def __init__(self, capacity: int, name: str = "cache"):
        self.lru: LRUCache[V] = LRUCache(capacity)
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self.hits = self.coalesced = self.misses = 0
        self.name = name  # the ``cache`` label of its Ray metric (core.metrics)

    async def get_or_compute(self, key: Hashable, compute: Callable[[], Awaitable[V]]) -> V:
        value = self.lru.get(key)
        if value is not None:
            self.hits += 1
            record("role_cache_total", 1, {"cache": self.name, "result": "hit"})
            return value
        fut = self._inflight.get(key)
        record("role_cache_total", 1, {"cache": self.name, "result": "miss" if fut is None else "coalesced"})
        if fut is None:
            self.misses += 1
            fut = asyncio.ensure_future(compute())
            self._inflight[key] = fut
            fut.add_done_callback(lambda f, key=key: self._settle(key, f))
        else:
            self.coalesced += 1
        # shield: one caller being cancelled must not cancel the others' shared computation.
        return await asyncio.shield(fut)

    def _settle(self, key: Hashable, fut: asyncio.Future) -> None:
        self._inflight.pop(key, None)
        if fut.cancelled():
            return
        if fut.exception() is None:  # also marks the exception retrieved when nobody awaits any more
            self.lru.put(key, fut.result())

    def stats(self) -> dict:
        return {"hits": self.hits, "coalesced": self.coalesced, "misses": self.misses, "size": len(self.lru)}
