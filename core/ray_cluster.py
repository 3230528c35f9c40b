"""What a Ray cluster offers: its live nodes and the node types its autoscaler may add.

Shared by the model roles' capacity check (actors/capacity.py) and the training workers' placement
(training/placement.py): Ray leaves a request no node can give pending for ever, so both compare
their demand with this shape before asking.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

EPS = 1e-9


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
        return any(all(float(s.get(k, 0.0)) + EPS >= v for k, v in bundle.items()) for s in shapes)

    def how_many_fit(self, bundle: Mapping[str, float]) -> float:
        """How many copies of ``bundle`` the live nodes hold together, each copy on one node (math.inf when an
        autoscaler node type that holds one may be added without limit)."""
        def per_node(s: Mapping[str, float]) -> int:
            return min((int((float(s.get(k, 0.0)) + EPS) // v) for k, v in bundle.items() if v > 0), default=0)

        total: float = sum(per_node(n) for n in self.nodes)
        for resources, max_count in self.node_types:
            if per_node(resources):
                if max_count is None:
                    return math.inf
                total += max_count * per_node(resources)
        return total

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
