"""custom_resources_per_worker: validated in TrainConfig, handed to Ray Train's ScalingConfig, and set in the
real-cluster MDSS configs to the node type of cluster.yaml each run belongs on."""
from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, load_config
from training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
MDSS = REPO / "configs" / "mdss"
TINY = MDSS / "tiny_fashion_mnist.yaml"


def _load(*overrides, path=TINY):
    return load_config(TrainConfig, path, ["run_dir=/tmp/expectdiff-never-written", *overrides])


def test_default_is_no_custom_resource():
    cfg = _load()
    assert cfg.custom_resources_per_worker == {}
    assert cfg.worker_resources() == {"CPU": 1.0}


def test_worker_resources_add_cpus_gpu_and_custom_resources():
    cfg = _load("custom_resources_per_worker={gpu_small: 1}", "cpus_per_worker=2")
    assert cfg.worker_resources() == {"CPU": 2.0, "gpu_small": 1.0}
    gpu = _load("custom_resources_per_worker={gpu_large: 1, fast_disk: 0.5}", "use_gpu=true")
    assert gpu.worker_resources() == {"CPU": 1.0, "GPU": 1.0, "gpu_large": 1.0, "fast_disk": 0.5}
    # what each Ray Train worker validates again
    assert TrainConfig.model_validate(gpu.model_dump(mode="json")) == gpu


@pytest.mark.parametrize("value, reason", [
    ("{GPU: 1}", "custom_resources_per_worker.GPU: GPU is not a custom resource: set use_gpu"),
    ("{gpu: 1}", "custom_resources_per_worker.gpu: GPU is not a custom resource"),
    ("{CPU: 2}", "custom_resources_per_worker.CPU: CPU is not a custom resource: set cpus_per_worker"),
    ("{memory: 1000000000}", "custom_resources_per_worker.memory: memory is not a custom resource"),
    ("{gpu_small: 0}", "custom_resources_per_worker.gpu_small: amount must be in (0, 64], got 0"),
    ("{gpu_small: -1}", "amount must be in (0, 64]"),
    ("{gpu_small: 65}", "amount must be in (0, 64], got 65"),
    ("{gpu_small: 1.5}", "custom_resources_per_worker.gpu_small: an amount above 1 must be a whole number"),
    ("{gpu_small: 0.00001}", "at most 4 decimals"),
    ("{' gpu_small': 1}", "without surrounding blanks"),
])
def test_bad_custom_resources_fail_naming_the_key(value, reason):
    with pytest.raises(ConfigError) as err:
        _load(f"custom_resources_per_worker={value}")
    assert err.value.key == "custom_resources_per_worker" and reason in err.value.reason
    assert "--set custom_resources_per_worker" in err.value.source


def test_a_non_numeric_amount_names_the_resource():
    with pytest.raises(ConfigError) as err:
        _load("custom_resources_per_worker={gpu_small: lots}")
    assert err.value.key == "custom_resources_per_worker.gpu_small"


def test_the_scaling_config_gets_the_worker_resources():
    from training.train import build_trainer

    cfg = _load("custom_resources_per_worker={gpu_small: 1}", "num_workers=2")
    scaling = build_trainer(cfg).scaling_config
    assert (scaling.num_workers, scaling.use_gpu) == (2, False)
    assert scaling.resources_per_worker == {"CPU": 1.0, "gpu_small": 1.0}
    # no GPU key without use_gpu: Ray's ScalingConfig refuses one (and the simulated cluster has no CUDA)
    assert "GPU" not in scaling.resources_per_worker

    real = load_config(TrainConfig, MDSS / "finetune_cifar10_ddpm.yaml", ["run_dir=/tmp/expectdiff-never-written"])
    scaling = build_trainer(real).scaling_config
    assert scaling.use_gpu and scaling.resources_per_worker == {"CPU": 4.0, "GPU": 1.0, "gpu_small": 1.0}


def test_ray_refuses_a_gpu_amount_without_use_gpu():
    """Why GPU is not accepted as a custom resource: Ray's own check (the simulation runs use_gpu false)."""
    from ray.train import ScalingConfig

    with pytest.raises(ValueError, match="use_gpu"):
        ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 1, "GPU": 1})


@pytest.mark.parametrize("name, node_type", [("finetune_cifar10_ddpm", "gpu_small"), ("sd15_text2image", "gpu_large")])
def test_real_cluster_configs_pin_their_workers_to_one_node_type(name, node_type):
    cfg = load_config(TrainConfig, MDSS / f"{name}.yaml")
    assert cfg.use_gpu and cfg.custom_resources_per_worker == {node_type: 1}
    node = yaml.safe_load((REPO / "cluster.yaml").read_text())["available_node_types"][node_type]["resources"]
    # a worker takes the node type's whole GPU and custom resource, and fits the node's CPUs
    assert node["GPU"] == 1 and node[node_type] == 1 and cfg.cpus_per_worker <= node["CPU"]


def test_cpu_and_tiny_configs_ask_for_no_node_type():
    for name in ("fashion_mnist_scratch", "tiny_fashion_mnist", "tiny_finetune", "tiny_text2image"):
        assert load_config(TrainConfig, MDSS / f"{name}.yaml").custom_resources_per_worker == {}, name
