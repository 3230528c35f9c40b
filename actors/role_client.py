"""An awaitable facade over the Ray actors of one role (or of a group of roles sharing actors).

Apart from actors.ray_actors (which starts the actors) so that actors.shared_roles, which ray_actors uses,
can close shared actors without importing it back.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable, Optional, Sequence

from actors.replica_picker import ReplicaPicker
from core.metrics import record

log = logging.getLogger(__name__)


def _actor_unavailable(exc: BaseException) -> bool:
    """Ray's "the actor is temporarily unavailable" (its node lost, or it restarting), not an error of the call."""
    try:
        from ray.exceptions import ActorUnavailableError
    except ImportError:  # no Ray: no Ray errors either
        return False
    return isinstance(exc, ActorUnavailableError)


class RoleClient:
    """Awaitable facade over one or more actors of a role: ``await client.method(...)``.

    Each call goes to the replica with the fewest calls outstanding from this client (actors.replica_picker: ties
    in turn, an unreachable replica passed over for a while); each replica batches the calls it gets.
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
    #: How long a call is re-sent while Ray says its actor is unreachable (ActorUnavailableError: its node was
    #: lost and not yet declared dead, or it is restarting elsewhere). Ray does not retry those calls itself (the
    #: actor may or may not have run them); every role call is safe to run twice (seeded generation, scores,
    #: a chat whose first answer never arrived), so the client re-sends it: at once to another replica when one is
    #: reachable, else after the replica picker's backoff.
    UNAVAILABLE_RETRY_S = 600.0

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
        self._picker = ReplicaPicker(len(self.handles))

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
                return await self._resent_while_unavailable(
                    method, lambda handle: self._remote(handle, method, *args, **kwargs))

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
        async def once(handle: Any) -> tuple[list, list]:
            if n == 1:  # one return object, the list: Ray cannot split a one-item list into its item
                ref = self._remote(handle, method, *args, **kwargs)
                return list(await ref), [Item(ref, 0)]
            refs = list(self._remote(handle, method, *args, num_returns=n, **kwargs))
            return list(await asyncio.gather(*refs)), refs

        with self._recorded(method):
            return await self._resent_while_unavailable(method, once)

    async def _resent_while_unavailable(self, method: str, send: Callable[[Any], Awaitable]) -> Any:
        """``await send(handle)`` to the replica the picker chooses, sent again while Ray answers
        ActorUnavailableError: at once to another replica when one is reachable, else when the first comes off its
        backoff (the picker's, per replica: 0.5 s doubling to 10 s), for at most :attr:`UNAVAILABLE_RETRY_S`; any
        other error, or one past that time, is raised as it came."""
        deadline = time.monotonic() + self.UNAVAILABLE_RETRY_S
        while True:
            replica, unreachable = self._picker.pick(), False
            try:
                return await send(self.handles[replica])
            except Exception as exc:  # noqa: BLE001 - only ActorUnavailableError is handled; the rest re-raised
                unreachable = _actor_unavailable(exc)
                if not unreachable:
                    raise
                error = exc
            finally:
                self._picker.finished(replica, unreachable)
            wait_s = self._picker.wait_s()
            if time.monotonic() + wait_s > deadline:
                raise error
            record("role_call_resends_total", 1, {"role": self.role, "method": method})
            log.warning("role %s: %s: replica %d is unreachable (%s); sent again in %.1f s", self.role, method,
                        replica, type(error).__name__, wait_s)
            await asyncio.sleep(wait_s)

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
