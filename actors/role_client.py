"""An awaitable facade over the Ray actors of one role (or of a group of roles sharing actors).

Apart from actors.ray_actors (which starts the actors) so that actors.shared_roles, which ray_actors uses,
can close shared actors without importing it back.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any, Optional, Sequence

from core.metrics import record


class RoleClient:
    """Awaitable facade over one or more actors of a role: ``await client.method(...)``.

    Calls are spread round-robin over the replicas; each replica batches the calls it gets.
    With ``route`` the actors serve several roles (a ``ChatGroupServer``) and every call goes
    to ``route``'s interface inside them: ``await client.chat(...)`` is ``call(route, "chat", ...)``,
    and a method in ``control`` (the role's control methods) goes through ``call_control``, which
    runs in the control concurrency group. ``shared``: what this job asked of shared role actors
    (actors/shared_roles.py ``role_info``); None for actors of this job's own. ``placement_group``:
    the group spreading this job's own replicas (actors/spread.py), removed when they are killed.
    """

    #: Its actors take images as object references (actors.object_refs): the graph hands them references, not
    #: pixels (a test's in-process double has no such attribute and gets arrays).
    takes_object_refs = True

    def __init__(self, role: str, handles: Sequence[Any], route: str | None = None,
                 control: Sequence[str] = (), shared: Optional[dict] = None, placement_group: Any = None):
        if not handles:
            raise ValueError(f"role {role!r} has no actors")
        self.role = role
        self.route = route
        self.control = frozenset(control)
        self.shared = shared
        self.placement_group = placement_group
        self.handles = list(handles)
        self._next = itertools.cycle(range(len(self.handles)))

    def _remote(self, handle: Any, method: str, *args, num_returns: Optional[int] = None, **kwargs):
        if self.route is not None:
            name, args = ("call_control" if method in self.control else "call"), (self.route, method, *args)
        else:
            name = method
        fn = getattr(handle, name)
        if num_returns is not None:
            fn = fn.options(num_returns=num_returns)
        return fn.remote(*args, **kwargs)

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args, **kwargs):
            with self._recorded(method):
                return await self._remote(self.handles[next(self._next)], method, *args, **kwargs)

        call.__name__ = method
        return call

    @contextlib.contextmanager
    def _recorded(self, method: str):
        """Count and time one call (core.metrics): the driver's view of the role — queueing, batching and the
        forward pass."""
        started, outcome = time.perf_counter(), "error"
        try:
            yield
            outcome = "ok"
        finally:
            record("role_calls_total", 1, {"role": self.role, "method": method, "outcome": outcome})
            record("role_call_seconds", time.perf_counter() - started, {"role": self.role, "method": method})

    async def call_keeping_refs(self, method: str, n: int, *args, **kwargs) -> tuple[list, list]:
        """``method``'s result, a list of ``n`` items (one image per seed), left in the object store:
        ``(values, items)`` — the items here, and what stands for item i as (part of) an argument of another
        role's call (an object reference, or an actors.object_refs.Item: resolved at the receiving actor). So the
        items go on to other roles without the driver putting them into the store again."""
        from actors.object_refs import Item

        if n < 1:
            raise ValueError("n must be at least 1")
        with self._recorded(method):
            handle = self.handles[next(self._next)]
            if n == 1:  # one return object, the list: Ray cannot split a one-item list into its item
                ref = self._remote(handle, method, *args, **kwargs)
                return list(await ref), [Item(ref, 0)]
            refs = list(self._remote(handle, method, *args, num_returns=n, **kwargs))
            return list(await asyncio.gather(*refs)), refs

    async def broadcast(self, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every replica (e.g. ``stats``, ``ping``)."""
        return [await self._remote(h, method, *args, **kwargs) for h in self.handles]

    def kill(self) -> None:
        import ray

        for h in self.handles:
            ray.kill(h, no_restart=True)
        if self.placement_group is not None:  # its reservations outlive the actors otherwise, until the job ends
            from actors.spread import remove_group

            remove_group(self.placement_group)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Let each replica release its model (``aclose``: a vLLM engine stops its engine-core
        processes, which ``ray.kill`` alone would orphan), then kill the actors."""
        async def one(handle: Any) -> None:
            try:
                method = handle.aclose
            except AttributeError:  # a server without resources of its own to release
                return
            try:
                await asyncio.wait_for(method.remote(), timeout_s)
            except Exception:  # noqa: BLE001 - dead or stuck: the kill below ends it anyway
                pass

        await asyncio.gather(*(one(h) for h in self.handles))
        self.kill()
