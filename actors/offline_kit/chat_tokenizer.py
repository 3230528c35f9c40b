"""A small byte-level BPE chat tokenizer trained in-process, for the tiny LLM and VLM.

Byte-level BPE never produces an unknown token, so any prompt the agent writes can be
encoded. The chat template is ChatML (the format SmolLM2 uses), and it accepts both a
plain string ``content`` and a list of parts, where an ``{"type": "image"}`` part
becomes the ``<image>`` placeholder that LLaVA-style processors expand.
"""
from __future__ import annotations

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN]

# Jinja, rendered by transformers' apply_chat_template (and so by vLLM, which uses it too).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# Training text: the vocabulary of the prompts the agent exchanges (image descriptions,
# instructions, lists), so common words get their own tokens and prompts stay short.
_CORPUS = """
You are a helpful assistant. Describe the image in one sentence. Compare the two images.
Write a prompt for a text to image model. Return a Python list of strings. The answer is:
a photo of a cat sitting on a red sofa, soft light, high detail, 4k, trending on artstation
a painting of a mountain lake at sunset, oil on canvas, impressionism, warm colours
an astronaut riding a horse on the moon, digital art, cinematic lighting, wide angle
portrait of an old man with a beard, black and white photograph, studio lighting
a bowl of fruit on a wooden table, still life, watercolor, pastel colours, morning light
a futuristic city skyline at night, neon lights, cyberpunk, rain, reflections
the first image shows a dog, the second image shows a cat; both are outdoors in a park
What is missing from the generated image? Which details differ? List the differences.
Improve the prompt so that the generated image matches the reference image more closely.
Score: 0.85. Keep the style words. Remove words that do not appear in the image.
""".strip().splitlines()


def build_chat_tokenizer(vocab_size: int = 512, model_max_length: int = 512):
    """Train the BPE tokenizer and wrap it as a transformers fast tokenizer with the chat template."""
    from transformers import PreTrainedTokenizerFast

    from actors.offline_kit.vocab import train_byte_level_bpe

    # Repeating the corpus is deterministic; BPE training on a fixed input gives a fixed vocabulary.
    tok = train_byte_level_bpe(vocab_size, SPECIAL_TOKENS, _CORPUS * 4, unk_token="<unk>", add_prefix_space=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",  # generation stops at the end of the assistant turn
        chat_template=CHATML_TEMPLATE,
        model_max_length=model_max_length,
    )
