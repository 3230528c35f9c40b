"""Thin Ray shells around the role servers, and the role clients the agent awaits.

Each role server (``T2IServer``, ``LLMServer``, ...) is a plain class with async methods
that loads its model once in ``__init__``. Here it becomes a Ray actor with the role's
resources: fractional ``num_gpus`` so small models can share a GPU, ``max_restarts`` so
a dead actor comes back (reloading its model), ``max_task_retries`` so the call that was
in flight when it died is retried on the restarted actor, and a high ``max_concurrency``
so many optimisations can queue calls that the server batches.
"""
from __future__ import annotations

import importlib
import itertools
from typing import Any, Sequence

from actors.config import ResourceConfig
from actors.roles import Roles

# role name -> "module:ServerClass"; imported only when the role is started.
ROLE_SERVERS = {
    "t2i": "actors.t2i:T2IServer",
    "llm": "actors.chat.server:LLMServer",
    "vlm": "actors.chat.server:VLMServer",
    "captioner": "actors.captioner:CaptionerServer",
    "clip": "actors.clip_scorer:ClipServer",
}


def import_server(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def actor_options(res: ResourceConfig, name: str | None = None) -> dict:
    opts = dict(
        num_gpus=res.num_gpus,
        num_cpus=res.num_cpus,
        max_restarts=res.max_restarts,
        max_task_retries=res.max_task_retries,
        max_concurrency=res.max_concurrency,
    )
    if res.custom_resources:
        opts["resources"] = dict(res.custom_resources)
    if name:
        opts["name"] = name
    return opts


class RoleClient:
    """Awaitable facade over one or more actors of a role: ``await client.method(...)``.

    Calls are spread round-robin over the replicas; each replica batches the calls it gets.
    """

    def __init__(self, role: str, handles: Sequence[Any]):
        if not handles:
            raise ValueError(f"role {role!r} has no actors")
        self.role = role
        self.handles = list(handles)
        self._next = itertools.cycle(range(len(self.handles)))

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args, **kwargs):
            handle = self.handles[next(self._next)]
            return await getattr(handle, method).remote(*args, **kwargs)

        call.__name__ = method
        return call

    async def broadcast(self, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every replica (e.g. ``stats``, ``ping``)."""
        return [await getattr(h, method).remote(*args, **kwargs) for h in self.handles]

    def kill(self) -> None:
        import ray

        for h in self.handles:
            ray.kill(h, no_restart=True)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Let each replica release its model (``aclose``: a vLLM engine stops its engine-core
        processes, which ``ray.kill`` alone would orphan), then kill the actors."""
        import asyncio

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


def start_role(role: str, server: type | str, cfg: Any, res: ResourceConfig) -> RoleClient:
    """Start ``res.num_replicas`` actors of ``server(cfg)`` and return their client."""
    import ray

    cls = import_server(server) if isinstance(server, str) else server
    remote_cls = ray.remote(cls)
    handles = [remote_cls.options(**actor_options(res)).remote(cfg) for _ in range(res.num_replicas)]
    return RoleClient(role, handles)


async def wait_ready(*clients: RoleClient) -> None:
    """Wait until every actor finished loading its model; a load error surfaces here, naming the role."""
    for client in clients:
        try:
            await client.broadcast("ping")
        except Exception as exc:  # noqa: BLE001 - re-raised with the role named
            raise RuntimeError(f"role {client.role!r} failed to start: {exc}") from exc


async def stop_roles(*clients: RoleClient, timeout_s: float = 30.0) -> None:
    """Close every role's actors (see :meth:`RoleClient.close`)."""
    import asyncio

    await asyncio.gather(*(c.close(timeout_s) for c in clients))


def start_roles(cfg: Any) -> Roles:
    """Start one actor (or pool) per role from an ArpoConfig-like object with t2i/llm/vlm/captioner/clip sections."""
    clients = {role: start_role(role, spec, getattr(cfg, role), getattr(cfg, role).resources)
               for role, spec in ROLE_SERVERS.items()}
    return Roles(**clients)
