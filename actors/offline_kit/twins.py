"""Which miniature twin stands in for a model a profile names.

A profile names real models by hub id (or local folder). For each architecture the offline kit knows,
a builder writes a tiny random-weight twin in the real layout and returns its config section. The
table is keyed by hub id: an id whose architecture has no twin yet is answered with ``None`` and the
caller says so (never a silent stand-in of another architecture). Local folders are the user's own
models and are used as they are.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


@dataclass(frozen=True)
class Twin:
    name: str                      # folder name under the kit root, also the cache key
    architecture: str              # what the twin reproduces, for the report
    builder: str                   # "module:function" in actors.offline_kit, called (out_dir, seed=..., **kwargs)
    kwargs: tuple = ()             # extra keyword arguments, as (key, value) pairs
    takes_backend: bool = False    # the builder takes the role's backend (vllm / transformers)

    def build(self, root: Path, seed: int = 0, backend: Optional[str] = None) -> dict:
        module, function = self.builder.split(":")
        fn: Callable = getattr(importlib.import_module(f"actors.offline_kit.{module}"), function)
        kwargs = dict(self.kwargs)
        if self.takes_backend and backend is not None:
            kwargs["backend"] = backend
        # The role builders of the kit write into a folder of their own under the root; the chat twins
        # write into the folder they are given.
        own_folder = module in ("t2i", "t2i_targets", "captioner", "clip")
        return fn(Path(root) if own_folder else Path(root) / self.name, seed=seed, **kwargs)


def _t2i_target(target: str, architecture: str) -> Twin:
    return Twin(f"t2i_{target}", architecture, "t2i_targets:build", (("target", target),))


# Hub ids of the architectures the profiles, the README and the supported targets name.
T2I_TWINS: dict[str, Twin] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": Twin("t2i", "StableDiffusionPipeline (SD1.5)", "t2i:build"),
    "runwayml/stable-diffusion-v1-5": Twin("t2i", "StableDiffusionPipeline (SD1.5)", "t2i:build"),
    "stabilityai/stable-diffusion-xl-base-1.0": _t2i_target("sdxl", "StableDiffusionXLPipeline (SDXL)"),
    "stabilityai/stable-diffusion-3.5-medium": _t2i_target("sd3", "StableDiffusion3Pipeline (SD3.5)"),
    "stabilityai/stable-diffusion-3.5-large": _t2i_target("sd3", "StableDiffusion3Pipeline (SD3.5)"),
    "black-forest-labs/FLUX.1-dev": _t2i_target("flux", "FluxPipeline (FLUX.1-dev)"),
    "PixArt-alpha/PixArt-XL-2-1024-MS": _t2i_target("pixart", "PixArtAlphaPipeline (PixArt-α)"),
}

CAPTIONER_TWINS: dict[str, Twin] = {
    "Salesforce/blip2-opt-2.7b": Twin("captioner", "Blip2ForConditionalGeneration (OPT)", "captioner:build"),
}

# Chat models (llm and vlm roles), by hub id. Builders that do not exist yet make twin_for answer None.
CHAT_TWINS: dict[str, Twin] = {
    "Qwen/Qwen2-VL-7B-Instruct-AWQ": Twin("qwen2_vl", "Qwen2VLForConditionalGeneration", "qwen2_vl:build",
                                          (("variant", "qwen2_vl"),), takes_backend=True),
    "Qwen/Qwen2-VL-7B-Instruct": Twin("qwen2_vl", "Qwen2VLForConditionalGeneration", "qwen2_vl:build",
                                      (("variant", "qwen2_vl"),), takes_backend=True),
    "Qwen/Qwen2.5-VL-7B-Instruct": Twin("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "qwen2_vl:build",
                                        (("variant", "qwen2_5_vl"),), takes_backend=True),
    "meta-llama/Llama-2-13b-chat-hf": Twin("llama2_chat", "LlamaForCausalLM (Llama-2-chat template)",
                                           "chat_twins:build_llama2_chat", takes_backend=True),
    "meta-llama/Llama-2-7b-chat-hf": Twin("llama2_chat", "LlamaForCausalLM (Llama-2-chat template)",
                                          "chat_twins:build_llama2_chat", takes_backend=True),
    "mistralai/Mistral-7B-Instruct-v0.2": Twin("mistral_instruct", "MistralForCausalLM (Mistral-Instruct template)",
                                               "chat_twins:build_mistral_instruct", takes_backend=True),
    "llava-hf/llava-v1.6-mistral-7b-hf": Twin("llava_next_mistral", "LlavaNextForConditionalGeneration (Mistral)",
                                              "chat_twins:build_llava_next_mistral", takes_backend=True),
}

# open_clip architectures, by (model_name, pretrained tag). Others are stood in for by the kit's tiny
# model and the report says so (the CLIP role's loading path is the same open_clip call for every one).
CLIP_TWINS: dict[tuple[str, str], Twin] = {
    ("ViT-L-14", "openai"): Twin("clip_vit_l_14", "open_clip ViT-L/14 shape (224 px, patch 14, QuickGELU; toy widths)",
                                 "clip:build", (("shape", "vit_l_14"),)),
}
CLIP_TWIN = Twin("clip", "open_clip tiny ViT (the kit's; not the profile's architecture)", "clip:build")


def builder_exists(twin: Twin) -> bool:
    module, function = twin.builder.split(":")
    try:
        return hasattr(importlib.import_module(f"actors.offline_kit.{module}"), function)
    except ImportError:
        return False


def twin_for(table: dict[str, Twin], model: str) -> Optional[Twin]:
    """The twin for hub id ``model``, or None when its architecture has none (yet)."""
    twin = table.get(model)
    return twin if twin is not None and builder_exists(twin) else None
