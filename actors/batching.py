"""Cross-caller dynamic batching for async actors.

Many concurrent callers each ``await batcher.submit(item)``; the batcher gathers the
items that arrive within ``max_wait_ms`` of the first (up to ``max_batch_size``) and
runs one batch function call for all of them, in a worker thread so the actor's event
loop keeps accepting requests while the forward pass runs. Counters record how many
batch calls ran and how big they were, so tests and benchmarks can check the batching
really happens.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from core.metrics import record

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """What the batcher did so far."""

    batches: int = 0
    items: int = 0
    max_batch: int = 0
    sizes: list[int] = field(default_factory=list)

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    def as_dict(self) -> dict:
        return {"batches": self.batches, "items": self.items, "max_batch": self.max_batch, "mean_batch": self.mean_batch}


class MicroBatcher(Generic[T, R]):
    """Coalesce concurrent ``submit`` calls into calls of ``batch_fn(list_of_items) -> list_of_results``.

    ``batch_fn`` must return one result per item, in order. An exception in ``batch_fn``
    fails every request of that batch (and only that batch).
    """

    def __init__(self, batch_fn: Callable[[list[T]], Sequence[R]], max_batch_size: int, max_wait_ms: float,
                 name: str = "batcher"):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._fn = batch_fn
        self.name = name  # the ``batcher`` label of its Ray metrics (core.metrics)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        # One batch function call at a time: the model is not re-entrant.
        self._model_lock = threading.Lock()

    def _ensure_worker(self) -> asyncio.Queue:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def submit(self, item: T) -> R:
        fut = asyncio.get_running_loop().create_future()
        self._ensure_worker().put_nowait((item, fut))
        return await fut

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        return list(await asyncio.gather(*(self.submit(i) for i in items)))

    async def _collect(self) -> list[tuple[T, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            # Take whatever is already queued without waiting.
            while len(batch) < self.max_batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if len(batch) >= self.max_batch_size:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    def _call(self, items: list[T]) -> Sequence[R]:
        with self._model_lock:
            return self._fn(items)

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            items = [item for item, _ in batch]
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.max_batch = max(self.stats.max_batch, len(items))
            self.stats.sizes.append(len(items))
            record("role_batch_size", len(items), {"batcher": self.name})
            record("role_queue_depth", self._queue.qsize(), {"batcher": self.name})
            try:
                results = await asyncio.to_thread(self._call, items)
                if len(results) != len(items):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            except BaseException as exc:  # noqa: BLE001 - delivered to every waiting caller
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                    raise
                continue
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)
