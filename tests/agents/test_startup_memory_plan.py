"""The batch job's start-up checks (agents.batch.startup._check_capacity): Ray resources counted per
actor (a shared engine once), then the GPU memory plan when the cluster has GPUs. Ray's cluster
view and the GPU memory are stood in for (no Ray is started, no GPU is needed)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from actors.capacity import ClusterShape
from agents.batch.errors import SetupError
from agents.batch.startup import _check_capacity
from agents.config import ArpoConfig
from core.config import load_config

REPO = Path(__file__).resolve().parents[2]
GiB = 1 << 30


@pytest.fixture
def one_gpu_machine(monkeypatch, tmp_path):
    """A one-GPU workstation as Ray and NVML would describe it; ``memory`` is what NVML reports."""
    import huggingface_hub.constants
    import ray

    import actors.capacity
    import actors.memory.startup_check

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached: the built-in table
    state = {"memory": [24 * GiB]}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    monkeypatch.setattr(actors.capacity, "current_cluster_shape", lambda: ClusterShape(nodes=[{"CPU": 8.0, "GPU": 1.0}]))
    monkeypatch.setattr(actors.memory.startup_check, "local_gpu_memory", lambda: state["memory"])
    return state


def profile(name: str) -> ArpoConfig:
    return load_config(ArpoConfig, REPO / "configs" / name)


def test_the_24gb_profile_passes_both_checks_on_a_24gib_card(one_gpu_machine, caplog):
    with caplog.at_level(logging.INFO, logger="agents.batch"):
        _check_capacity(profile("one_gpu_24gb.yaml"))
    assert "GPU memory plan: the roles fit 1 GPU(s) of 24.00 GiB" in caplog.text


def test_the_80gb_profile_is_refused_on_a_24gib_card_naming_the_overflow(one_gpu_machine):
    with pytest.raises(SetupError) as e:
        _check_capacity(profile("one_gpu_80gb.yaml"))
    text = str(e.value)
    assert text.startswith("the GPU memory cannot hold the model roles as configured")
    assert "GPU 0 (24.00 GiB): weights and vLLM budgets alone need" in text and "over by" in text
    assert "llm: the vLLM budget 0.45 × 24.00 GiB = 10.80 GiB cannot hold its weights" in text


def test_the_80gb_profile_passes_on_an_80gb_card(one_gpu_machine):
    one_gpu_machine["memory"] = [81559 << 20]
    _check_capacity(profile("one_gpu_80gb.yaml"))


def test_unknown_gpu_memory_skips_the_plan_with_a_log_line(one_gpu_machine, caplog):
    one_gpu_machine["memory"] = None
    with caplog.at_level(logging.INFO, logger="agents.batch"):
        _check_capacity(profile("one_gpu_80gb.yaml"))  # would not fit 24 GiB, but the memory is unknown
    assert "GPU memory plan skipped: this machine cannot tell its GPUs' memory" in caplog.text


def test_a_shared_engine_is_counted_once_by_the_ray_resource_check(one_gpu_machine):
    cfg = profile("one_gpu_24gb.yaml")
    assert cfg.llm.resources.num_gpus + cfg.vlm.resources.num_gpus + cfg.t2i.resources.num_gpus > 1  # per role: too much
    _check_capacity(cfg)  # per actor: 0.3 + 0.6 + 0.1
    cfg.llm.vllm.max_num_seqs = 32  # the LLM no longer matches the VLM's engine: a second actor with 0.6 GPU
    with pytest.raises(SetupError, match=r"all roles together need GPU 1\.6, the cluster has 1"):
        _check_capacity(cfg)
