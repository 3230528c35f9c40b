"""Tiny random-weight BLIP2 (OPT language model) for the captioner role.

Saved with ``save_pretrained`` (model, Blip2Processor, tokenizer) so it loads through
``CaptionerModel`` with AutoProcessor + AutoModelForImageTextToText. The tokenizer is a
byte-level BPE trained in-process on an English word list (see vocab.py), shaped like OPT's:
``</s>`` is both BOS and EOS and is prepended to text.

transformers-5 trap: Blip2Processor crashes when the tokenizer carries an ``image_token``
attribute holding a plain string; we give it a tokenizer without one (the processor then
registers ``<image>`` itself, which is already in the vocabulary) and set
``Blip2Config(image_token_index=...)`` to that id.
"""
from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>", "<image>"]
VOCAB_SIZE = 2048
IMAGE_SIZE = 32
NUM_QUERY_TOKENS = 4


def build_tokenizer():
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from actors.offline_kit.vocab import train_byte_level_bpe

    backend = train_byte_level_bpe(VOCAB_SIZE, SPECIAL_TOKENS)
    eos = backend.token_to_id("</s>")
    backend.post_processor = TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def build(out_dir: Path, seed: int = 0) -> dict:
    """Save the tiny BLIP2 under ``out_dir/captioner`` and return the captioner config section."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    from actors.config import CaptionerConfig

    folder = Path(out_dir) / "captioner"
    tokenizer = build_tokenizer()
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, encoder_hidden_size=32, vocab_size=len(tokenizer)),
        text_config=dict(
            model_type="opt", vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
            word_embed_proj_dim=32, max_position_embeddings=128,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Blip2ForConditionalGeneration(config).eval()
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        num_query_tokens=NUM_QUERY_TOKENS,
    )
    if len(processor.tokenizer) != config.text_config.vocab_size:
        raise RuntimeError("Blip2Processor added tokens the tiny model's vocabulary lacks")
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    section = {
        "model": str(folder),
        "device": "cpu",
        "dtype": "float32",
        "max_new_tokens": 8,
        "prompt": None,
        "batching": {"max_batch_size": 16, "max_wait_ms": 20.0},
        "resources": {"num_gpus": 0, "num_cpus": 0.25},
    }
    return CaptionerConfig.model_validate(section).model_dump(mode="json")
