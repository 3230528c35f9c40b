"""Training captions with a trigger word: ``agent.caption_prefix`` (``--caption-prefix``).

A LoRA or DreamBooth dataset wants every caption to start with the same trigger word
(``"ohwx"``, ``"sks dog"``) that the fine-tuned model learns to tie to the subject. The
base model behind the T2I role knows nothing of it, so the optimisation renders and scores
its prompts without it; the caption of a result is ``"<prefix>, <prompt>"``.

* Added once: when the prompt already has a fragment equal to the prefix (compared as
  :func:`agents.prompt_parts.normalise` compares fragments: case, spacing and edge
  punctuation aside), the caption is the prompt as it is.
* Counted once against the token budget: with a prefix the agent counts the tokens of the
  caption text (prefix and prompt together, as the trainer's text encoder will read it), not
  of the prompt, so every prompt it keeps still fits the encoder once captioned — the prefix
  is one part of that one text, never added to the count a second time.
"""
from __future__ import annotations

import re
from typing import Awaitable, Callable, Optional, Sequence

from agents.prompt_parts import normalise

#: Characters a trigger may not hold: each would split it into several prompt fragments (or lines).
_SEPARATORS = re.compile(r"[,;\n\r]")
MAX_PREFIX_CHARS = 200


def check_caption_prefix(value: Optional[str]) -> Optional[str]:
    """The prefix with its edge spaces removed, or a ValueError saying what is wrong with it."""
    if value is None:
        return None
    text = " ".join(value.split())
    if not normalise(text):
        raise ValueError(f"{value!r} is empty or punctuation only; give a trigger word such as ohwx, or leave it unset")
    if _SEPARATORS.search(value):
        raise ValueError(f"{value!r} holds a comma, semicolon or line break, which would split it into several prompt "
                         "fragments; give one word or phrase (e.g. 'ohwx man')")
    if len(text) > MAX_PREFIX_CHARS:
        raise ValueError(f"is {len(text)} characters long; a trigger word or phrase has at most {MAX_PREFIX_CHARS}")
    return text


def with_caption_prefix(prompt: str, prefix: Optional[str]) -> str:
    """The training caption of ``prompt``: ``"<prefix>, <prompt>"``, or ``prompt`` when there is no prefix or a
    fragment of the prompt already is the prefix."""
    if not prefix:
        return prompt
    key = normalise(prefix)
    if any(normalise(fragment) == key for fragment in prompt.split(",")):
        return prompt
    return f"{prefix}, {prompt}" if prompt.strip() else prefix


CountTokens = Callable[[Sequence[str]], Awaitable[Sequence[int]]]


def caption_token_counter(count_tokens: CountTokens, prefix: Optional[str]) -> CountTokens:
    """``count_tokens`` of each prompt's training caption: with a prefix, the budget check counts the prefix
    once, in the one text the trainer's encoder reads; without one, ``count_tokens`` itself."""
    if not prefix:
        return count_tokens

    async def count(texts: Sequence[str]) -> Sequence[int]:
        return await count_tokens([with_caption_prefix(t, prefix) for t in texts])

    return count
