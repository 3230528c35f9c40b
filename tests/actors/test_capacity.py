"""The capacity check the batch job runs before starting any role (actors.capacity)."""
from __future__ import annotations

import math

import yaml

from actors.capacity import ClusterShape, actor_bundle, capacity_problems
from actors.config import ResourceConfig
from agents.config import ArpoConfig
from core.config import load_config

ROLES = ("t2i", "llm", "vlm", "captioner", "clip")


def _roles(cfg: ArpoConfig) -> dict:
    return {r: getattr(cfg, r).resources for r in ROLES}


def test_defaults_on_a_cpu_machine_name_the_gpu_shortfall():
    problems = capacity_problems(_roles(ArpoConfig()), ClusterShape(nodes=[{"CPU": 2.0}]))
    assert "role 't2i': one actor needs GPU 1 (the most on one node: 0)" in problems
    assert "all roles together need GPU 3.75, the cluster has 0 (short by 3.75)" in problems
    assert "all roles together need CPU 5, the cluster has 2 (short by 3)" in problems


def _cluster_yaml_node_types() -> list:
    spec = yaml.safe_load(open("cluster.yaml"))
    return [(t["resources"], t.get("max_workers")) for name, t in spec["available_node_types"].items()
            if name != spec["head_node_type"]]


def test_gpu_cluster_profile_fits_cluster_yaml_node_types_only_with_the_autoscaler():
    cfg = load_config(ArpoConfig, "configs/gpu_cluster.yaml")
    head = {"CPU": 0.0}  # cluster.yaml's head takes no work
    types = _cluster_yaml_node_types()
    assert capacity_problems(_roles(cfg), ClusterShape(nodes=[head], node_types=types)) == []
    fixed = capacity_problems(_roles(cfg), ClusterShape(nodes=[head, {"CPU": 2.0}]))  # this machine, no autoscaler
    assert "role 'llm': one actor needs GPU 1 (the most on one node: 0), gpu_large 1 (the most on one node: 0)" in fixed


def test_one_actor_must_fit_on_one_node_even_when_the_total_suffices():
    roles = {"llm": ResourceConfig(num_gpus=2.0, num_cpus=1.0)}
    two_single_gpu_nodes = ClusterShape(nodes=[{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}])
    assert capacity_problems(roles, two_single_gpu_nodes) == ["role 'llm': one actor needs GPU 2 (the most on one node: 1)"]


def test_replicas_count_towards_the_total_and_unbounded_node_types_always_fit():
    roles = {"clip": ResourceConfig(num_gpus=0.5, num_cpus=1.0, num_replicas=5)}
    one_gpu = ClusterShape(nodes=[{"CPU": 16.0, "GPU": 1.0}])
    assert capacity_problems(roles, one_gpu) == ["all roles together need GPU 2.5, the cluster has 1 (short by 1.5)"]
    unbounded = ClusterShape(nodes=[{"CPU": 16.0}], node_types=[({"CPU": 8.0, "GPU": 1.0}, None)])
    assert unbounded.most_in_total("GPU") == math.inf and capacity_problems(roles, unbounded) == []


def test_actor_bundle_leaves_out_zero_amounts():
    assert actor_bundle(ResourceConfig(num_gpus=0.0, num_cpus=0.5, custom_resources={"gpu_small": 1})) == {"CPU": 0.5, "gpu_small": 1.0}
