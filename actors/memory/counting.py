"""Parameters and weight bytes of a model built from its config on PyTorch's ``meta`` device (no memory, no
weights read): transformers models (with AWQ/GPTQ/fp8/bitsandbytes quantisation), diffusers pipeline
components (ties transformers leaves undone on meta counted once, persistent buffers counted)."""
from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Optional

from actors.memory.sizes import SizingError

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
