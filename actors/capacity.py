"""Can the cluster hold the roles at all? Checked before any actor starts.

Ray leaves an actor whose resources no node can give pending forever (printing
"No available node types can fulfill resource request" every half minute), so a
config written for another cluster would hang the job. Here each role's per-actor
demand (``ResourceConfig``: CPU, GPU, custom resources) is compared with the nodes
there are and, on an autoscaling cluster, the node types it may add; and the summed
demand of all actors with what the cluster has or may grow to.
"""
from __future__ import annotations

from typing import Mapping

from actors.config import ResourceConfig
from core.ray_cluster import EPS as _EPS
from core.ray_cluster import ClusterShape, current_cluster_shape  # noqa: F401 - part of this module's interface


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
