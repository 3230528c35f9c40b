"""The conversations the agent has with the VLM and the LLM (templates in agents.prompts).

Each function is one step of the thesis' prompt generation (§4.2.2, Appendix B2) and
knows roles, not graph state.
"""
from __future__ import annotations

import asyncio
from typing import Optional, Sequence

import numpy as np

from actors.roles import ChatRole, Message
from agents import prompts
from agents.parsing import parse_fragments
from agents.prompt_parts import Fragment, Part, PromptParts, classify_fragment, normalise

ASPECTS: tuple[Part, ...] = ("content", "style")
#: Answers longer than this are parsed on a worker thread, off the event loop every
#: optimisation shares; shorter ones inline. Measured (2-core VM, CPU time): a real 1 KiB
#: answer parses in ~0.03 ms, about what the hop to a thread costs, and the worst adversarial
#: 1 KiB in ~3 ms, the most an answer may hold up the loop. (At 4 KiB the worst is ~13 ms.)
INLINE_PARSE_CHARS = 1024


async def _chat(role: ChatRole, name: str, messages: Sequence[Message]) -> str:
    reply = await role.chat(messages)
    if not isinstance(reply, str):
        raise TypeError(f"the {name} returned {type(reply).__name__}, expected the reply text (str)")
    return reply


async def describe_image(vlm: ChatRole, image: np.ndarray) -> dict[str, str]:
    """Enhanced framework, B.5 and B.6: the VLM describes the image's content and its style."""
    content, style = await asyncio.gather(
        *(_chat(vlm, "VLM", prompts.describe_messages(image, aspect)) for aspect in ASPECTS))
    return {"content": content, "style": style}


async def compare_images(vlm: ChatRole, reference: np.ndarray, generated: np.ndarray) -> dict[str, str]:
    """Vanilla framework, B.1: the VLM describes how the generated image differs from the reference."""
    return {"overall": await _chat(vlm, "VLM", prompts.compare_images_messages(reference, generated))}


async def list_differences(llm: ChatRole, reference: dict[str, str], generated: dict[str, str]) -> dict[str, str]:
    """Enhanced framework, B.8: the LLM lists content differences and style differences of two descriptions."""
    content, style = await asyncio.gather(
        *(_chat(llm, "LLM", prompts.differences_messages(aspect, reference[aspect], generated[aspect])) for aspect in ASPECTS))
    return {"content": content, "style": style}


async def ask_for_list(llm: ChatRole, messages: list[Message], max_reasks: int) -> list[str]:
    """Ask for a list; re-ask up to ``max_reasks`` times while the answer is unreadable; [] if it stays so."""
    for attempt in range(max_reasks + 1):
        answer = await _chat(llm, "LLM", messages)
        found = await _parse_list(answer)
        if found:
            return found
        if attempt < max_reasks:
            messages = prompts.reask_messages(messages, answer)
    return []


async def _parse_list(answer: str) -> Optional[list[str]]:
    """parse_fragments(answer), on a worker thread when the answer is long (see INLINE_PARSE_CHARS)."""
    if len(answer) <= INLINE_PARSE_CHARS:
        return parse_fragments(answer)
    return await asyncio.to_thread(parse_fragments, answer)


async def propose_fragments(
    llm: ChatRole,
    differences: dict[str, str],
    current: PromptParts,
    *,
    max_reasks: int,
    max_candidates: int,
) -> list[Fragment]:
    """B.3: candidate fragments that would reduce the differences, new to the current prompt.

    Enhanced differences ({"content", "style"}) get one request per aspect and the
    fragments take that aspect as their part; a vanilla difference ({"overall"}) gets one
    request and each fragment is sorted by :func:`classify_fragment`. At most
    ``max_candidates`` fragments are kept from each answer.
    """
    prompt = current.render()
    if "overall" in differences:
        texts = await ask_for_list(llm, prompts.propose_messages(differences["overall"], prompt), max_reasks)
        proposed = [Fragment(t, classify_fragment(t)) for t in texts[:max_candidates]]
    else:
        answers = await asyncio.gather(
            *(ask_for_list(llm, prompts.propose_messages(differences[a], prompt, aspect=a), max_reasks) for a in ASPECTS))
        proposed = [Fragment(t, a) for a, texts in zip(ASPECTS, answers) for t in texts[:max_candidates]]
    return _new_only(proposed, current)


def _new_only(fragments: list[Fragment], current: PromptParts) -> list[Fragment]:
    out: list[Fragment] = []
    seen: set[str] = set()
    for frag in fragments:
        key = normalise(frag.text)
        if key in seen or current.contains(frag.text):
            continue
        seen.add(key)
        out.append(frag)
    return out



async def name_extras(vlm: ChatRole, reference: np.ndarray, generated: np.ndarray) -> str:
    """agent.negative: the VLM names what the generated image shows that the reference lacks."""
    return await _chat(vlm, "VLM", prompts.negative_extras_messages(reference, generated))


async def propose_negatives(llm: ChatRole, extras: str, current: PromptParts, *, max_reasks: int,
                            max_candidates: int) -> list[str]:
    """agent.negative: candidate negative fragments for ``extras``; none that repeats a fragment of the
    prompt (a negative prompt must not fight what the prompt asks for), none twice; at most ``max_candidates``."""
    texts = await ask_for_list(llm, prompts.negative_fragments_messages(extras, current.render()), max_reasks)
    fresh = _new_only([Fragment(t, "content") for t in texts], current)
    return [f.text for f in fresh][:max_candidates]
