"""GPU memory plan of the model roles, from model configs alone: no weights are read or loaded.

For every actor group (actors/role_groups.py: one actor per role, or one shared by the LLM,
the VLM and a VLM captioner) that runs on a GPU, the plan adds up

* **weights**: the parameter count × bytes per parameter. Parameters are counted by building
  the model from its config on PyTorch's ``meta`` device (``accelerate.init_empty_weights``),
  which allocates nothing, and summing ``numel``; a 4-bit AWQ/GPTQ model's linear layers
  count 4 bits plus their group scales and zero points.
* **KV cache**: for a vLLM engine, what is left of its budget. vLLM takes
  ``gpu_memory_utilization × the whole GPU's memory`` (a fraction of the *whole* GPU, not of
  what is free, and not of the actor's ``num_gpus``), puts the weights and activations in it
  and gives the rest to the KV cache. The ceiling it could use is
  2 × layers × KV heads × head dim × bytes × max_num_seqs × max_model_len; it must at
  least hold one ``max_model_len`` sequence, or vLLM refuses to start.
* **activations** (an estimate, marked ``~``): the peak of a forward pass at the configured
  batch and image size (formulas below), and a CUDA context for each process outside vLLM.

Then it places the actors' replicas on the GPUs as Ray packs fractional ``num_gpus`` (best
fit, in start order: an assumption for more than one GPU; on one GPU there is no choice)
and compares each GPU's sum with its memory. Two tiers of problems:

* **certain**: weights and vLLM budgets alone do not fit (a GPU overflows, or an engine's
  budget cannot hold its weights and one full sequence). The batch job refuses to start.
* **estimated**: they fit only without the activation and CUDA-context estimates. The
  planner CLI (``python -m actors.plan``) exits non-zero; the batch job logs a warning.

Model configs are read from a local folder, the Hugging Face cache or the hub (config files
only), else from the built-in table of actors/known_models.py (said so in the plan).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from actors.role_groups import RoleGroup, plan_groups

log = logging.getLogger(__name__)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

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

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": KiB, "mib": MiB, "gib": GiB, "tib": 1 << 40}


class SizingError(ValueError):
    """A model's size could not be determined (the message says which model and why)."""


def parse_size(text: str) -> int:
    """``"24GiB"``, ``"80 GB"``, ``"81559MiB"`` (what nvidia-smi shows) -> bytes. A unit is required."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B|B)\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r} is not a memory size: give a number and a unit, e.g. 24GiB, 80GB or 81559MiB "
                         "(GiB = 2**30 bytes, GB = 10**9)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"{text!r}: the GPU memory must be positive")
    return int(value)


def fmt(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def fmt_params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


# --------------------------------------------------------------------------------------
# Reading config files: local folder, Hugging Face cache, hub, built-in table
# --------------------------------------------------------------------------------------

class ConfigReader:
    """Reads a model's JSON config files from one source, chosen at the first file read.

    ``use_hub``: fetch config files the cache lacks from the hub (after the first failure
    the hub is not tried again). ``cache_dir``: the Hugging Face hub cache (None: the default).
    """

    def __init__(self, ref: str, *, use_hub: bool = True, cache_dir: Optional[str] = None,
                 table: Optional[Mapping[str, Mapping[str, dict]]] = None):
        from actors.known_models import KNOWN_CONFIGS

        self.ref = ref
        self.use_hub = use_hub and not _hub_offline()
        self.cache_dir = cache_dir
        self.table = KNOWN_CONFIGS if table is None else table
        self.source: Optional[str] = None  # "local folder" | "Hugging Face cache" | "hub" | "built-in table"
        self._hub_problem: Optional[str] = None

    @property
    def from_table(self) -> bool:
        return self.source == "built-in table"

    @property
    def source_text(self) -> str:
        """Where the sizes came from, and for the built-in table why not from the hub."""
        if self.source != "built-in table":
            return self.source or ""
        why = (f"the hub could not be asked: {self._hub_problem}" if self._hub_problem
               else "the hub was not asked: HF_HUB_OFFLINE" if _hub_offline()
               else "the hub was not asked" if not self.use_hub else "")
        return f"built-in table; {why}" if why else "built-in table"

    def json(self, relpath: str) -> Optional[dict]:
        """The parsed file, or None when the model has no such file."""
        path = Path(self.ref).expanduser()
        if path.is_dir():
            self.source = "local folder"
            f = path / relpath
            return _load_json(f) if f.is_file() else None
        from actors.model_source import looks_like_path

        if path.exists() or looks_like_path(self.ref):
            raise SizingError(f"{self.ref!r} is not a model folder" if path.exists() else f"model folder {self.ref!r} does not exist")
        if self.source in (None, "Hugging Face cache"):
            found = self._cached(relpath)
            if found is not None or self.source == "Hugging Face cache":
                return found or None
        if self.source in (None, "hub") and self.use_hub and self._hub_problem is None:
            found = self._from_hub(relpath)
            if found is not None or self.source == "hub":
                return found or None
        if self.ref in self.table:
            self.source = "built-in table"
            return self.table[self.ref].get(relpath)
        why = (f"the hub could not be reached ({self._hub_problem})" if self._hub_problem
               else "the hub was not asked (offline)" if not self.use_hub else "the hub has no such file")
        raise SizingError(f"{self.ref!r}: no local folder, not in the Hugging Face cache, {why}, and not in the "
                          f"built-in table of actors/known_models.py")

    def _cached(self, relpath: str):
        """The cached file's content, {} when the cache knows the file does not exist, None when not cached."""
        try:
            from huggingface_hub import try_to_load_from_cache
            from huggingface_hub.file_download import _CACHED_NO_EXIST
        except ImportError:
            return None
        try:
            hit = try_to_load_from_cache(self.ref, relpath, cache_dir=self.cache_dir)
        except Exception:  # noqa: BLE001 - a malformed id: not in the cache
            return None
        if hit is _CACHED_NO_EXIST:
            self.source = "Hugging Face cache"
            return {}
        if isinstance(hit, str) and os.path.isfile(hit):
            self.source = "Hugging Face cache"
            return _load_json(Path(hit))
        return None

    def _from_hub(self, relpath: str):
        """The file from the hub, {} when the hub answered that it has no such file, None when the hub could
        not be asked or would not say (``_hub_problem`` then says why). Asked with a short deadline first
        (actors/hub_probe.py): huggingface_hub's download retries an unreachable hub for ~20 s and reports it
        with an error class that also means "no such file"."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        from actors import hub_probe

        answer = hub_probe.ask_hub(self.ref, relpath)
        if answer.verdict == "missing":
            self.source = "hub"
            return {}
        if answer.verdict != "found":
            self._hub_problem = answer.detail if answer.verdict == "unreachable" else f"the hub refused: {answer.detail}"
            return None
        try:
            local = hf_hub_download(self.ref, relpath, cache_dir=self.cache_dir, endpoint=hub_probe.endpoint(),
                                    etag_timeout=hub_probe.HUB_TIMEOUT_S)
        except LocalEntryNotFoundError as exc:  # before its base class: the hub went away, not "no such file"
            self._hub_problem = f"{type(exc).__name__}: the hub stopped answering"
            return None
        except EntryNotFoundError:
            self.source = "hub"
            return {}
        except Exception as exc:  # noqa: BLE001 - unknown repo, gated, a broken download: fall back to the table
            self._hub_problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            return None
        self.source = "hub"
        return _load_json(Path(local))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SizingError(f"{path}: unreadable config ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------------------
# Counting parameters on the meta device
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _empty_weights():
    """Build modules on the meta device (no memory, no init cost), with the libraries' chatter silenced."""
    from accelerate import init_empty_weights

    quiet = [logging.getLogger(n) for n in ("transformers", "diffusers", "root", "open_clip")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    root_filter = _DropMessages("No pretrained weights loaded")
    logging.getLogger().addFilter(root_filter)
    try:
        with init_empty_weights(include_buffers=False):
            yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        for q, level in zip(quiet, levels):
            q.setLevel(level)


class _DropMessages(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@dataclass(frozen=True)
class Counted:
    params: int
    weight_bytes: int
    quantization: Optional[str] = None  # e.g. "awq 4-bit" (None: the dtype's bytes for every parameter)


def _quantized_bytes(model, params: int, dtype_bytes: int, qcfg: Optional[dict]) -> Counted:
    import torch

    if not qcfg:
        return Counted(params, params * dtype_bytes)
    method = str(qcfg.get("quant_method", "?")).lower()
    bits = qcfg.get("bits") or qcfg.get("w_bit")
    if method in ("awq", "gptq") and bits:
        group = qcfg.get("group_size") or qcfg.get("q_group_size") or 128
        eff_bits = bits + ((16 + bits) / group if group and group > 0 else 0)  # + a fp16 scale and a zero per group
        label = f"{method} {bits}-bit"
    elif method == "fp8":
        eff_bits, label = 8.0, "fp8"
    elif method == "bitsandbytes":
        four = qcfg.get("load_in_4bit") or qcfg.get("_load_in_4bit")
        eff_bits, label = (4.5, "bitsandbytes 4-bit") if four else (8.0, "bitsandbytes 8-bit")
    else:
        return Counted(params, params * dtype_bytes, f"{method} (unknown to the planner: sized unquantized, an overestimate)")
    skip = [str(s) for s in (qcfg.get("modules_to_not_convert") or [])]
    quantized = sum(m.weight.numel() for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head") and not any(s in name for s in skip))
    weight_bytes = (params - quantized) * dtype_bytes + math.ceil(quantized * eff_bits / 8)
    return Counted(params, int(weight_bytes), label)


def transformers_config(d: dict):
    """A transformers config object from a config.json dict (what AutoConfig.from_pretrained builds)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = d.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise SizingError(f"model_type {model_type!r} is unknown to this transformers")
    return CONFIG_MAPPING[model_type].from_dict(dict(d))


_COUNTED: dict[tuple, Any] = {}  # (config JSON, kind, bytes) -> (Counted, config): a plan builds each model once


def count_transformers(d: dict, kind: str, dtype_bytes: int) -> tuple[Counted, Any]:
    """Parameters of a transformers model config (``kind``: causal, image-text, any), built on meta."""
    key = (json.dumps(d, sort_keys=True, default=str), kind, dtype_bytes)
    if key not in _COUNTED:
        _COUNTED[key] = _count_transformers(d, kind, dtype_bytes)
    return _COUNTED[key]


def _count_transformers(d: dict, kind: str, dtype_bytes: int) -> tuple[Counted, Any]:
    import transformers

    config = transformers_config(d)
    arch = (d.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    autos = {"causal": "AutoModelForCausalLM", "image-text": "AutoModelForImageTextToText", "any": "AutoModel"}
    try:
        with _empty_weights():
            model = cls(config) if cls is not None else getattr(transformers, autos[kind]).from_config(config)
        # from_pretrained ties the output embedding to the input one (tie_word_embeddings): one tensor,
        # counted once. Outside init_empty_weights, whose register_parameter would make a new tensor.
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    except SizingError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised naming the architecture
        raise SizingError(f"cannot build {arch or d.get('model_type')} from its config on the meta device: "
                          f"{type(exc).__name__}: {exc}") from exc
    params = sum(p.numel() for p in model.parameters())
    return _quantized_bytes(model, params, dtype_bytes, d.get("quantization_config")), config


def count_pipeline_component(library: str, class_name: str, d: dict) -> int:
    """Parameters of one diffusers pipeline component (a diffusers or transformers model class)."""
    key = ("component", library, class_name, json.dumps(d, sort_keys=True, default=str))
    if key not in _COUNTED:
        _COUNTED[key] = _count_pipeline_component(library, class_name, d)
    return _COUNTED[key]


def _count_pipeline_component(library: str, class_name: str, d: dict) -> int:
    import importlib

    module_names = {"diffusers": ["diffusers"], "transformers": ["transformers"]}.get(
        library, [f"diffusers.pipelines.{library}", "diffusers", "transformers"])
    cls = None
    for name in module_names:
        try:
            cls = getattr(importlib.import_module(name), class_name, None)
        except ImportError:
            cls = None
        if cls is not None:
            break
    if cls is None:
        raise SizingError(f"pipeline component class {library}.{class_name} not found")
    try:
        with _empty_weights():
            if hasattr(cls, "from_config") and hasattr(cls, "load_config"):  # diffusers ModelMixin
                model = cls.from_config(d)
            else:  # transformers PreTrainedModel (text encoders, the safety checker)
                model = cls(cls.config_class.from_dict(dict(d)))
    except Exception as exc:  # noqa: BLE001
        raise SizingError(f"cannot build {class_name} from its config on the meta device: {type(exc).__name__}: {exc}") from exc
    return sum(p.numel() for p in model.parameters()) - _untied_on_meta(model) + _stored_buffers(model)


def _stored_buffers(model) -> int:
    """Elements of the persistent buffers: saved with the weights and loaded onto the GPU beside them (SD3.5's
    positional embedding table, 384² × 1536 = 226M values, is a buffer, not a parameter)."""
    total = 0
    for module_name, module in model.named_modules():
        skip = getattr(module, "_non_persistent_buffers_set", set())
        total += sum(b.numel() for name, b in module.named_buffers(recurse=False) if name not in skip and b is not None)
    return total


def _untied_on_meta(model) -> int:
    """Parameters counted twice because transformers leaves declared ties undone on the meta device (T5's
    encoder embedding is its shared embedding: without this T5-XXL counts its 32128 × 4096 matrix twice)."""
    keys = getattr(model, "all_tied_weights_keys", None) or {}
    extra = 0
    for target, source in dict(keys).items():
        try:
            t, s = model.get_parameter(target), model.get_parameter(source)
        except AttributeError:
            continue
        if t is not s:
            extra += t.numel()
    return extra


# --------------------------------------------------------------------------------------
# One actor group's needs
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# Placement on GPUs and the plan
# --------------------------------------------------------------------------------------

_FRACTION = 10_000  # Ray keeps resource amounts in units of 1/10000


@dataclass
class Placed:
    need: GroupNeed
    replica: int
    gpus: tuple[int, ...]  # empty: could not be placed


@dataclass
class MemoryPlan:
    gpu_memory: int
    gpus: int
    needs: list[GroupNeed]
    placed: list[Placed]
    source: str = ""

    def on_gpu(self, gpu: int) -> list[Placed]:
        return [p for p in self.placed if gpu in p.gpus]

    def used(self, gpu: int, certain: bool = False) -> int:
        return sum(p.need.certain if certain else p.need.takes for p in self.on_gpu(gpu))

    def problems(self, certain_only: bool = False) -> list[str]:
        """One sentence per shortfall: a GPU that overflows (by how much, which roles), an engine whose
        budget cannot hold its model, a model that could not be sized. Without ``certain_only``,
        the estimates (activations, CUDA contexts) count too."""
        out = []
        for need in self.needs:
            out.extend(need.problems)
            if not certain_only:
                out.extend(need.estimated_problems)
        for gpu in range(self.gpus):
            used = self.used(gpu, certain=certain_only)
            if used > self.gpu_memory:
                parts = ", ".join(f"{p.need.group.name} {fmt(p.need.certain if certain_only else p.need.takes)}"
                                  for p in self.on_gpu(gpu))
                what = "weights and vLLM budgets alone" if certain_only else "the roles"
                out.append(f"GPU {gpu} ({fmt(self.gpu_memory)}): {what} need {fmt(used)}, over by "
                           f"{fmt(used - self.gpu_memory)}: {parts}")
        for p in self.placed:
            if p.need.where == "gpu" and not p.gpus:
                replica = f" (replica {p.replica + 1})" if p.need.group.resources.num_replicas > 1 else ""
                out.append(f"{p.need.group.name}{replica}: no GPU has num_gpus "
                           f"{p.need.group.resources.num_gpus:g} free after the actors before it")
        return out

    @property
    def unknown(self) -> list[str]:
        return [f"{n.group.name}: size unknown ({n.unknown})" for n in self.needs if n.unknown]

    def format(self) -> str:
        return format_plan(self)


def place(needs: Sequence[GroupNeed], gpus: int) -> list[Placed]:
    """Replicas onto GPUs in start order, as Ray packs fractional GPUs: best fit (the GPU with the
    least free fraction that still fits); whole-GPU actors take the lowest free GPUs."""
    free = [_FRACTION] * gpus
    out = []
    for need in needs:
        res = need.group.resources
        for replica in range(res.num_replicas):
            if need.where != "gpu":
                out.append(Placed(need, replica, ()))
                continue
            whole = need.gpus_per_replica or (math.ceil(res.num_gpus) if res.num_gpus >= 1 else 0)
            if whole:
                chosen = [g for g in range(gpus) if free[g] == _FRACTION][:whole]
                if len(chosen) < whole:
                    chosen = []
                for g in chosen:
                    free[g] = 0
                out.append(Placed(need, replica, tuple(chosen)))
                continue
            amount = round(res.num_gpus * _FRACTION)
            fits = [g for g in range(gpus) if free[g] >= amount]
            if not fits:
                out.append(Placed(need, replica, ()))
                continue
            g = min(fits, key=lambda i: (free[i], i))
            free[g] -= amount
            out.append(Placed(need, replica, (g,)))
    return out


def make_plan(sections: Any, gpu_memory: int, gpus: int = 1, *, use_hub: bool = True,
              cache_dir: Optional[str] = None) -> MemoryPlan:
    """The plan for an object with t2i/llm/vlm/captioner/clip sections (an ArpoConfig, or
    :func:`role_sections` of a YAML file) on ``gpus`` GPUs of ``gpu_memory`` bytes each."""
    if gpus < 1:
        raise ValueError("gpus must be at least 1")
    needs = [group_need(g, sections, gpu_memory, use_hub=use_hub, cache_dir=cache_dir) for g in plan_groups(sections)]
    return MemoryPlan(gpu_memory, gpus, needs, place(needs, gpus))


def plan_problems(sections: Any, gpu_memory_bytes: int, gpus: int = 1, *, certain_only: bool = False,
                  use_hub: bool = True, cache_dir: Optional[str] = None) -> list[str]:
    """The plan's shortfalls (empty: it fits). See :meth:`MemoryPlan.problems`."""
    return make_plan(sections, gpu_memory_bytes, gpus, use_hub=use_hub, cache_dir=cache_dir).problems(certain_only)


@dataclass
class RoleSections:
    """The five role sections of a config file, validated by actors' own config classes."""

    t2i: Any
    llm: Any
    vlm: Any
    captioner: Any
    clip: Any


def role_sections(data: Mapping[str, Any], source: str = "<config>") -> RoleSections:
    """Validate the role sections of a batch profile's dict (other top-level keys are ignored)."""
    from actors.config import CaptionerConfig, ClipConfig, LLMConfig, T2IConfig, VLMConfig
    from core.config import validate

    classes = dict(t2i=T2IConfig, llm=LLMConfig, vlm=VLMConfig, captioner=CaptionerConfig, clip=ClipConfig)
    out = {}
    for role, cls in classes.items():
        section = data.get(role) or {}
        try:
            out[role] = validate(cls, section, source)
        except Exception as exc:
            from core.config import ConfigError

            if isinstance(exc, ConfigError):
                raise ConfigError(exc.source, f"{role}.{exc.key}", exc.reason) from None
            raise
    return RoleSections(**out)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def format_plan(plan: MemoryPlan) -> str:
    lines = [f"GPU memory plan: {plan.gpus} GPU{'s' if plan.gpus > 1 else ''} of {fmt(plan.gpu_memory)} "
             f"({plan.gpu_memory / 1e9:.1f} GB) each" + (f", {plan.source}" if plan.source else ""), ""]
    rows = [["group", "GPU", "num_gpus", "params", "weights", "KV cache", "activations", "CUDA ctx", "takes"]]
    for p in plan.placed:
        n = p.need
        name = n.group.name + (f" #{p.replica + 1}" if n.group.resources.num_replicas > 1 else "")
        where = ",".join(map(str, p.gpus)) if p.gpus else {"gpu": "none", "cpu": "CPU", "remote": "remote"}[n.where]
        if n.where != "gpu" or n.unknown:
            note = "size unknown" if n.unknown else "-"
            rows.append([name, where, f"{n.group.resources.num_gpus:g}", "-", note, "-", "-", "-", "-"])
            continue
        kv = (fmt(n.kv) if n.is_vllm else f"~{fmt(n.kv)}") if n.kv else "-"
        if n.is_vllm:
            takes = f"{fmt(n.budget)} (vLLM budget)" if n.takes == n.budget else f"~{fmt(n.takes)} (budget {fmt(n.budget)} too small)"
        else:
            takes = f"~{fmt(n.takes)}"
        rows.append([name, where, f"{n.group.resources.num_gpus:g}", fmt_params(n.params), fmt(n.weights), kv,
                     f"~{fmt(n.activations)}", "in budget" if n.is_vllm else f"~{fmt(n.context)}", takes])
    lines += _table(rows)
    lines += ["", "Per GPU (~: includes estimates):"]
    rows = []
    for gpu in range(plan.gpus):
        used, sure = plan.used(gpu), plan.used(gpu, certain=True)
        verdict = "fits" if used <= plan.gpu_memory else f"OVER by {fmt(used - plan.gpu_memory)}"
        rows.append([f"GPU {gpu}", f"~{fmt(used)} of {fmt(plan.gpu_memory)}", f"(certain: {fmt(sure)})",
                     f"free ~{fmt(max(0, plan.gpu_memory - used))}", verdict,
                     ", ".join(p.need.group.name for p in plan.on_gpu(gpu)) or "-"])
    lines += _table(rows)
    lines += ["", "Details:"]
    for n in plan.needs:
        head = f"  {n.group.name} [{n.model}]" if n.model else f"  {n.group.name}"
        if n.source:
            head += (f" (from the {n.source})" if n.source.startswith("built-in table") else f" (config: {n.source})")
        if n.unknown:
            lines.append(f"{head}: size unknown: {n.unknown}")
            continue
        if n.where == "cpu":
            lines.append(f"{head}: on the CPU (num_gpus 0 or device cpu): no GPU memory")
            continue
        lines.append(head)
        lines += [f"    {note}" for note in n.notes]
    problems = plan.problems()
    lines.append("")
    if plan.unknown:
        lines += ["Incomplete: " + u for u in plan.unknown]
    if problems:
        lines += ["DOES NOT FIT:"] + [f"  {p}" for p in problems]
    elif not plan.unknown:
        lines.append("Fits.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The batch job's start-up check
# --------------------------------------------------------------------------------------

def local_gpu_memory() -> Optional[list[int]]:
    """Total memory of each GPU this process can see (honouring CUDA_VISIBLE_DEVICES given as indices),
    read through NVML or nvidia-smi without creating a CUDA context; None when unknown."""
    totals = _nvml_totals()
    if totals is None:
        totals = _nvidia_smi_totals()
    if totals is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [s.strip() for s in visible.split(",") if s.strip()]
        if not all(s.isdigit() for s in ids):
            return None  # UUIDs or MIG names: not mapped here
        try:
            totals = [totals[int(s)] for s in ids]
        except IndexError:
            return None
    return totals


def _nvml_totals() -> Optional[list[int]]:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return [int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total)
                    for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return None


def _nvidia_smi_totals() -> Optional[list[int]]:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return [int(float(line.strip())) * MiB for line in out.splitlines() if line.strip()]
    except Exception:  # noqa: BLE001
        return None


@dataclass
class MemoryCheck:
    """The batch job's start-up verdict: ``problems`` refuse the job; ``warnings`` and ``info`` are logged."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)


def gpu_memory_check(sections: Any, cluster_gpus: float, gpu_memories: Optional[Iterable[int]] = None, *,
                     use_hub: bool = True) -> MemoryCheck:
    """The memory plan for a cluster with ``cluster_gpus`` GPUs, when their memory is known.

    ``gpu_memories``: the GPUs this machine sees (None: ask NVML / nvidia-smi). The plan runs
    only when they are all of the cluster's GPUs (a one-machine cluster); it then uses the
    smallest of them. Certain shortfalls are ``problems``; those that need the estimates are
    ``warnings``; a skipped check says why in ``info``.
    """
    check = MemoryCheck()
    memories = list(gpu_memories) if gpu_memories is not None else local_gpu_memory()
    count = int(round(cluster_gpus))
    if not memories:
        check.info.append("GPU memory plan skipped: this machine cannot tell its GPUs' memory (no NVML, no nvidia-smi); "
                          "check by hand with python -m actors.plan --config FILE --gpu-memory SIZE --gpus N")
        return check
    if len(memories) != count:
        check.info.append(f"GPU memory plan skipped: the cluster has {cluster_gpus:g} GPUs, this machine sees "
                          f"{len(memories)}; plan by hand with python -m actors.plan --gpu-memory SIZE --gpus N")
        return check
    try:
        plan = make_plan(sections, min(memories), count, use_hub=use_hub)
    except Exception as exc:  # noqa: BLE001 - a planning aid must not stop a job the loaders might run fine
        check.info.append(f"GPU memory plan skipped: {type(exc).__name__}: {exc}")
        return check
    certain = plan.problems(certain_only=True)
    check.problems = certain
    check.warnings = [p for p in plan.problems() if p not in certain] + plan.unknown
    if not certain and not check.warnings:
        check.info.append(f"GPU memory plan: the roles fit {count} GPU(s) of {fmt(min(memories))} "
                          f"({', '.join(f'GPU {g}: ~{fmt(plan.used(g))}' for g in range(count))})")
    return check
