"""Server-sent events: a channel per run (its whole view after every node) and one for the run list.

Every event carries the complete current view, never a delta, so a subscriber that joins late, reconnects
or misses events is right again at the next one; a slow subscriber's queue keeps only the newest events.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Awaitable, Callable, Iterator

QUEUE_SIZE = 16
KEEPALIVE_S = 15.0


class Channel:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue] = set()

    def publish(self, name: str, data: dict) -> None:
        for queue in list(self._subscribers):
            if queue.full():  # a slow reader: drop its oldest event, the newest view supersedes it
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait((name, data))

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def sse(name: str, data: dict) -> bytes:
    """One event in the text/event-stream format (JSON data on one line)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


async def stream(channel: Channel, current: Callable[[], Awaitable[list[tuple[str, dict]]]],
                 keepalive_s: float = KEEPALIVE_S):
    """``current()`` (the state now), then every event of ``channel``, with keep-alive comments.
    Subscribed before ``current()`` is read, so nothing published in between is lost."""
    with channel.subscribe() as queue:
        for name, data in await current():
            yield sse(name, data)
        while True:
            try:
                name, data = await asyncio.wait_for(queue.get(), keepalive_s)
            except asyncio.TimeoutError:
                yield KEEPALIVE
                continue
            yield sse(name, data)
