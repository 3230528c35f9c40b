"""Can the cluster hold the roles at all? Checked before any actor starts.

Ray leaves an actor whose resources no node can give pending forever (printing
"No available node types can fulfill resource request" every half minute), so a
config written for another cluster would hang the job. Here each role's per-actor
demand (``ResourceConfig``: CPU, GPU, custom resources) is compared with the nodes
there are and, on an autoscaling cluster, the node types it may add; and the summed
demand of all actors with what the cluster has or may grow to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from actors.config import ResourceConfig

_EPS = 1e-9


@dataclass(frozen=True)
class ClusterShape:
    """What the cluster offers: the resources of each live node, and the autoscaler's node types."""

    nodes: Sequence[Mapping[str, float]]
    node_types: Sequence[tuple[Mapping[str, float], Optional[int]]] = field(default_factory=tuple)  # (resources, max nodes; None: unbounded)

    def most_on_one_node(self, resource: str) -> float:
        shapes = [*self.nodes, *(r for r, _ in self.node_types)]
        return max((float(s.get(resource, 0.0)) for s in shapes), default=0.0)

    def most_in_total(self, resource: str) -> float:
        total = sum(float(n.get(resource, 0.0)) for n in self.nodes)
        for resources, max_count in self.node_types:
            if resources.get(resource, 0.0) > 0:
                if max_count is None:
                    return math.inf
                total += max_count * float(resources[resource])
        return total

    def fits_one_node(self, bundle: Mapping[str, float]) -> bool:
        shapes = [*self.nodes, *(r for r, _ in self.node_types)]
        return any(all(float(s.get(k, 0.0)) + _EPS >= v for k, v in bundle.items()) for s in shapes)


def actor_bundle(res: ResourceConfig) -> dict[str, float]:
    """The resources one actor of a role asks Ray for (zero amounts left out)."""
    bundle = {"CPU": res.num_cpus, "GPU": res.num_gpus, **res.custom_resources}
    return {k: float(v) for k, v in bundle.items() if v}


def capacity_problems(roles: Mapping[str, ResourceConfig], shape: ClusterShape) -> list[str]:
    """One sentence per shortfall, naming the role, the resource and the numbers; empty when it fits."""
    problems = []
    totals: dict[str, float] = {}
    for role, res in roles.items():
        bundle = actor_bundle(res)
        for key, amount in bundle.items():
            totals[key] = totals.get(key, 0.0) + amount * res.num_replicas
        if shape.fits_one_node(bundle):
            continue
        short = [f"{key} {amount:g} (the most on one node{' or node type' if shape.node_types else ''}: "
                 f"{shape.most_on_one_node(key):g})" for key, amount in bundle.items()
                 if shape.most_on_one_node(key) + _EPS < amount]
        why = ", ".join(short) or f"no single node has all of {bundle}"
        problems.append(f"role {role!r}: one actor needs {why}")
    for key, need in sorted(totals.items()):
        have = shape.most_in_total(key)
        if have + _EPS < need:
            problems.append(f"all roles together need {key} {need:g}, the cluster {'can grow to' if shape.node_types else 'has'} "
                            f"{have:g} (short by {need - have:g})")
    return problems


def current_cluster_shape() -> ClusterShape:
    """The connected Ray cluster's live nodes and, when an autoscaler config is published, its node types."""
    import ray

    nodes = [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]
    node_types = []
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - no autoscaler state: a fixed cluster
        config = None
    if config is not None:
        for group in config.node_group_configs:
            if group.max_count == 0 or not group.resources:
                continue
            node_types.append((dict(group.resources), None if group.max_count < 0 else int(group.max_count)))
    return ClusterShape(nodes=nodes, node_types=node_types)
