"""Where the replicas of one role go: a placement group with one bundle per replica — strategy SPREAD for
``resources.placement: spread`` (different nodes), PACK for ``pack`` (as few nodes as possible).

Ray's actor-level ``scheduling_strategy="SPREAD"`` is best effort per lease request: two replicas
started back to back can land on one node while another node that fits them sits idle (CI's scale
run once saw both half-GPU T2I replicas of configs/gpu_cluster.yaml on one gpu_small node). A
placement group with strategy SPREAD is placed by the GCS in one decision over all its bundles:
distinct nodes whenever the cluster has them, shared nodes only when it has too few (a single
machine still starts every replica). Each replica then runs in its own bundle, restarts in it, and
an autoscaler sees the group's bundles as demand. ``pack`` is a PACK group for the same reason: Ray's
default placement of separate actors fills a node first only sometimes (CI saw both outcomes), PACK
puts every bundle on one node whenever one node fits them all.
"""
from __future__ import annotations

from typing import Any, Optional

from actors.capacity import actor_bundle
from actors.config import ResourceConfig


def wants_spread_group(res: ResourceConfig) -> bool:
    """Several replicas, each asking for something a node has to hold: their placement is a group's."""
    return res.num_replicas > 1 and bool(actor_bundle(res))


def group_strategy(res: ResourceConfig) -> str:
    return "SPREAD" if res.placement == "spread" else "PACK"


def spread_group(res: ResourceConfig, name: Optional[str] = None, detached: bool = False):
    """The placement group for ``res``'s replicas (strategy :func:`group_strategy`). ``name``: joined if a live group has it, in
    any Ray namespace (actors shared between jobs join the group their first job made; jobs need not
    share a namespace); ``detached``: it outlives the job that made it (as shared role actors do),
    else Ray removes it when that job ends."""
    import ray
    from ray.util.placement_group import placement_group

    if name is not None:
        found = named_groups(name)
        if found:
            return found[0]
    pg = placement_group([actor_bundle(res)] * res.num_replicas, strategy=group_strategy(res), name=name or "",
                         lifetime="detached" if detached else None)
    if name is not None:
        # Two jobs starting at once can both make one: each keeps the same one (the first by id).
        first = named_groups(name)[0]
        if first.id != pg.id:
            ray.util.remove_placement_group(pg)
            return first
    return pg


def named_groups(name: str, prefix: bool = False) -> list:
    """The live placement groups called ``name`` (or whose name starts with it), ordered by id."""
    import ray
    from ray.util.placement_group import PlacementGroup

    found = []
    for pg_id, info in ray.util.placement_group_table().items():
        got = info.get("name") or ""
        if (got.startswith(name) if prefix else got == name) and info.get("state") != "REMOVED":
            found.append((pg_id, got))
    return [PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))) for pg_id, _ in sorted(found)]


def bundle_strategy(pg: Any, index: int):
    """Run an actor in bundle ``index`` of ``pg``; what it starts (a vLLM engine's workers) is not captured."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index,
                                            placement_group_capture_child_tasks=False)


def remove_group(pg: Any) -> None:
    """Give the group's reservations back (its actors are gone or going); a group already removed is fine."""
    import ray

    try:
        ray.util.remove_placement_group(pg)
    except Exception:  # noqa: BLE001 - already removed, or Ray shutting down: nothing is held any more
        pass


def remove_named_groups(prefix: str) -> int:
    """Remove the live placement groups whose name starts with ``prefix``; returns how many."""
    groups = named_groups(prefix, prefix=True)
    for pg in groups:
        remove_group(pg)
    return len(groups)
