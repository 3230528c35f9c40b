"""The driver's own time per graph node, measured directly (SIMULATION benchmark, issue #24).

A node's time in the driver runs from the previous node's completion (or the image's start) to its own.
Part of it the image waits on its roles: a role call's wall time as the driver sees it (Ray transport,
the role's queue and batcher, its model). The rest is orchestration: LangGraph, the node's own code,
the checkpointer, image encodes and file writes. ``orchestration = node wall − |union of the image's
role-call intervals inside the node|`` — no latency model enters it, so it is a yardstick independent of
the stand-ins.

``TimedRoles`` wraps the five role clients; every awaited call records ``(start, end)`` into the list
of the image whose task made it (a context variable set per image: LangGraph's node tasks inherit it).

``Injected`` adds a known cost per node to the driver for the check that the figures can fail: CPU
burnt in the event loop (blocks every optimisation, as driver CPU does) and a wait (only the image's
own path) — both inside the checkpointer's ``aput``, which the graph awaits once per node
(``durability="sync"``).
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import time
from typing import Any, Optional

# the role-call intervals of the image whose task is running (None outside an image)
ROLE_CALLS: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("role_calls", default=None)


class _TimedClient:
    """A role client whose coroutine methods record their wall interval into ROLE_CALLS."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_") or name in ("broadcast", "close", "kill"):
            return attr

        @functools.wraps(attr)
        async def timed(*args, **kwargs):
            calls = ROLE_CALLS.get()
            start = time.perf_counter()
            try:
                result = attr(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result
            finally:
                if calls is not None:
                    calls.append((start, time.perf_counter()))
        return timed


def timed_roles(roles: Any) -> Any:
    """``roles`` (actors.roles.Roles) with every client timed."""
    from actors.roles import Roles

    return Roles(**{name: _TimedClient(getattr(roles, name)) for name in ("t2i", "llm", "vlm", "captioner", "clip")})


def union_inside(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``intervals`` clipped to [lo, hi]."""
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi)
    total, cur_a, cur_b = 0.0, None, None
    for a, b in clipped:
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


def node_split(start: float, nodes: list[tuple[str, float]], calls: list[tuple[float, float]]) -> list[tuple[str, float, float]]:
    """Per node of one image: (name, node wall s, of which waiting on roles s)."""
    out, last = [], start
    for name, end in nodes:
        out.append((name, end - last, union_inside(calls, last, end)))
        last = end
    return out


class Injected:
    """A known driver cost per node, in the checkpointer's ``aput`` (undone on exit).

    ``cpu_s``: burnt in the event loop (real CPU of this process); ``wait_s``: an ``asyncio.sleep``
    on the sim clock."""

    def __init__(self, cpu_s: float = 0.0, wait_s: float = 0.0):
        self.cpu_s, self.wait_s = cpu_s, wait_s
        self.calls = 0
        self._saved = None

    def __enter__(self):
        if not (self.cpu_s or self.wait_s):
            return self
        import asyncio

        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        original = AsyncSqliteSaver.__dict__["aput"]
        injected = self

        @functools.wraps(original)
        async def aput(saver, *args, **kwargs):
            injected.calls += 1
            if injected.cpu_s:
                end = time.thread_time() + injected.cpu_s
                while time.thread_time() < end:
                    pass
            if injected.wait_s:
                await asyncio.sleep(injected.wait_s)
            return await original(saver, *args, **kwargs)

        self._saved = (AsyncSqliteSaver, original)
        AsyncSqliteSaver.aput = aput
        return self

    def __exit__(self, *exc):
        if self._saved:
            cls, original = self._saved
            cls.aput = original
        return False
