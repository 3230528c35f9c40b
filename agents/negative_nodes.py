"""A recovered negative prompt (``agent.negative``, ``--negative``): two graph nodes after the positive loop.

Not in the thesis: a peer feature (clip-interrogator's negative mode) done the ARPO way, by
generating and scoring. The positive loop has ended with its best prompt P*.

1. ``negative_propose``: the VLM sees the reference (Image 1) and P*'s first-seed image (Image 2) and
   names what Image 2 shows that Image 1 lacks; the LLM turns that into candidate negative fragments
   (none that repeats a fragment of P*, at most ``negative.max_candidates``).
2. ``negative_select``: every candidate is tried alone, P* generated with the run's seeds and the
   candidate as negative prompt, all candidates at once (so the T2I role batches them, with the other
   optimisations' calls) and scored by CLIP-I (mean over seeds, as the loop scores). Those that beat
   P*'s own CLIP-I are then added greedily, best alone first: each addition is generated and kept only
   if CLIP-I rises above the best so far, up to ``negative.max_fragments`` fragments, and only while the
   whole negative text (after ``t2i.negative_prompt``, when the profile has one) stays within the
   target's token budget, the same encoder limit as the prompt's.

Cost per image: one VLM call, one LLM call (plus re-asks), and ``n + m`` generations with the run's
seeds, ``n`` the candidates that fit and ``m`` the greedy additions tried (at most
``max_fragments - 1``), each with one CLIP image-scoring call. The result keeps P* and its CLIP-I as
they were; ``negative`` records every try, so a reader sees what each fragment did.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Sequence

from agents import chat_steps
from agents.nodes import NodeDeps, generate_and_score, generated_input, reference_input
from agents.prompt_parts import PromptParts
from agents.selection import token_budget
from agents.state import ArpoState

NEGATIVE_DIR = "negative"  # inside the image's work folder: one sub-folder of images per try


def _best(state: ArpoState) -> dict:
    return state["history"][state["best_iteration"]]


async def negative_propose(state: ArpoState, deps: NodeDeps) -> dict:
    """What P*'s image shows that the reference lacks (VLM), as candidate negative fragments (LLM)."""
    best = _best(state)
    reference, generated = await asyncio.gather(reference_input(state, deps, state["reference_path"]),
                                                generated_input(state, deps, best["image_paths"][0]))
    extras = await chat_steps.name_extras(deps.roles.vlm, reference, generated)
    candidates = await chat_steps.propose_negatives(
        deps.roles.llm, extras, PromptParts.from_lists(best["content"], best["style"]),
        max_reasks=deps.cfg.max_reasks, max_candidates=deps.cfg.negative.max_candidates)
    return {"negative": {"extras": extras, "candidates": candidates, "base_iteration": state["best_iteration"],
                         "base_clip_i": best["clip_i"], "fragments": [], "prompt": None, "clip_i": best["clip_i"],
                         "tries": [], "outcomes": [], "searched": False}}


async def negative_select(state: ArpoState, deps: NodeDeps) -> dict:
    """Try each candidate alone, then add the winners greedily while CLIP-I rises (module docstring)."""
    neg = dict(state["negative"])
    best = _best(state)
    folder = Path(state["work_dir"]) / NEGATIVE_DIR
    fixed = deps.negative_prompt
    fits = token_budget(deps.roles.t2i.count_tokens, deps.token_budget)
    tries: list[dict] = []

    def text_of(fragments: Sequence[str]) -> str:
        return ", ".join([fixed, *fragments] if fixed else fragments)

    async def attempt(fragments: list[str], index: int) -> dict:
        scored = await generate_and_score(state, deps, best["rendered"], folder / f"try_{index:02d}",
                                          negative_prompt=", ".join(fragments))
        per_seed, paths = scored.clip_i, scored.paths
        return {"fragments": list(fragments), "clip_i": sum(per_seed) / len(per_seed), "clip_i_per_seed": per_seed,
                "image_paths": paths}

    candidates = list(neg["candidates"])
    fit = dict(zip(candidates, await fits([text_of([c]) for c in candidates]))) if candidates else {}
    alone_list = [c for c in candidates if fit[c]]
    singles = await asyncio.gather(*(attempt([c], k) for k, c in enumerate(alone_list)))
    tries.extend(singles)
    alone = {c: t["clip_i"] for c, t in zip(alone_list, singles)}
    base = float(neg["base_clip_i"])
    winners = sorted((c for c in alone_list if alone[c] > base), key=lambda c: (-alone[c], candidates.index(c)))
    kept: list[str] = []
    score = base
    outcome = {c: "too_long" for c in candidates if not fit[c]}
    outcome.update({c: "no_gain" for c in alone_list if alone[c] <= base})
    for c in winners:
        if not kept:
            kept, score = [c], alone[c]
            outcome[c] = "kept"
            continue
        if len(kept) >= deps.cfg.negative.max_fragments:
            outcome[c] = "limit"
            continue
        if not (await fits([text_of([*kept, c])]))[0]:
            outcome[c] = "too_long"
            continue
        tried = await attempt([*kept, c], len(tries))
        tries.append(tried)
        if tried["clip_i"] > score:
            kept, score = [*kept, c], tried["clip_i"]
            outcome[c] = "kept"
        else:
            outcome[c] = "no_gain"
    neg.update(searched=True, fragments=kept, prompt=", ".join(kept) or None, clip_i=score, tries=tries,
               outcomes=[{"text": c, "outcome": outcome[c], "clip_i_alone": alone.get(c)} for c in candidates])
    return {"negative": neg}
