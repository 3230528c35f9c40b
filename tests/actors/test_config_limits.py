"""Size limits of the role and job configs, and the OpenAI-compatible base_url that would leak the key.

Every count, size, token budget and time in these configs has an upper bound a real run does not
reach; a value above it is refused at the edge naming the key (instead of an actor trying to
allocate it). An ``http://`` base_url on a host other than loopback would send the API key in clear
text: refused unless no key is sent or ``allow_insecure_http`` says so.
"""
from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from agents.config import ArpoConfig
from core.config import ConfigError, load_config

# (dotted key, the largest accepted value, a value just above it)
BOUNDS = [
    ("t2i.height", 4096, 4104), ("t2i.width", 4096, 4104),
    ("t2i.num_inference_steps", 1000, 1001), ("t2i.guidance_scale", 100, 100.5),
    ("t2i.max_prompt_tokens", 4096, 4097),
    ("t2i.batching.max_batch_size", 4096, 4097), ("t2i.batching.max_wait_ms", 60_000, 60_001),
    ("t2i.resources.num_gpus", 64, 65), ("t2i.resources.num_cpus", 1024, 1025),
    ("t2i.resources.num_replicas", 1024, 1025), ("t2i.resources.max_restarts", 1000, 1001),
    ("t2i.resources.max_task_retries", 1000, 1001), ("t2i.resources.max_concurrency", 100_000, 100_001),
    ("llm.sampling.max_new_tokens", 8192, 8193), ("vlm.sampling.max_new_tokens", 8192, 8193),
    ("llm.sampling.temperature", 10, 10.5),
    ("llm.vllm.max_model_len", 1 << 20, (1 << 20) + 1), ("llm.vllm.max_num_batched_tokens", 1 << 20, (1 << 20) + 1),
    ("llm.vllm.tensor_parallel_size", 64, 65), ("llm.vllm.max_num_seqs", 4096, 4097),
    ("llm.vllm.cpu_kvcache_space_gib", 4096, 4097), ("vlm.vllm.limit_images_per_prompt", 64, 65),
    ("llm.openai.timeout_s", 3600, 3601), ("llm.openai.max_retries", 100, 101),
    ("vlm.image_size", 4096, 4097),
    ("captioner.max_new_tokens", 512, 513), ("captioner.batching.max_batch_size", 4096, 4097),
    ("clip.text_cache_size", 1_000_000, 1_000_001), ("clip.image_cache_size", 1_000_000, 1_000_001),
    ("clip.batching.max_batch_size", 4096, 4097),
    ("agent.max_steps", 1000, 1001), ("agent.patience", 1000, 1001), ("agent.max_candidates", 1000, 1001),
    ("agent.max_reasks", 100, 101), ("agent.reserved_tokens", 64, 65),
    ("job.concurrency", 100_000, 100_001), ("job.max_image_pixels", 1 << 30, (1 << 30) + 1),
    ("job.summary_refresh_s", 3600, 3601), ("job.max_file_bytes", 1 << 36, (1 << 36) + 1),
]


@pytest.mark.parametrize("key, largest, too_big", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_each_upper_bound_refuses_naming_the_key(key, largest, too_big):
    cfg = load_config(ArpoConfig, None, [f"{key}={largest}"])
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    assert node == largest
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, None, [f"{key}={too_big}"])
    assert e.value.key == key and "less than or equal to" in e.value.reason, str(e.value)
    assert f"--set {key}" in str(e.value)


def test_too_many_seeds_is_refused():
    load_config(ArpoConfig, None, [f"agent.seeds={list(range(64))}"])
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, None, [f"agent.seeds={list(range(65))}"])
    assert e.value.key == "agent.seeds" and "at most 64" in e.value.reason


def _numeric_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if typing.get_origin(ann) in (list, dict, tuple, set):
            continue  # containers: their length bounds are checked one by one (agent.seeds below)
        args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
        sub = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if sub:
            yield from _numeric_fields(sub[0], f"{prefix}{name}.")
        elif args and all(a in (int, float) for a in args):  # int, float, Optional[int]
            yield f"{prefix}{name}", field


def test_every_numeric_field_has_an_upper_bound_named_in_its_description():
    """Guards new fields of the role, agent and job configs: a count or size without an upper bound
    fails here (a sampling seed is any integer; ``ray`` is core.ray_config's, outside this test)."""
    missing = []
    for key, field in _numeric_fields(ArpoConfig):
        if key.rsplit(".", 1)[-1] == "seed" or key.startswith("ray."):
            continue
        if not any(hasattr(m, "le") or hasattr(m, "lt") for m in field.metadata):
            missing.append(key)
    assert not missing, f"numeric config fields without an upper bound: {missing}"


# ---- the API key never crosses the network in clear text

@pytest.mark.parametrize("role", ["llm", "vlm"])
@pytest.mark.parametrize("url", ["http://10.0.0.5:8000/v1", "http://api.example.com/v1", "HTTP://gpu-node:8000/v1",
                                 "http://127.0.0.1.example.com/v1"])
def test_http_to_another_host_is_refused_while_a_key_is_sent(role, url):
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, None, [f"{role}.openai.base_url={url}"])
    assert e.value.key == f"{role}.openai.base_url"
    assert "clear text" in e.value.reason and "https://" in e.value.reason and "allow_insecure_http" in e.value.reason


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://127.1.2.3:8000/v1", "http://localhost:8000/v1",
                                 "http://[::1]:8000/v1", "https://api.example.com/v1", "https://10.0.0.5/v1"])
def test_https_and_loopback_http_are_accepted(url):
    assert load_config(ArpoConfig, None, [f"llm.openai.base_url={url}"]).llm.openai.base_url == url


def test_http_elsewhere_is_accepted_without_a_key_or_with_the_explicit_opt_in():
    url = "http://10.0.0.5:8000/v1"
    cfg = load_config(ArpoConfig, None, [f"llm.openai.base_url={url}", "llm.openai.api_key_env=null"])
    assert cfg.llm.openai.base_url == url
    cfg = load_config(ArpoConfig, None, [f"llm.openai.base_url={url}", "llm.openai.allow_insecure_http=true"])
    assert cfg.llm.openai.base_url == url and cfg.llm.openai.allow_insecure_http


@pytest.mark.parametrize("url, reason", [("ftp://host/v1", "http:// or https://"), ("api.openai.com/v1", "http:// or https://"),
                                         ("https://user:s3cr3t-pw@host/v1", "credentials")])
def test_other_bad_base_urls(url, reason):
    with pytest.raises(ConfigError) as e:
        load_config(ArpoConfig, None, [f"llm.openai.base_url={url}"])
    assert e.value.key == "llm.openai.base_url" and reason in e.value.reason
    assert "s3cr3t-pw" not in str(e.value)  # an echoed value never carries the password


@pytest.mark.parametrize("value, reason", [
    ("{GPU: 1}", "custom_resources.GPU: GPU is not a custom resource: set num_gpus"),
    ("{cpu: 2}", "custom_resources.cpu: CPU is not a custom resource: set num_cpus"),
    ("{object_store_memory: 1}", "object_store_memory is not a custom resource"),
    ("{gpu_large: 0}", "custom_resources.gpu_large: amount must be in (0, 64], got 0"),
    ("{gpu_large: 1.5}", "an amount above 1 must be a whole number"),
    ("{gpu_small: 0.00001}", "at most 4 decimals"),
])
def test_an_actors_custom_resources_are_checked_like_trainings(value, reason):
    """The checks the training config had (core.ray_resources): Ray would refuse these only when placing the actor."""
    with pytest.raises(ConfigError) as err:
        load_config(ArpoConfig, None, [f"llm.resources.custom_resources={value}"])
    assert err.value.key == "llm.resources.custom_resources" and reason in err.value.reason
    ok = load_config(ArpoConfig, None, ["llm.resources.custom_resources={gpu_large: 1, gpu_small: 0.25}"])
    assert ok.llm.resources.custom_resources == {"gpu_large": 1.0, "gpu_small": 0.25}
