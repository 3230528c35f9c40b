"""Turn a conversation into the model's prompt with its own chat template.

The vLLM and transformers backends both render prompts here, so a model gives the
same prompt tokens, and with greedy decoding the same answer, under either backend.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from actors.chat.messages import ChatMessage, ImagePart, TextPart, to_template_conversation


def as_id_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _generation_eos_ids(model: str) -> list[int]:
    """End-of-turn ids from the model's generation_config.json (e.g. Llama 3 lists two); [] when it has none."""
    from transformers import GenerationConfig

    try:
        return as_id_list(GenerationConfig.from_pretrained(model).eos_token_id)
    except OSError:  # no generation_config.json (GGUF folders, some hub models): the tokenizer's eos only
        return []


class ChatPrompter:
    """Loads the tokenizer (text models) or the processor (vision models) of ``model``.

    Special tokens follow transformers' conventions: a tokenizer's chat template carries
    its own BOS, so text prompts are tokenized without adding special tokens; a
    processor adds them unless the rendered prompt already starts with BOS (what
    ``ProcessorMixin.apply_chat_template`` does).
    """

    def __init__(self, model: str, *, vision: bool, tokenizer: Optional[str] = None,
                 chat_template: Optional[str] = None, gguf_file: Optional[str] = None):
        from transformers import AutoProcessor, AutoTokenizer

        self.vision = vision
        source = tokenizer or model
        if vision:
            self.processor = AutoProcessor.from_pretrained(source)
            self.tokenizer = self.processor.tokenizer
            owner = self.processor
        else:
            self.processor = None
            kwargs = {"gguf_file": gguf_file} if gguf_file and tokenizer is None else {}
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            owner = self.tokenizer
        self.chat_template = chat_template or getattr(owner, "chat_template", None) or self.tokenizer.chat_template
        if not self.chat_template:
            raise ValueError(f"model {source!r} has no chat template; set chat_template in the config")
        self._template_owner = owner
        self._check_template(source)
        self.stop_token_ids = sorted(set(as_id_list(self.tokenizer.eos_token_id)) | set(_generation_eos_ids(model)))

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text, ending with the assistant turn's opening."""
        conv = to_template_conversation(messages, self.vision)
        return self._template_owner.apply_chat_template(
            conv, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )

    def _check_template(self, source: str) -> None:
        """Render the shapes of conversation callers send (a user turn, with an image for a vision model; a
        re-ask: user, assistant, user) once at load, so a template that cannot take them is refused before
        any request instead of failing every one."""
        first = (TextPart("Describe the image."),)
        if self.vision:
            first = (ImagePart(np.zeros((8, 8, 3), np.uint8)),) + first
        shapes = {"a user turn": [ChatMessage("user", first)],
                  "a re-ask (user, assistant, user)": [ChatMessage("user", first), ChatMessage("assistant", (TextPart("a"),)),
                                                       ChatMessage("user", (TextPart("Answer as a list."),))]}
        for name, conversation in shapes.items():
            try:
                self.render(conversation)
            except Exception as exc:  # noqa: BLE001 - jinja2 and transformers raise several kinds
                raise ValueError(f"the chat template of {source!r} cannot render {name}: {type(exc).__name__}: {exc} "
                                 "(chat_template in the role's config overrides the model's)") from None

    def adds_special_tokens(self, prompt: str) -> bool:
        if not self.vision:
            return False
        bos = self.tokenizer.bos_token
        return not (bos is not None and prompt.startswith(bos))

    def token_ids(self, prompt: str) -> list[int]:
        """Prompt token ids (image placeholders stay single tokens; the model's processor expands them)."""
        return self.tokenizer(prompt, add_special_tokens=self.adds_special_tokens(prompt))["input_ids"]
