"""Thin Ray shells around the role servers, and the role clients the agent awaits.

Each role server (``T2IServer``, ``LLMServer``, ...) is a plain class with async methods
that loads its model once in ``__init__``. Here it becomes a Ray actor with the role's
resources: fractional ``num_gpus`` so small models can share a GPU, ``max_restarts`` so
a dead actor comes back (reloading its model), ``max_task_retries`` so the call that was
in flight when it died is retried on the restarted actor, and a high ``max_concurrency``
so many optimisations can queue calls that the server batches.

Roles that share an actor (one chat engine for the LLM and the VLM, captions from the VLM:
actors/role_groups.py) get one ``ChatGroupServer`` actor and one client per role, each
routing its calls to its role inside that actor.

Each server lists its cheap methods (``ping``, ``stats``, the T2I's ``count_tokens``) in a
class attribute ``CONTROL_METHODS``; here they run in a Ray concurrency group of their own
(:data:`CONTROL_GROUP`), so they answer at once even when the actor holds more long calls
(``generate``, ``chat``) than its ``max_concurrency`` and Ray queues the rest. The servers stay
plain classes (no Ray import): the marking is applied to a subclass built here.

With a shared-roles name (``job.shared_roles``, actors/shared_roles.py) the actors are named,
detached and got-or-created, so several jobs use one set.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

from actors.config import ResourceConfig
from actors.role_groups import RoleGroup, engine_differences, plan_groups, role_groups  # noqa: F401  (role_groups: re-exported)
from actors.role_client import RoleClient  # noqa: F401  (imported from here by callers)
from actors.roles import Roles
from actors.shared_roles import (NAMESPACE, SharedRoles, actor_name, check_layout, config_snapshot, role_info,
                                 spread_group_name, with_shared_info)
from actors.spread import bundle_strategy, spread_group, wants_spread_group

log = logging.getLogger(__name__)

# role name -> "module:ServerClass"; imported only when the role is started.
ROLE_SERVERS = {
    "t2i": "actors.t2i:T2IServer",
    "llm": "actors.chat.server:LLMServer",
    "vlm": "actors.chat.server:VLMServer",
    "captioner": "actors.captioner:CaptionerServer",
    "clip": "actors.clip_scorer:ClipServer",
}
#: The server of an actor answering several roles over one chat engine.
GROUP_SERVER = "actors.chat.server:ChatGroupServer"


class ServerChoice(NamedTuple):
    """What one group's actors run: the server class (or its ``module:Class`` path) and its constructor's argument."""

    server: Union[type, str]
    arg: Any


def production_servers(group: RoleGroup, cfg: Any) -> ServerChoice:
    """The real servers: a role's own server built from its config section; a shared group's
    :data:`GROUP_SERVER` from ``{role: section}``."""
    if not group.shared:
        role = group.roles[0]
        return ServerChoice(ROLE_SERVERS[role], getattr(cfg, role))
    return ServerChoice(GROUP_SERVER, {role: getattr(cfg, role) for role in group.roles})


#: ``start_roles``' choice of server per group (``servers=``): :func:`production_servers`, or the scale
#: simulation's latency-model stand-ins (benchmarks/scale/roles.py), which change nothing else.
ServerPicker = Callable[[RoleGroup, Any], ServerChoice]


#: The Ray concurrency group the servers' ``CONTROL_METHODS`` run in (the others run in the default
#: group, sized by ``resources.max_concurrency``). Each group has its own event loop (thread).
CONTROL_GROUP = "control"
#: Concurrent control calls one actor runs (they are short: more simply wait their turn briefly).
CONTROL_GROUP_CONCURRENCY = 64


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
    if res.num_replicas > 1 and res.placement == "spread":
        # Ray's default packs: both halves of a GPU-sharing role would land on one GPU while another node's sat
        # idle. replica_options replaces this best-effort hint by a bundle of a SPREAD placement group (and
        # places pack's replicas in a PACK group).
        opts["scheduling_strategy"] = "SPREAD"
    if name:
        opts["name"] = name
    return opts


def replica_options(res: ResourceConfig, names: Optional[Sequence[str]] = None, group_name: Optional[str] = None,
                    detached: bool = False) -> tuple[list[dict], Any]:
    """Ray options for each of ``res.num_replicas`` actors (``names``: theirs), and the placement group
    that spreads them (actors/spread.py; ``group_name``/``detached`` as there), None when not spread."""
    pg = spread_group(res, name=group_name, detached=detached) if wants_spread_group(res) else None
    options = []
    for i in range(res.num_replicas):
        opts = actor_options(res, name=names[i] if names else None)
        if pg is not None:
            opts["scheduling_strategy"] = bundle_strategy(pg, i)
        options.append(opts)
    return options, pg


def control_methods(cls: type) -> tuple[str, ...]:
    """The methods of ``cls`` it declares cheap (``CONTROL_METHODS``) that it has."""
    return tuple(name for name in getattr(cls, "CONTROL_METHODS", ()) if inspect.isfunction(getattr(cls, name, None)))


def _forward(fn):
    """A new function calling ``fn``, with its name and signature but no ``__wrapped__``: Ray reads a
    method's options from the function ``inspect.unwrap`` reaches, so a wrapper must not lead back
    to the (unmarked) server method."""
    if inspect.iscoroutinefunction(fn):
        async def method(self, *args, **kwargs):
            return await fn(self, *args, **kwargs)
    else:
        def method(self, *args, **kwargs):
            return fn(self, *args, **kwargs)
    return _named_like(method, fn)


def _named_like(method, fn):
    """``method`` with ``fn``'s name, doc and signature, but no ``__wrapped__`` (see :func:`_forward`)."""
    method.__name__, method.__qualname__, method.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    method.__signature__ = inspect.signature(fn)
    return method


def _resolving(fn):
    """``fn`` (a coroutine method) with the object references nested in its arguments awaited first
    (actors.object_refs.resolve_nested); named like ``fn`` (:func:`_named_like`)."""
    async def method(self, *args, **kwargs):
        from actors.object_refs import resolve_nested

        args, kwargs = await resolve_nested(args, kwargs)
        return await fn(self, *args, **kwargs)

    return _named_like(method, fn)


def data_methods(cls: type) -> tuple[str, ...]:
    """The public coroutine methods of ``cls`` that are not control methods: the ones that may get images."""
    control = set(control_methods(cls))
    return tuple(name for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction)
                 if not name.startswith("_") and name not in control)


def with_resolved_refs(cls: type) -> type:
    """A subclass of ``cls`` whose data methods take images as object references anywhere in their arguments:
    Ray resolves only top-level ones; a list of generated images or a message's image part arrives as references
    (the driver's actors.object_refs.ImageRefs), awaited here before the server's method runs."""
    wrapped = {name: _resolving(getattr(cls, name)) for name in data_methods(cls)}
    if not wrapped:
        return cls
    return type(cls.__name__, (cls,), {**wrapped, "__doc__": cls.__doc__})


def with_control_group(cls: type) -> type:
    """A subclass of ``cls`` whose ``CONTROL_METHODS`` are marked for :data:`CONTROL_GROUP`
    (``ray.method(concurrency_group=...)`` on forwarding methods: ``cls`` itself is left as is)."""
    import ray

    names = control_methods(cls)
    if not names:
        return cls
    marked = {name: ray.method(concurrency_group=CONTROL_GROUP)(_forward(getattr(cls, name))) for name in names}
    return type(cls.__name__, (cls,), {**marked, "__doc__": cls.__doc__})


def remote_class(cls: type):
    """``ray.remote(cls)``: its data methods resolve nested object references (:func:`with_resolved_refs`), and
    its control methods run in the control concurrency group when it declares any (Ray takes
    ``concurrency_groups`` only here, not in ``.options()``)."""
    import ray

    resolving = with_resolved_refs(cls)
    marked = with_control_group(resolving)
    if marked is resolving:
        return ray.remote(resolving)
    return ray.remote(concurrency_groups={CONTROL_GROUP: CONTROL_GROUP_CONCURRENCY})(marked)


def with_log_file(cls: type, log_file: str | os.PathLike) -> type:
    """``cls`` whose instances first send their process's output to ``log_file`` (appended), before
    the server's own ``__init__`` loads a model: logging, print, and what native code and child
    processes (a vLLM engine core) write to stdout / stderr (core.log_files.redirect_output).
    The file must be writable where the actor runs: on a cluster's worker nodes a path on the
    driver's machine usually is not, so a job passes one only to a local Ray."""
    path = os.fspath(log_file)

    def __init__(self, *args, **kwargs):
        from core.log_files import redirect_output

        redirect_output(path)
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__doc__": cls.__doc__})


def with_start_metric(cls: type, role: str) -> type:
    """``cls`` whose instances count themselves in ``role_starts_total`` (core.metrics) when they start: a
    replica Ray restarts after a crash runs ``__init__`` again, so restarts show as starts beyond the replicas."""

    def __init__(self, *args, **kwargs):
        from core.metrics import record

        record("role_starts_total", 1, {"role": role})
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__doc__": cls.__doc__})


def start_role(role: str, server: type | str, cfg: Any, res: ResourceConfig,
               log_file: str | os.PathLike | None = None, shared: Optional[SharedRoles] = None,
               group: Optional[str] = None) -> RoleClient:
    """Start ``res.num_replicas`` actors of ``server(cfg)`` and return their client.

    ``log_file``: each actor appends its output there (see :func:`with_log_file`) instead of
    Ray's worker logs; None keeps Ray's own logging.

    ``shared``: the actors are named ``<shared.name>:<group>:<replica>`` (``group`` defaults to
    ``role``) in the namespace actors.shared_roles.NAMESPACE, detached, and got if they exist:
    the first job starts them, later ones join them (``client.shared`` records what this job
    asked for; actors.shared_roles.check_shared_clients tells started from joined and refuses
    actors started with another config)."""
    cls = with_start_metric(import_server(server) if isinstance(server, str) else server, group or role)
    if log_file is not None:
        cls = with_log_file(cls, log_file)
    if shared is None:
        remote_cls = remote_class(cls)
        options, pg = replica_options(res)
        handles = [remote_cls.options(**opts).remote(cfg) for opts in options]
        return RoleClient(role, handles, placement_group=pg)
    group = group or role
    info = role_info(shared, group, config_snapshot(cfg, res))
    remote_cls = remote_class(with_shared_info(cls, info))
    # The group is detached and named like the actors: it outlives this job with them, and
    # actors.shared_roles stop removes it with them.
    options, _ = replica_options(res, names=[actor_name(shared.name, group, i) for i in range(res.num_replicas)],
                                 group_name=spread_group_name(shared.name, group), detached=True)
    handles = [remote_cls.options(**opts, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote(cfg)
               for opts in options]
    return RoleClient(role, handles, shared=info)


async def wait_ready(*clients: RoleClient) -> None:
    """Wait until every actor finished loading its model; a load error surfaces here, naming the role."""
    for client in clients:
        try:
            await client.broadcast("ping")
        except Exception as exc:  # noqa: BLE001 - re-raised with the role named
            raise RuntimeError(f"role {client.role!r} failed to start: {exc}") from exc


async def stop_roles(*clients: RoleClient, timeout_s: float = 30.0, include_shared: bool = False) -> None:
    """Close every role's actors (see :meth:`RoleClient.close`), except shared ones (``client.shared``):
    they outlive the job (actors.shared_roles stops them), unless ``include_shared``."""
    import asyncio

    # Clients of roles that share actors (RoleClient(route=...)) close those actors once.
    unique: dict[Any, RoleClient] = {}
    left: dict[str, list[str]] = {}
    for client in clients:
        handles = getattr(client, "handles", None)
        shared = getattr(client, "shared", None)
        if isinstance(shared, dict) and not include_shared:
            left.setdefault(shared["name"], [])
            if shared["group"] not in left[shared["name"]]:
                left[shared["name"]].append(shared["group"])
            continue
        unique.setdefault(frozenset(handles) if handles else id(client), client)
    for name, groups in left.items():
        log.info("left the shared roles %r running (%s): they outlive this job; stop them with "
                 "python -m actors.shared_roles stop --name %s", name, ", ".join(groups), name)
    await asyncio.gather(*(c.close(timeout_s) for c in unique.values()))


def start_roles(cfg: Any, log_dir: str | os.PathLike | None = None,
                shared: Union[str, SharedRoles, None] = None, servers: ServerPicker = production_servers) -> Roles:
    """Start the actors of an ArpoConfig-like object with t2i/llm/vlm/captioner/clip sections: one
    actor (or pool) per group of actors/role_groups.py, one client per role.

    ``log_dir``: each group's actors write their output to ``<log_dir>/<group>.log`` (a role
    of its own: ``<role>.log``; a shared actor: e.g. ``llm+vlm.log``).

    ``shared``: a shared-roles name (``job.shared_roles``) or :class:`SharedRoles`: start or join
    the named actors ``<name>:<group>:<replica>`` (see :func:`start_role`).

    ``servers``: what each group's actors run (:func:`production_servers`); resources, placement,
    groups, names, restarts and clients are the same whatever it picks."""
    if isinstance(shared, str):
        shared = SharedRoles(shared)
    groups = plan_groups(cfg)
    if shared is not None:
        check_layout(shared.name, {group.name: group.resources.num_replicas for group in groups})
    clients: dict[str, RoleClient] = {}
    for group in groups:
        log_file = None if log_dir is None else os.path.join(log_dir, f"{group.name}.log")
        choice = servers(group, cfg)
        if not group.shared:
            role = group.roles[0]
            clients[role] = start_role(role, choice.server, choice.arg, group.resources, log_file=log_file,
                                       shared=shared, group=group.name)
            continue
        server = import_server(choice.server) if isinstance(choice.server, str) else choice.server
        actors = start_role(group.name, server, choice.arg, group.resources, log_file=log_file, shared=shared,
                            group=group.name)
        for role in group.roles:
            clients[role] = RoleClient(role, actors.handles, route=role, control=server.role_control_methods(role),
                                       shared=actors.shared, placement_group=actors.placement_group)
        log.info("roles %s share one actor (one model, one engine)", ", ".join(group.roles))
    if clients["llm"].route is None and cfg.llm.model == cfg.vlm.model:
        log.warning("llm and vlm name the same model but differ in %s: two engines load it (make those equal to share one)",
                    ", ".join(engine_differences(cfg.llm, cfg.vlm)))
    return Roles(**{role: clients[role] for role in ("t2i", "llm", "vlm", "captioner", "clip")})
