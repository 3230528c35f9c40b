"""What one actor group takes on its GPU(s) (``GroupNeed``, ``group_need``): weights, KV cache, activations
and CUDA context, per role (chat engine with vLLM or transformers, T2I pipeline, captioner, CLIP). The
estimates' constants are at the top."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from actors.memory.counting import _empty_weights, count_pipeline_component, count_transformers
from actors.memory.model_configs import ConfigReader
from actors.memory.sizes import KiB, MiB, SizingError, fmt, fmt_params
from actors.role_groups import RoleGroup

#: Per process that uses the GPU outside a vLLM engine (the engine counts its own in its
#: budget): the CUDA context and PyTorch's kernels. An estimate; 300-600 MiB is typical.
CUDA_CONTEXT_BYTES = 512 * MiB
#: vLLM's CUDA graphs (unless enforce_eager), inside its budget. An estimate.
VLLM_CUDA_GRAPH_BYTES = 512 * MiB
#: vLLM's token budget per engine step when max_num_batched_tokens is not set: 2048 for an
#: AsyncLLM engine with chunked prefill, max(max_model_len, 2048) without (vLLM 0.32 arg_utils).
VLLM_DEFAULT_BATCHED_TOKENS = 2048
#: Live tensors at the peak of a forward pass (estimates), in units of one activation of
#: the stage named: the VAE decoder's first full-resolution stage (batch × H × W × its input
#: channels), the UNet's highest-resolution stage (batch × h × w × its channels, attention by
#: SDPA, so no N² score matrix), a transformer layer's MLP (batch × tokens × 4 × width) in
#: the CLIP towers and the captioner's vision encoder.
VAE_LIVE_TENSORS = 4
UNET_LIVE_TENSORS = 16
MLP_LIVE_TENSORS = 2
#: The transformers chat backend has no max_model_len: its KV cache is sized for this many
#: tokens per sequence (prompt and answer), unless vllm.max_model_len says otherwise.
TRANSFORMERS_CHAT_TOKENS = 4096


@dataclass
class GroupNeed:
    """What one actor of a group takes on its GPU(s), per GPU (a tensor-parallel engine spreads over several)."""

    group: RoleGroup
    where: str  # "gpu" | "cpu" | "remote"
    model: str = ""
    params: int = 0
    weights: int = 0
    kv: int = 0  # vLLM: what is left for the KV cache; others: an estimate of it
    activations: int = 0  # estimate
    context: int = 0  # CUDA context estimate (0 inside a vLLM budget)
    budget: int = 0  # vLLM: gpu_memory_utilization × GPU memory; 0 for others
    min_kv: int = 0  # vLLM: the KV cache of one max_model_len sequence, the least it starts with
    gpus_per_replica: int = 0  # 0: a fraction of one GPU
    source: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # certain
    estimated_problems: list[str] = field(default_factory=list)
    unknown: Optional[str] = None  # the model could not be sized

    @property
    def is_vllm(self) -> bool:
        return self.budget > 0

    @property
    def certain(self) -> int:
        """Bytes on each of its GPUs not counting estimates (a vLLM budget too small for its model counts
        what the model needs: the budget would have to grow to that)."""
        return max(self.budget, self.weights + self.min_kv) if self.is_vllm else self.weights

    @property
    def takes(self) -> int:
        """Bytes on each of its GPUs, estimates included."""
        if self.is_vllm:
            return max(self.budget, self.weights + self.activations + self.min_kv)
        return self.weights + self.kv + self.activations + self.context


def _on_gpu(res, device: Optional[str]) -> bool:
    return res.num_gpus > 0 and device != "cpu"


def _dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2  # auto on a GPU: float16 / bfloat16


def _text_dims(config) -> dict:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None) or 1
    hidden = getattr(text, "hidden_size", None) or getattr(text, "d_model", None) or 0
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or (hidden // heads if heads else 0)
    return dict(layers=getattr(text, "num_hidden_layers", 0) or 0, kv_heads=kv_heads, head_dim=head_dim, hidden=hidden,
                intermediate=getattr(text, "intermediate_size", None) or getattr(text, "ffn_dim", None) or 4 * hidden,
                vocab=getattr(text, "vocab_size", 0) or 0, max_positions=getattr(text, "max_position_embeddings", None))


def _chat_need(group: RoleGroup, cfg, gpu_memory: int, *, reader_kwargs: dict) -> GroupNeed:
    """A chat group (llm, vlm, or shared): ``cfg`` is the section the engine is built from."""
    vision = "vlm" in group.roles
    need = GroupNeed(group, "gpu", model=cfg.model)
    if cfg.backend == "openai":
        need.where = "remote"
        need.notes.append(f"served by {cfg.openai.base_url}: no GPU memory here")
        return need
    if not _on_gpu(cfg.resources, cfg.device if cfg.backend == "transformers" else None):
        need.where = "cpu"
        return need
    reader = ConfigReader(cfg.model, **reader_kwargs)
    d = reader.json("config.json")
    if d is None:
        raise SizingError(f"{cfg.model!r} has no config.json")
    dtype_bytes = _dtype_bytes(cfg.dtype)
    counted, config = count_transformers(d, "image-text" if vision else "causal", dtype_bytes)
    dims = _text_dims(config)
    need.params, need.weights, need.source = counted.params, counted.weight_bytes, reader.source_text
    kv_per_token = 2 * dims["layers"] * dims["kv_heads"] * dims["head_dim"] * dtype_bytes
    max_len = cfg.vllm.max_model_len or dims["max_positions"] or TRANSFORMERS_CHAT_TOKENS
    quant = f", {counted.quantization}" if counted.quantization else ""
    need.notes.append(f"{fmt_params(counted.params)} parameters{quant}: weights {fmt(counted.weight_bytes)}")
    if cfg.backend == "transformers":
        batch = cfg.batching.max_batch_size
        tokens = min(max_len, TRANSFORMERS_CHAT_TOKENS) if cfg.vllm.max_model_len is None else max_len
        need.kv = batch * tokens * kv_per_token
        need.activations = batch * tokens * (2 * dims["intermediate"] + 4 * dims["hidden"]) * dtype_bytes + batch * dims["vocab"] * 4
        need.context = CUDA_CONTEXT_BYTES
        need.notes.append(f"transformers backend: KV cache for {batch} sequences × {tokens} tokens × "
                          f"{kv_per_token / KiB:.0f} KiB per token (estimate)")
        return need
    # vLLM
    v = cfg.vllm
    tp = v.tensor_parallel_size
    need.gpus_per_replica = max(tp, math.ceil(cfg.resources.num_gpus)) if cfg.resources.num_gpus >= 1 or tp > 1 else 0
    need.budget = int(v.gpu_memory_utilization * gpu_memory)
    need.weights = -(-counted.weight_bytes // tp)
    batched = v.max_num_batched_tokens or (VLLM_DEFAULT_BATCHED_TOKENS if v.enable_chunked_prefill is not False
                                          else max(max_len, VLLM_DEFAULT_BATCHED_TOKENS))
    need.activations = (batched * (2 * dims["intermediate"] + 4 * dims["hidden"]) * dtype_bytes // tp
                        + v.max_num_seqs * dims["vocab"] * 4 + (0 if v.enforce_eager else VLLM_CUDA_GRAPH_BYTES))
    per_token = kv_per_token // tp
    one_sequence = max_len * per_token
    need.min_kv = one_sequence
    ceiling = v.max_num_seqs * one_sequence
    need.kv = max(0, need.budget - need.weights - need.activations)
    budget_text = f"vLLM budget {v.gpu_memory_utilization:g} × {fmt(gpu_memory)} = {fmt(need.budget)}"
    if need.weights + one_sequence > need.budget:
        short = need.weights + one_sequence - need.budget
        joint = ", let alone" if need.weights > need.budget else " and"
        need.problems.append(f"{group.name}: the {budget_text} cannot hold its weights ({fmt(need.weights)}){joint} "
                             f"the KV cache of one max_model_len ({max_len}) sequence ({fmt(one_sequence)}): short by "
                             f"{fmt(short)}; raise vllm.gpu_memory_utilization, or lower vllm.max_model_len, or use a "
                             f"smaller or quantised model")
    elif need.weights + need.activations + one_sequence > need.budget:
        need.estimated_problems.append(
            f"{group.name}: the {budget_text} leaves {fmt(need.kv)} for the KV cache after weights and ~activations, "
            f"less than one max_model_len ({max_len}) sequence needs ({fmt(one_sequence)}): vLLM would refuse to start")
    seqs = need.kv / one_sequence if one_sequence else 0
    need.notes.append(f"{budget_text}: weights {fmt(need.weights)} + ~activations {fmt(need.activations)} "
                      f"(a {batched}-token step{', CUDA graphs' if not v.enforce_eager else ''}) + KV cache "
                      f"{fmt(need.kv)} = {need.kv // per_token if per_token else 0:,} tokens = {seqs:.1f} sequences of "
                      f"max_model_len {max_len} (max_num_seqs {v.max_num_seqs}; ceiling 2 × {dims['layers']} layers × "
                      f"{dims['kv_heads']} KV heads × {dims['head_dim']} × {dtype_bytes} B × {v.max_num_seqs} × {max_len} = {fmt(ceiling)})")
    if tp > 1:
        need.notes.append(f"tensor_parallel_size {tp}: weights, activations and KV cache per GPU")
    return need


def _t2i_need(group: RoleGroup, cfg, *, reader_kwargs: dict) -> GroupNeed:
    need = GroupNeed(group, "gpu", model=cfg.model)
    if not _on_gpu(cfg.resources, cfg.device):
        need.where = "cpu"
        return need
    reader = ConfigReader(cfg.model, **reader_kwargs)
    index = reader.json("model_index.json")
    if index is None:
        raise SizingError(f"{cfg.model!r} has no model_index.json (not a diffusers pipeline)")
    dtype_bytes = _dtype_bytes(cfg.dtype)
    parts, configs = [], {}
    for name, spec in index.items():
        if name.startswith("_") or not (isinstance(spec, list) and len(spec) == 2 and all(spec)):
            continue
        d = reader.json(f"{name}/config.json")
        if d is None:  # a tokenizer, scheduler or feature extractor: no weights
            continue
        n = count_pipeline_component(spec[0], spec[1], d)
        parts.append((name, n))
        configs[name] = d
    need.params = sum(n for _, n in parts)
    need.weights = need.params * dtype_bytes
    need.source = reader.source_text
    need.context = CUDA_CONTEXT_BYTES
    need.notes.append(", ".join(f"{name} {fmt_params(n)}" for name, n in parts) + f": weights {fmt(need.weights)}")
    vae, denoiser = configs.get("vae", {}), configs.get("unet") or configs.get("transformer") or {}
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    height = cfg.height or (denoiser.get("sample_size") or 64) * scale
    width = cfg.width or (denoiser.get("sample_size") or 64) * scale
    batch = cfg.batching.max_batch_size
    # Classifier-free guidance runs the denoiser on twice the latents; FLUX.1 is guidance-distilled (one pass,
    # the guidance value an input of the transformer).
    cfg_batch = batch * (2 if cfg.guidance_scale > 1 and index.get("_class_name") != "FluxPipeline" else 1)
    channels = vae.get("block_out_channels") or [128]
    vae_peak = batch * height * width * channels[min(1, len(channels) - 1)] * dtype_bytes * VAE_LIVE_TENSORS
    if "block_out_channels" in denoiser:
        width0 = denoiser["block_out_channels"][0]
    else:
        width0 = (denoiser.get("num_attention_heads") or 16) * (denoiser.get("attention_head_dim") or 72)
    denoiser_peak = cfg_batch * (height // scale) * (width // scale) * width0 * dtype_bytes * UNET_LIVE_TENSORS
    need.activations = max(vae_peak, denoiser_peak)
    need.notes.append(f"~activations: the larger of the VAE decoding {batch} images of {width}×{height} "
                      f"({fmt(vae_peak)}) and a denoiser step on {cfg_batch} latents ({fmt(denoiser_peak)})")
    return need


def _captioner_need(group: RoleGroup, cfg, *, reader_kwargs: dict) -> GroupNeed:
    need = GroupNeed(group, "gpu", model=cfg.model)
    if not _on_gpu(cfg.resources, cfg.device):
        need.where = "cpu"
        return need
    reader = ConfigReader(cfg.model, **reader_kwargs)
    d = reader.json("config.json")
    if d is None:
        raise SizingError(f"{cfg.model!r} has no config.json")
    dtype_bytes = _dtype_bytes(cfg.dtype)
    counted, config = count_transformers(d, "image-text", dtype_bytes)
    need.params, need.weights, need.source = counted.params, counted.weight_bytes, reader.source_text
    need.context = CUDA_CONTEXT_BYTES
    dims = _text_dims(config)
    vision = getattr(config, "vision_config", None)
    batch = cfg.batching.max_batch_size
    tokens = getattr(config, "num_query_tokens", 32) + 32 + cfg.max_new_tokens  # image queries, prompt, caption
    need.kv = batch * tokens * 2 * dims["layers"] * dims["kv_heads"] * dims["head_dim"] * dtype_bytes
    if vision is not None:
        patches = (getattr(vision, "image_size", 224) // getattr(vision, "patch_size", 14)) ** 2 + 1
        need.activations = batch * patches * 4 * getattr(vision, "hidden_size", 1024) * dtype_bytes * MLP_LIVE_TENSORS
    need.notes.append(f"{fmt_params(counted.params)} parameters: weights {fmt(need.weights)}; ~KV cache and activations "
                      f"for a batch of {batch} captions")
    return need


def _clip_need(group: RoleGroup, cfg) -> GroupNeed:
    need = GroupNeed(group, "gpu", model=f"{cfg.model_name} ({cfg.pretrained})")
    if not _on_gpu(cfg.resources, cfg.device):
        need.where = "cpu"
        return need
    import open_clip
    import torch

    if cfg.model_config_dir:
        open_clip.add_model_config(cfg.model_config_dir)
    arch = open_clip.get_model_config(cfg.model_name)
    if arch is None:
        raise SizingError(f"open_clip has no architecture {cfg.model_name!r} (add its JSON with model_config_dir)")
    try:
        with _empty_weights(), torch.device("meta"):
            model = open_clip.create_model(cfg.model_name, pretrained=None, device="meta")
    except Exception as exc:  # noqa: BLE001
        raise SizingError(f"cannot build open_clip {cfg.model_name} on the meta device: {type(exc).__name__}: {exc}") from exc
    dtype_bytes = 2 if cfg.precision in ("fp16", "bf16") else 4
    need.params = sum(p.numel() for p in model.parameters())
    need.weights = need.params * dtype_bytes
    need.source = "open_clip's built-in config" if cfg.model_config_dir is None else f"open_clip config in {cfg.model_config_dir}"
    need.context = CUDA_CONTEXT_BYTES
    vis, txt = arch.get("vision_cfg", {}), arch.get("text_cfg", {})
    patches = (int(vis.get("image_size", 224)) // int(vis.get("patch_size", 16) or 16)) ** 2 + 1
    widest = max(patches * int(vis.get("width", 768)), int(txt.get("context_length", 77)) * int(txt.get("width", 512)))
    batch = cfg.batching.max_batch_size
    need.activations = batch * widest * 4 * dtype_bytes * MLP_LIVE_TENSORS
    need.notes.append(f"{fmt_params(need.params)} parameters ({cfg.precision}): weights {fmt(need.weights)}; "
                      f"~activations for a batch of {batch}")
    return need


def group_need(group: RoleGroup, sections: Any, gpu_memory: int, *, use_hub: bool = True,
               cache_dir: Optional[str] = None) -> GroupNeed:
    """What one actor of ``group`` takes; a model that cannot be sized gives ``unknown`` (and takes 0)."""
    reader_kwargs = dict(use_hub=use_hub, cache_dir=cache_dir)
    try:
        if group.roles[0] == "t2i":
            return _t2i_need(group, sections.t2i, reader_kwargs=reader_kwargs)
        if group.roles[0] == "clip":
            return _clip_need(group, sections.clip)
        if group.roles == ("captioner",):
            return _captioner_need(group, sections.captioner, reader_kwargs=reader_kwargs)
        engine = sections.vlm if "vlm" in group.roles else sections.llm
        need = _chat_need(group, engine, gpu_memory, reader_kwargs=reader_kwargs)
        if group.shared:
            need.notes.insert(0, f"one engine serves {', '.join(group.roles)}")
        return need
    except SizingError as exc:
        res = group.resources
        return GroupNeed(group, "gpu" if res.num_gpus > 0 else "cpu", unknown=str(exc))
