"""What the autoscaler would add for a resource demand, on cluster.yaml's node types (no Ray needed).

A small model of the decision Ray's autoscaler makes for pending work: each bundle (an actor's or a
Ray Train worker's resources) goes onto a node that still has room for it — a live node first, else
one already planned — or else onto a new node of the first node type in cluster.yaml that can hold
it; the new nodes per type are then checked against cluster.yaml's ``max_workers`` (per type and for
the whole cluster). The bundles here always carry a node type's custom resource (``gpu_large`` /
``gpu_small``), so exactly one type can hold each and the choice of type is not a heuristic. Ray's
own autoscaler bin-packs the same way (first fit onto existing and pending nodes, then launches)
but also weighs node types by utilisation when several fit; this model does not run it.

Used by ``python -m benchmarks.scale.train_beside`` for the plan of each workload (the serving roles
of configs/gpu_cluster.yaml, each MDSS config's training workers, both together) and, during the
simulation, to turn the demand Ray reports as pending into the nodes to add.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import yaml

from benchmarks.scale.cluster import CLUSTER_YAML

_EPS = 1e-9


@dataclass(frozen=True)
class NodeTypeLimits:
    """A worker node type: its resources and how many the autoscaler may run."""

    name: str
    resources: Mapping[str, float]
    max_workers: Optional[int]


@dataclass(frozen=True)
class ClusterLimits:
    worker_types: tuple[NodeTypeLimits, ...]  # cluster.yaml order, the head type left out
    max_workers: Optional[int]  # the whole cluster's cap on worker nodes


def cluster_limits(path: Path = CLUSTER_YAML) -> ClusterLimits:
    """cluster.yaml's worker node types (resources, max_workers) and the cluster-wide max_workers."""
    doc = yaml.safe_load(Path(path).read_text())
    head = doc["head_node_type"]
    types = tuple(NodeTypeLimits(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()},
                                 spec.get("max_workers"))
                  for name, spec in doc["available_node_types"].items() if name != head)
    return ClusterLimits(types, doc.get("max_workers"))


def fits(bundle: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(float(free.get(k, 0.0)) + _EPS >= v for k, v in bundle.items() if v)


def _take(free: dict, bundle: Mapping[str, float]) -> None:
    for k, v in bundle.items():
        free[k] = float(free.get(k, 0.0)) - v


@dataclass
class Plan:
    """Where each bundle goes: an existing node (by index) or a new node of a type."""

    new_nodes: list[str] = field(default_factory=list)  # node type of each node to add, in launch order
    on_existing: int = 0  # bundles that fit on live nodes
    unplaceable: list[dict] = field(default_factory=list)  # bundles no node type can hold

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.new_nodes:
            out[name] = out.get(name, 0) + 1
        return out


def plan_nodes(bundles: Iterable[Mapping[str, float]], limits: ClusterLimits,
               existing_free: Sequence[Mapping[str, float]] = ()) -> Plan:
    """First fit: each bundle onto a live node with room (``existing_free``: each live node's free
    resources), else onto a node this plan already adds, else onto a new node of the first worker
    type that can hold it. Bundles are taken largest first (by their custom-resource and GPU share),
    as a first-fit-decreasing packing."""
    free_live = [dict(f) for f in existing_free]
    planned: list[tuple[str, dict]] = []
    plan = Plan()

    def weight(b: Mapping[str, float]) -> tuple:
        return (-sum(v for k, v in b.items() if k not in ("CPU", "memory")), -float(b.get("CPU", 0.0)))

    for bundle in sorted((dict(b) for b in bundles), key=weight):
        home = next((f for f in free_live if fits(bundle, f)), None)
        if home is not None:
            _take(home, bundle)
            plan.on_existing += 1
            continue
        home = next((f for _, f in planned if fits(bundle, f)), None)
        if home is None:
            kind = next((t for t in limits.worker_types if fits(bundle, t.resources)), None)
            if kind is None:
                plan.unplaceable.append(bundle)
                continue
            home = dict(kind.resources)
            planned.append((kind.name, home))
            plan.new_nodes.append(kind.name)
        _take(home, bundle)
    return plan


def over_limits(counts: Mapping[str, int], limits: ClusterLimits) -> list[str]:
    """One sentence per cap of cluster.yaml that ``counts`` (worker nodes per type) exceeds."""
    problems = []
    for t in limits.worker_types:
        n = counts.get(t.name, 0)
        if t.max_workers is not None and n > t.max_workers:
            problems.append(f"{t.name}: {n} nodes needed, max_workers {t.max_workers}")
    total = sum(counts.values())
    if limits.max_workers is not None and total > limits.max_workers:
        problems.append(f"all types: {total} worker nodes needed, cluster max_workers {limits.max_workers}")
    return problems


def serving_bundles(cfg) -> list[dict]:
    """One bundle per role replica of an ArpoConfig (what each actor asks Ray for: a bundle of its SPREAD group when spread)."""
    from actors.capacity import actor_bundle

    out = []
    for role in ("t2i", "llm", "vlm", "captioner", "clip"):
        res = getattr(cfg, role).resources
        out += [actor_bundle(res) for _ in range(res.num_replicas)]
    return out


def training_bundles(cfg) -> list[dict]:
    """One bundle per Ray Train worker of a TrainConfig (``ScalingConfig.resources_per_worker``)."""
    return [dict(cfg.worker_resources()) for _ in range(cfg.num_workers)]
