"""Training workers against the cluster's shape (training/placement.py): on a Ray the command started
itself, custom resources no node has are dropped with a line; everything else that cannot be placed is
refused at once naming the key, instead of Ray waiting for ever."""
import math
from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from core.ray_cluster import ClusterShape
from training.config import TrainConfig
from training.placement import place_workers

MDSS = Path(__file__).resolve().parents[2] / "configs" / "mdss"
CPU_BOX = ClusterShape(nodes=[{"CPU": 2.0, "memory": 1e10}])          # this development machine
GPU_BOX = ClusterShape(nodes=[{"CPU": 16.0, "GPU": 1.0}])               # a one-GPU workstation
TWO_GPU_BOX = ClusterShape(nodes=[{"CPU": 16.0, "GPU": 2.0}])


def load(name, *overrides):
    return load_config(TrainConfig, MDSS / name, ["run_dir=/tmp/expectdiff-never-written", *overrides])


def refused(cfg, shape, local_ray=True) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        place_workers(cfg, shape, local_ray=local_ray)
    return err.value


def test_on_a_local_ray_a_node_type_resource_is_dropped_with_a_line(monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", "/tmp")
    cfg = load("finetune_cifar10_ddpm.yaml")
    assert cfg.custom_resources_per_worker == {"gpu_small": 1.0}
    placed, notes = place_workers(cfg, TWO_GPU_BOX, local_ray=True)
    assert placed.custom_resources_per_worker == {}
    assert placed.worker_resources() == {"CPU": 4.0, "GPU": 1.0}
    assert len(notes) == 1 and notes[0].startswith("custom_resources_per_worker.gpu_small: dropped")


def test_on_a_joined_cluster_a_missing_resource_is_refused_naming_it():
    cfg = load("tiny_finetune.yaml", "custom_resources_per_worker={gpu_small: 1}")
    err = refused(cfg, ClusterShape(nodes=[{"CPU": 8.0}, {"CPU": 8.0, "gpu_large": 1.0}]), local_ray=False)
    assert err.key == "custom_resources_per_worker.gpu_small"
    assert "the most any node offers is 0" in err.reason
    # an autoscaler node type that offers it: placeable
    grows = ClusterShape(nodes=[{"CPU": 8.0}], node_types=[({"CPU": 8.0, "gpu_small": 1.0}, 4)])
    placed, notes = place_workers(cfg, grows, local_ray=False)
    assert placed.custom_resources_per_worker == {"gpu_small": 1.0} and notes == []


def test_the_documented_gpu_commands_are_refused_at_once_where_they_cannot_run(monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", "/tmp")
    monkeypatch.setenv("SD15_DATA_DIR", "/tmp")
    cifar = load("finetune_cifar10_ddpm.yaml")
    # this 2-core machine: each worker's 4 CPUs first
    err = refused(cifar, CPU_BOX)
    assert err.key == "cpus_per_worker" and "set --set cpus_per_worker=2 or less" in err.reason
    err = refused(cifar.model_copy(update={"cpus_per_worker": 1.0}), CPU_BOX)
    assert err.key == "use_gpu" and "--set use_gpu=false" in err.reason
    # a one-GPU workstation: each worker fits, the second does not
    err = refused(cifar, GPU_BOX)
    assert err.key == "num_workers" and "--set num_workers=1" in err.reason
    placed, _ = place_workers(cifar.model_copy(update={"num_workers": 1}), GPU_BOX, local_ray=True)
    assert placed.num_workers == 1
    sd15 = load("sd15_text2image.yaml")
    assert refused(sd15, TWO_GPU_BOX).key == "num_workers"  # 4 workers of one GPU each


def test_how_many_fit_counts_whole_workers_per_node():
    shape = ClusterShape(nodes=[{"CPU": 5.0, "GPU": 2.0}, {"CPU": 3.0, "GPU": 4.0}])
    assert shape.how_many_fit({"CPU": 2.0, "GPU": 1.0}) == 2 + 1
    assert ClusterShape(nodes=[], node_types=[({"CPU": 4.0}, None)]).how_many_fit({"CPU": 1.0}) == math.inf
    assert ClusterShape(nodes=[{"CPU": 0.5}]).how_many_fit({"CPU": 1.0}) == 0


@pytest.mark.parametrize("name", sorted(p.name for p in MDSS.glob("tiny_*.yaml")) + ["fashion_mnist_scratch.yaml"])
def test_the_cpu_configs_place_on_this_machine_unchanged(name):
    cfg = load(name)
    placed, notes = place_workers(cfg, CPU_BOX, local_ray=True)
    assert placed == cfg and notes == []
