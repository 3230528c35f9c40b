"""Training beside serving (SIMULATION): the autoscaler model on cluster.yaml, and
``python -m benchmarks.scale.train_beside --quick`` as CI runs it.

The quick run: the simulated cluster (1 head with the dashboard and job server on 127.0.0.1,
2 gpu_large, 2 gpu_small), the five roles as latency-model stand-ins, a 32-image batch, and while
it runs a real Ray Train MDSS job (tiny UNet, 1 worker, 2 steps) submitted with ``ray job submit``
whose worker asks for ``gpu_small: 1``. The serving roles hold fractions of both gpu_small nodes, so
the training waits until the benchmark adds a gpu_small node (what the autoscaler would do); then it
runs there. Both must finish, the worker must be on gpu_small, the roles untouched."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scale.autoscale import (ClusterLimits, NodeTypeLimits, cluster_limits, over_limits, plan_nodes,
                                        serving_bundles, training_bundles)

REPO = Path(__file__).resolve().parents[2]
EXPECTED_ROLES = {"t2i": "gpu_small", "captioner": "gpu_small", "clip": "gpu_small", "llm": "gpu_large", "vlm": "gpu_large"}


def _configs():
    from agents.config import ArpoConfig
    from core.config import load_config
    from training.config import TrainConfig

    serving = load_config(ArpoConfig, REPO / "configs" / "gpu_cluster.yaml")
    train = {name: load_config(TrainConfig, REPO / "configs" / "mdss" / f"{name}.yaml")
             for name in ("finetune_cifar10_ddpm", "sd15_text2image")}
    return serving, train


# ---------------------------------------------------------------------------- the autoscaler model (no Ray)

def test_plan_first_fit_on_live_nodes_then_new_nodes_of_the_type_that_holds_the_bundle():
    limits = ClusterLimits((NodeTypeLimits("big", {"CPU": 4, "GPU": 1, "big": 1}, 2),
                            NodeTypeLimits("small", {"CPU": 8, "GPU": 1, "small": 1}, None)), max_workers=3)
    half = {"CPU": 1, "GPU": 0.5, "small": 0.5}
    whole = {"CPU": 1, "small": 1}
    # a live small node with half its GPU free takes one half bundle, not a whole one
    plan = plan_nodes([half, whole, whole], limits, existing_free=[{"CPU": 6, "GPU": 0.5, "small": 0.5}])
    assert plan.on_existing == 1 and plan.counts() == {"small": 2}
    # two halves share one new node
    assert plan_nodes([half, half], limits).counts() == {"small": 1}
    assert plan_nodes([{"big": 1}] * 3, limits).counts() == {"big": 3}
    assert over_limits({"big": 3}, limits) == ["big: 3 nodes needed, max_workers 2"]
    assert over_limits({"big": 2, "small": 2}, limits) == ["all types: 4 worker nodes needed, cluster max_workers 3"]
    assert plan_nodes([{"TPU": 1}], limits).unplaceable == [{"TPU": 1}]


def test_serving_and_each_real_training_config_fit_cluster_yaml_together():
    """The design's answer to starvation: each workload asks for its own node type's custom resource, and
    cluster.yaml lets the autoscaler add the nodes for serving and training at once."""
    serving, train = _configs()
    limits = cluster_limits()
    s = serving_bundles(serving)
    assert plan_nodes(s, limits).counts() == {"gpu_large": 2, "gpu_small": 2}
    expected = {"finetune_cifar10_ddpm": {"gpu_small": 2}, "sd15_text2image": {"gpu_large": 4}}
    for name, cfg in train.items():
        t = training_bundles(cfg)
        assert plan_nodes(t, limits).counts() == expected[name], name
        together = plan_nodes(s + t, limits)
        assert not together.unplaceable and over_limits(together.counts(), limits) == [], (name, together.counts())


def test_a_training_worker_never_fits_beside_a_serving_role():
    """Serving roles ask for fractions of a node type's custom resource, training workers for all of it: on a
    node holding any serving role there is never room for a worker, whatever else is free."""
    serving, train = _configs()
    limits = cluster_limits()
    types = {t.name: t.resources for t in limits.worker_types}
    for role in ("t2i", "llm", "vlm", "captioner", "clip"):
        res = getattr(serving, role).resources
        (kind,) = res.custom_resources
        free = {k: v - (res.num_gpus if k == "GPU" else res.num_cpus if k == "CPU" else res.custom_resources.get(k, 0))
                for k, v in types[kind].items()}
        for cfg in train.values():
            worker = cfg.worker_resources()
            if kind in worker:
                assert plan_nodes([worker], limits, existing_free=[free]).on_existing == 0, (role, worker)


# ---------------------------------------------------------------------------- the simulation, CI size

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    work = tmp_path_factory.mktemp("beside")
    out = work / "quick.json"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "benchmarks.scale.train_beside", "--quick", "--work", str(work / "w"),
                          "--keep", "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), work / "w"


@pytest.mark.slow
@pytest.mark.ray
def test_training_and_batch_both_finish(quick):
    result, work = quick
    beside, train = result["beside"], result["training"]
    assert (beside["images"], beside["done"], beside["failed"]) == (32, 32, 0)
    assert beside["report_banner"]["random_weight_banner"] and beside["report_banner"]["simulation_profile"]
    assert train["returncode"] == 0 and train["succeeded"]
    assert train["finished_line"].startswith("finished tiny_fashion_mnist: step 2")
    assert train["final_step"] == 2 and train["history_steps"] == [1, 2]
    # submitted while the batch ran
    assert beside["t0_abs"] <= train["submitted_abs"] <= max(beside["ends_abs"])
    assert result["meta"]["off_loopback"] == []


@pytest.mark.slow
@pytest.mark.ray
def test_training_waited_for_a_gpu_small_node_and_ran_there(quick):
    result, _ = quick
    train = result["training"]
    # the serving roles left no whole gpu_small free: the worker group's placement group was pending ...
    assert train["pending_abs"] is not None and train["waited_for_resources_s"] > 0
    demand = train["pending_demand_at_first_sight"]["placement_groups"]
    assert [b["bundle"] for pg in demand for b in pg["bundles"]] == [{"CPU": 1.0, "gpu_small": 1.0}]
    # ... until the simulated autoscaler added the node type that holds it
    assert train["autoscaler_plan"] == {"gpu_small": 1}
    assert [n["node_type"] for n in train["nodes_added"]] == ["gpu_small"]
    assert result["meta"]["nodes_at_end"] == {"head_cpu": 1, "gpu_large": 2, "gpu_small": 3}
    added = train["nodes_added"][0]["node_id"]
    assert [(w["node_type"], w["node_id"]) for w in train["workers"]] == [("gpu_small", added)]
    (pg,) = train["placement_groups"]
    assert pg["first_state"] == "PENDING" and pg["node_types"] == ["gpu_small"] and pg["nodes"] == [added]


@pytest.mark.slow
@pytest.mark.ray
def test_serving_roles_untouched(quick):
    result, _ = quick
    assert result["roles_untouched"]
    before, after = result["roles_before"], result["roles_after"]
    assert sorted(r["role"] for r in before) == ["captioner", "clip", "llm", "t2i", "t2i", "vlm"]
    for r in before:
        assert r["node_type"] == EXPECTED_ROLES[r["role"]], r
    assert [(r["node_id"], r["pid"]) for r in before] == [(r["node_id"], r["pid"]) for r in after]
    # no training worker shares a node with a serving role
    role_nodes = {r["node_id"] for r in before}
    assert not role_nodes & {w["node_id"] for w in result["training"]["workers"]}
