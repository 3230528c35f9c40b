"""Start (or join) the five roles on the simulated cluster through the production start-up.

The roles start as a batch job with ``job.shared_roles`` starts them: ``actors.ray_actors.start_roles``
(its role groups, ``start_role``'s options — num_gpus, num_cpus, custom resources, restarts,
max_concurrency —, the SPREAD placement group per role, the shared roles' names, detached actors and
config fingerprints). The one thing it is told differently is what each actor runs
(``servers=``): the real role servers with latency-model stand-ins for their models
(benchmarks/scale/standins.py). The benchmark's main process starts them under a shared-roles name
and every driver joins them by that name through ``agents.batch.startup.start_ray_and_roles``, the
batch job's own start-up (see docs/scale.md, "Several drivers").
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from actors.ray_actors import ServerChoice, ServerPicker, start_roles
from actors.role_groups import RoleGroup
from actors.shared_roles import SharedRoles, stop_shared_roles
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


#: The end of the name of a role's placement group (actors.shared_roles.spread_group_name): what tells it from Ray
#: Train's.
ROLE_GROUP_SUFFIX = ":spread"


def standin_servers(specs: dict[str, RoleSpec]) -> ServerPicker:
    """``start_roles``' ``servers``: each role's stand-in server, built from its :class:`RoleSpec`."""

    def pick(group: RoleGroup, cfg: Any) -> ServerChoice:
        if group.shared:
            raise ValueError(f"the simulation has no stand-in for roles that share one actor ({group.name}); "
                             "give the llm and vlm sections different engines")
        role = group.roles[0]
        return ServerChoice(SERVERS[role], specs[role])

    return pick


def start_or_join_roles(cfg: Any, specs: dict[str, RoleSpec], name: str) -> dict[str, list]:
    """Actor handles per role: the shared roles ``name`` (``<name>:<role>:<i>``), started if missing."""
    roles = start_roles(cfg, shared=SharedRoles(name), servers=standin_servers(specs))
    return handles_of(roles)


def handles_of(roles: Any) -> dict[str, list]:
    """``{role: actor handles}`` of an actors.roles.Roles of RoleClients."""
    return {role: list(getattr(roles, role).handles) for role in ROLES}


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


def kill(name: str) -> None:
    """Stop the shared roles ``name`` as ``python -m actors.shared_roles stop`` does: each actor releases its
    model, is killed without restart, and the placement groups spreading them are removed."""
    stop_shared_roles(name)
