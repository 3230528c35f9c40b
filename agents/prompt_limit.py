"""The agent's token limit, from the loaded text-to-image pipeline when the config leaves it open.

``t2i.max_prompt_tokens: null`` (the default) means "what the target's binding text encoder reads":
77 CLIP tokens for SD1.5/SDXL, T5's sequence length for SD3.5, FLUX.1 and PixArt-α
(actors/prompt_budget.py). Only the loaded T2I role knows it, so every entry point asks it once,
after the roles are ready and before a graph is built; a configured value was already checked
against the pipeline when the model loaded.
"""
from __future__ import annotations

import logging
from typing import Any, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")


async def with_prompt_limit(cfg: C, t2i: Any) -> C:
    """``cfg`` (anything with a ``t2i`` section) with ``t2i.max_prompt_tokens`` set from ``t2i.prompt_budget()``
    when it is None; ``cfg`` itself otherwise."""
    if cfg.t2i.max_prompt_tokens is not None:
        return cfg
    budget = await t2i.prompt_budget()
    limit = int(budget["limit"])
    log.info("prompt budget from the text-to-image pipeline: %d tokens — %s", limit, budget.get("note", ""))
    return cfg.model_copy(update={"t2i": cfg.t2i.model_copy(update={"max_prompt_tokens": limit})})


async def check_negative_support(cfg: Any, t2i: Any) -> None:
    """Refuse ``agent.negative.enabled`` on a target where a negative prompt would not act (ValueError naming the
    option and the reason the T2I role gives: FLUX.1, no negative_prompt argument, guidance off)."""
    if not cfg.agent.negative.enabled:
        return
    refused = (await t2i.prompt_budget()).get("negative_prompt_refused")
    if refused:
        raise ValueError(f"agent.negative.enabled (--negative): the text-to-image model {cfg.t2i.model!r} cannot use a "
                         f"negative prompt: {refused}; turn the option off for this target")
