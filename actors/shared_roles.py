"""Role actors shared by several jobs on one Ray cluster (``job.shared_roles``), and stopping them.

The GPUs are the expensive part of a cluster, and a role's batcher fills better from several
jobs than from one (docs/scale.md, "Several drivers"). With ``job.shared_roles: NAME`` every
role actor is a *named, detached* actor in the Ray namespace :data:`NAMESPACE`, called
``NAME:<group>:<replica>`` (``<group>``: the role, or the roles sharing one actor joined with
'+', e.g. ``llm+vlm``), created with ``get_if_exists``: the first job to ask starts it, later
jobs join it, and no job stops it when it ends (a detached actor outlives the driver that
created it). ``python -m actors.shared_roles stop --name NAME`` stops them (``list`` lists them).

Each actor carries what it was started with (:func:`config_snapshot`: the role's config
section(s) and resources, and their fingerprint); a job that finds a different one is refused
with the differing keys named (:class:`SharedRolesMismatch`) rather than silently served by
another model. Whether a job started or joined each role is told by a token of the job's own
stored in the actors it created.

Nothing here is imported by the role servers; Ray is imported only inside the functions that
talk to it.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from actors.spread import remove_named_groups
from core.cli import parse_or_status

#: The Ray namespace every shared role actor lives in, whatever the jobs' own namespaces.
NAMESPACE = "expectdiff-shared-roles"
#: What a shared-roles name may be: it is the first part of the actors' names (':' separates the parts).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: The actor method that answers what the actor was started with (run in the control concurrency group).
INFO_METHOD = "shared_role_info"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not a shared-roles name: 1 to 64 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")
    return name


def actor_name(name: str, group: str, replica: int) -> str:
    """``<name>:<role-or-group>:<replica>``, e.g. ``team-a:llm+vlm:0``."""
    return f"{name}:{group}:{replica}"


def spread_group_name(name: str, group: str) -> str:
    """``<name>:<role-or-group>:spread``: the placement group of a shared group's replicas (actors/spread.py; its
    strategy PACK when the role's placement is pack)."""
    return f"{name}:{group}:spread"


@dataclass(frozen=True)
class SharedRoles:
    """One job's side of a set of shared roles: their name, and the token marking the actors it creates."""

    name: str
    creator: str = field(default_factory=lambda: uuid.uuid4().hex)
    owner: str = field(default_factory=lambda: f"pid {os.getpid()} on {socket.gethostname()}")

    def __post_init__(self):
        check_name(self.name)


class SharedRolesMismatch(RuntimeError):
    """Shared role actors already run under this name with another config: the job must not use them."""


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def config_snapshot(cfg: Any, resources: Any) -> dict:
    """What decides a role actor: the config it is built from (a role's section, or ``{role: section}``
    for an actor shared by roles) and its resources, as JSON-ready data."""
    return {"config": _jsonable(cfg), "resources": _jsonable(resources)}


def fingerprint(snapshot: dict) -> str:
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-ready values (a key missing on one side differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            sub = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                out.append(sub)
            else:
                out.extend(differing_keys(a[key], b[key], sub))
        return out
    return [] if a == b else [prefix or "(the whole config)"]


def role_info(shared: SharedRoles, group: str, snapshot: dict) -> dict:
    """What an actor of ``group`` started by this job records (see :func:`with_shared_info`)."""
    return {"name": shared.name, "group": group, "fingerprint": fingerprint(snapshot), "snapshot": snapshot,
            "creator": shared.creator, "owner": shared.owner,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def with_shared_info(cls: type, info: dict) -> type:
    """``cls`` with an async method ``shared_role_info()`` answering ``info`` (plus the actor's id and
    process), a control method (actors.ray_actors runs it in the control concurrency group)."""

    async def shared_role_info(self) -> dict:
        import ray

        return {**info, "actor_id": ray.get_runtime_context().get_actor_id(), "pid": os.getpid()}

    control = tuple(getattr(cls, "CONTROL_METHODS", ())) + (INFO_METHOD,)
    return type(cls.__name__, (cls,), {INFO_METHOD: shared_role_info, "CONTROL_METHODS": control,
                                       "__doc__": cls.__doc__})


@dataclass
class SharedCheck:
    """How a job came by one group's shared actors."""

    group: str
    actor_names: list[str]
    started: int  # actors this job created
    joined: int  # actors another job had created
    infos: list[dict]

    def describe(self, name: str) -> str:
        names = ", ".join(self.actor_names)
        if not self.joined:
            return f"shared roles {name!r}: started {self.group} ({names})"
        first = self.infos[0] if self.infos else {}
        joined = (f"joined {self.group} ({names}), started by {first.get('owner', '?')} at {first.get('started_at', '?')}"
                  if not self.started else
                  f"joined {self.joined} and started {self.started} of the actors of {self.group} ({names})")
        return f"shared roles {name!r}: {joined}"


def running_layout(name: str) -> dict[str, int]:
    """Replicas per group (``<role or group>`` of :func:`actor_name`) of the shared roles ``name`` now alive."""
    layout: dict[str, int] = {}
    for actor in list_shared_roles(name):
        group = actor.split(":")[1]
        layout[group] = layout.get(group, 0) + 1
    return layout


def check_layout(name: str, planned: dict[str, int]) -> None:
    """Refuse, before any actor starts, a job whose actor layout differs from the shared roles running
    under ``name``: other groups (which roles share one actor) or other replica counts. Joining by name
    would otherwise start a second set of actors beside the running ones (more GPUs, silently)."""
    running = running_layout(name)
    if running and running != planned:
        def describe(layout: dict[str, int]) -> str:
            return ", ".join(f"{group} ×{count}" for group, count in sorted(layout.items()))

        raise SharedRolesMismatch(
            f"shared roles {name!r} run the actors {describe(running)}; this config would make {describe(planned)} "
            f"(roles share an actor when they name the same engine; num_replicas sets the count). Use the same "
            f"role settings as the job that started them, another job.shared_roles name, or stop them first "
            f"(python -m actors.shared_roles stop --name {name})")


async def check_shared_clients(clients: Sequence[Any], timeout_s: Optional[float] = None) -> list[SharedCheck]:
    """For each role client of shared actors (``client.shared``; clients of one group checked once): ask
    every actor what it was started with and compare with what this job asked for. Returns, per
    group, whether this job started or joined its actors; raises :class:`SharedRolesMismatch`
    naming the differing keys when the actors run another config."""
    seen: dict[frozenset, Any] = {}
    for client in clients:
        if isinstance(getattr(client, "shared", None), dict):
            seen.setdefault(frozenset(client.handles), client)
    out: list[SharedCheck] = []
    for client in seen.values():
        want = client.shared
        try:
            infos = await asyncio.wait_for(asyncio.gather(*(getattr(h, INFO_METHOD).remote() for h in client.handles)),
                                           timeout_s)
        except AttributeError as exc:
            raise SharedRolesMismatch(f"actors named {want['name']}:{want['group']}:* in namespace {NAMESPACE!r} are not "
                                      f"shared role actors of this program ({exc})") from exc
        for i, info in enumerate(infos):
            if info.get("fingerprint") != want["fingerprint"]:
                keys = differing_keys(info.get("snapshot"), want["snapshot"])
                raise SharedRolesMismatch(
                    f"shared roles {want['name']!r}: the running actor {actor_name(want['name'], want['group'], i)} "
                    f"(started by {info.get('owner', '?')} at {info.get('started_at', '?')}) was started with another "
                    f"config; differing keys: {', '.join(keys) or '(none found; a different fingerprint)'}. Use the "
                    f"same role settings as the job that started them, another job.shared_roles name, or stop them "
                    f"first (python -m actors.shared_roles stop --name {want['name']})")
        started = sum(info.get("creator") == want["creator"] for info in infos)
        out.append(SharedCheck(want["group"], [actor_name(want["name"], want["group"], i) for i in range(len(infos))],
                               started, len(infos) - started, list(infos)))
    return out


def list_shared_roles(name: Optional[str] = None) -> list[str]:
    """Names of the shared role actors alive in the connected Ray (those of ``name`` only, when given)."""
    import ray

    found = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == NAMESPACE]
    if name is not None:
        found = [n for n in found if n.split(":", 1)[0] == name]
    return sorted(found)


def stop_shared_roles(name: str, timeout_s: float = 30.0) -> list[str]:
    """Stop every actor of the shared roles ``name`` in the connected Ray: each releases its model
    (``aclose``, as at a job's end), then is killed without restart. Returns the actors' names."""
    import ray

    from actors.role_client import RoleClient

    check_name(name)
    names = list_shared_roles(name)
    handles = []
    for actor in names:
        try:
            handles.append(ray.get_actor(actor, namespace=NAMESPACE))
        except ValueError:  # gone in between
            continue
    if handles:
        asyncio.run(RoleClient(f"shared roles {name}", handles).close(timeout_s))
    remove_named_groups(f"{name}:")  # the groups spreading their replicas: nothing left in them
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m actors.shared_roles stop --name NAME``: stop the shared role actors ``NAME``
    (``job.shared_roles``); ``list [--name NAME]``: print their names. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m actors.shared_roles", description=(
        "The model-role actors several batch jobs share (job.shared_roles: NAME). They outlive the jobs that "
        "use them: stop them once no job needs them (a running job that uses them then fails)."))
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else the Ray running on this machine)")
    commands = parser.add_subparsers(dest="command", required=True)
    stop = commands.add_parser("stop", help="stop the shared roles NAME: each actor releases its model, then is killed")
    stop.add_argument("--name", required=True, help="the job.shared_roles name")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds each actor gets to release its model (default 30)")
    listing = commands.add_parser("list", help="print the names of the shared role actors running")
    listing.add_argument("--name", default=None, help="only those of this job.shared_roles name")
    args = parse_or_status(lambda: parser.parse_args(argv))
    if isinstance(args, int):
        return args
    try:
        if args.name is not None:
            check_name(args.name)
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    import ray

    try:
        ray.init(address=args.address or os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=False,
                 logging_level="error")
    except Exception as exc:  # noqa: BLE001 - no cluster to connect to: say so, exit 2
        print(f"cannot connect to Ray: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "list":
            for actor in list_shared_roles(args.name):
                print(actor)
            return 0
        stopped = stop_shared_roles(args.name, timeout_s=args.timeout)
        if not stopped:
            others = sorted({n.split(":", 1)[0] for n in list_shared_roles()})
            print(f"no shared roles named {args.name!r} are running"
                  + (f" (running: {', '.join(others)})" if others else ""), file=sys.stderr)
            return 1
        for actor in stopped:
            print(f"stopped {actor}")
        return 0
    finally:
        ray.shutdown()

if __name__ == "__main__":
    sys.exit(main())
