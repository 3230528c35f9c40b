"""Start (or join) the five roles on the simulated cluster with configs/gpu_cluster.yaml's resources.

The actors are the real role servers with latency-model stand-ins (benchmarks/scale/standins.py),
each started with ``actors.ray_actors.replica_options(res)`` — the same options ``start_role`` gives
them (num_gpus, num_cpus, custom resources, restarts, max_concurrency) — plus a name in a
namespace, so that several drivers share them: ``get_if_exists`` makes the first driver start an
actor and every later one join it (see docs/scale.md, "Several drivers"). The clients are
``actors.ray_actors.RoleClient``s, as in production.
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from actors.ray_actors import remote_class, replica_options
from actors.spread import remove_named_groups
from actors.role_client import RoleClient
from actors.roles import Roles
from benchmarks.scale.latency import LatencyModel
from benchmarks.scale.standins import OUTPUT_SIDE, SERVERS, Behaviour, RoleSpec

ROLES = ("t2i", "llm", "vlm", "captioner", "clip")


def role_specs(cfg: Any, model: LatencyModel, image_side: int = OUTPUT_SIDE,
               gpu_clocks: Optional[tuple[str, str]] = None, behaviour: Behaviour = Behaviour(),
               load_s: float = 0.0) -> dict[str, RoleSpec]:
    """Each role's stand-in spec. ``gpu_clocks`` ((prefix, namespace) of the node GPU clocks): ``--gpu-sharing
    time`` — batched roles hand their whole-GPU work to their node's clock, chat engines run at a whole GPU
    (the only tenant of their node's GPU, checked after placement)."""
    costs = {"t2i": model.t2i, "llm": model.llm, "vlm": model.vlm, "captioner": model.captioner,
             "clip": (model.clip_text, model.clip_image)}
    specs = {}
    for role in ROLES:
        section = getattr(cfg, role)
        share = section.resources.num_gpus
        if not share > 0:
            raise ValueError(f"{role}: the latency model needs a GPU share (resources.num_gpus > 0), got {share}")
        if gpu_clocks:
            share = 1.0
        specs[role] = RoleSpec(role, section, costs[role], share, model.dilation, model.answers, image_side=image_side,
                               gpu_clocks=gpu_clocks, behaviour=behaviour, load_s=load_s)
    return specs


#: The end of the name of a role's placement group (start_or_join_roles): what tells it from Ray Train's.
ROLE_GROUP_SUFFIX = "-spread"


def role_group_name(prefix: str, role: str) -> str:
    return f"{prefix}-{role}{ROLE_GROUP_SUFFIX}"


def start_or_join_roles(cfg: Any, specs: dict[str, RoleSpec], prefix: str, namespace: str) -> dict[str, list]:
    """Actor handles per role: ``<prefix>-<role>-<i>`` in ``namespace``, started if missing."""
    handles: dict[str, list] = {}
    for role in ROLES:
        res = getattr(cfg, role).resources
        cls = remote_class(SERVERS[role])  # as start_role builds it: cheap methods in their own concurrency group
        # replicas spread as start_role spreads them: one SPREAD placement group per role (kill removes it)
        options, _ = replica_options(res, names=[f"{prefix}-{role}-{i}" for i in range(res.num_replicas)],
                                     group_name=role_group_name(prefix, role))
        handles[role] = [cls.options(**opts, namespace=namespace, get_if_exists=True).remote(specs[role])
                         for opts in options]
    return handles


def clients(handles: dict[str, list]) -> Roles:
    return Roles(**{role: RoleClient(role, handles[role]) for role in ROLES})


async def placement(handles: dict[str, list], node_type_of: dict[str, str]) -> list[dict]:
    """Each replica's node (id, type) and process, as the actor itself reports it."""
    rows = []
    for role in ROLES:
        for i, h in enumerate(handles[role]):
            where = await h.where.remote()
            rows.append({"role": role, "replica": i, "node_id": where["node_id"],
                         "node_type": node_type_of.get(where["node_id"], "?"), "pid": where["pid"]})
    return rows


async def wait_ready(handles: dict[str, list], timeout_s: float = 300) -> None:
    await asyncio.wait_for(asyncio.gather(*(h.ping.remote() for hs in handles.values() for h in hs)), timeout_s)


async def role_stats(handles: dict[str, list]) -> dict[str, list]:
    return {role: [await h.stats.remote() for h in handles[role]] for role in ROLES}


def kill(handles: dict[str, list], prefix: str) -> None:
    """Kill the actors, and remove the placement groups start_or_join_roles made for ``prefix``."""
    import ray

    for hs in handles.values():
        for h in hs:
            ray.kill(h, no_restart=True)
    remove_named_groups(f"{prefix}-")
