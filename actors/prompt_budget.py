"""How many prompt tokens a text-to-image pipeline actually reads, and with which tokenizer to count them.

A pipeline may hold up to three text encoders and they read different amounts of the prompt:

* SD1.5, SDXL: CLIP only (SDXL: two CLIPs over the same vocabulary) — 77 positions, start and end
  of text included; the rest is truncated. The smallest limit binds.
* SD3/SD3.5: two CLIPs (77, truncated) *and* T5 (``max_sequence_length``, 256 by default, up to 512):
  the T5 embeddings carry the whole prompt into the transformer, so T5's limit is the budget.
* FLUX.1: CLIP (77, its pooled vector only) and T5 (512): T5 binds.
* PixArt-α: T5 only (120).

So: where a pipeline has a T5 tokenizer, the budget is the T5 sequence length the pipeline is called
with (its ``max_sequence_length``: the call's default, or the configured ``max_prompt_tokens`` up to
the tokenizer's own maximum) counted with T5's tokenizer; else the smallest CLIP limit counted with
CLIP's tokenizer. A configured budget above what the binding encoder reads is refused, naming it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

TOKENIZER_ATTRS = ("tokenizer", "tokenizer_2", "tokenizer_3")
# A tokenizer's model_max_length is a huge sentinel when the file does not set it.
_UNSET_LENGTH = 1_000_000


class PromptBudgetError(ValueError):
    """The configured prompt budget (``t2i.max_prompt_tokens``) does not fit the pipeline."""


@dataclass(frozen=True)
class PromptBudget:
    tokenizer_attr: str          # the pipeline attribute of the binding tokenizer
    encoder: str                 # "CLIP" | "T5" | the tokenizer's class name
    limit: int                   # tokens the binding encoder reads, special tokens included
    special: int                 # special tokens its tokenizer adds to every prompt
    max_sequence_length: Optional[int]  # passed to the pipeline call (T5 pipelines), None otherwise
    note: str                    # one line: what binds and why

    def as_dict(self) -> dict:
        return {"tokenizer": self.tokenizer_attr, "encoder": self.encoder, "limit": self.limit,
                "special": self.special, "max_sequence_length": self.max_sequence_length, "note": self.note}


def _encoder_kind(tokenizer: Any) -> str:
    name = type(tokenizer).__name__
    if name.startswith("T5Tokenizer"):
        return "T5"
    if name.startswith("CLIPTokenizer"):
        return "CLIP"
    return name


def _length(tokenizer: Any) -> Optional[int]:
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < _UNSET_LENGTH else None


def _special_count(tokenizer: Any) -> int:
    return len(tokenizer("", add_special_tokens=True)["input_ids"])


def _call_default(pipe: Any, name: str) -> Optional[int]:
    param = inspect.signature(type(pipe).__call__).parameters.get(name)
    return param.default if param is not None and isinstance(param.default, int) else None


def pipeline_budget(pipe: Any, configured: Optional[int] = None) -> PromptBudget:
    """The binding encoder of ``pipe`` and its limit; ``configured`` (``t2i.max_prompt_tokens``), when given,
    must not exceed what that encoder reads (raises :class:`PromptBudgetError` naming both)."""
    tokenizers = [(attr, getattr(pipe, attr, None)) for attr in TOKENIZER_ATTRS]
    tokenizers = [(attr, tok) for attr, tok in tokenizers if tok is not None]
    if not tokenizers:
        raise PromptBudgetError(f"pipeline {type(pipe).__name__} has no tokenizer to count prompt tokens with")
    t5 = [(attr, tok) for attr, tok in tokenizers if _encoder_kind(tok) == "T5"]
    others = ", ".join(f"{attr} ({_encoder_kind(tok)}, {_length(tok) or '?'})" for attr, tok in tokenizers)
    if t5:
        attr, tok = t5[0]
        default = _call_default(pipe, "max_sequence_length")
        ceiling = _length(tok) or default
        if default is None or ceiling is None:
            raise PromptBudgetError(f"pipeline {type(pipe).__name__} has a T5 tokenizer ({attr}) but no "
                                    f"max_sequence_length to read its limit from")
        if configured is not None and configured > ceiling:
            raise PromptBudgetError(f"t2i.max_prompt_tokens {configured} is more than the T5 encoder of "
                                    f"{type(pipe).__name__} reads ({attr}: at most {ceiling} tokens)")
        limit = configured if configured is not None else default
        note = (f"T5 binds ({attr}, max_sequence_length {limit}{'' if configured is None else ', configured'}); "
                f"tokenizers: {others}; the CLIP encoders, if any, truncate at their limit")
        return PromptBudget(attr, "T5", limit, _special_count(tok), limit, note)
    lengths = [(attr, tok, _length(tok)) for attr, tok in tokenizers if _length(tok)]
    if not lengths:
        raise PromptBudgetError(f"pipeline {type(pipe).__name__}: no tokenizer says how many tokens it reads "
                                f"(model_max_length unset in {others})")
    attr, tok, limit = min(lengths, key=lambda t: t[2])
    if configured is not None and configured > limit:
        raise PromptBudgetError(f"t2i.max_prompt_tokens {configured} is more than {type(pipe).__name__} reads: its "
                                f"{_encoder_kind(tok)} encoder ({attr}) truncates at {limit} tokens")
    budget = configured if configured is not None else limit
    note = f"{_encoder_kind(tok)} binds ({attr}, {limit} tokens{'' if configured is None else f'; configured {budget}'}); tokenizers: {others}"
    return PromptBudget(attr, _encoder_kind(tok), budget, _special_count(tok), None, note)
