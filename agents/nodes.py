"""The graph's nodes and routers (wired together in agents.graph).

A node is ``async (state, deps) -> partial state``: it reads what it needs from the
state, awaits the roles in ``deps``, and returns only the keys it changes (new lists,
never mutated ones: the state it got may be shared with the checkpointer). Images are
read from the paths in the state and written as PNG files; file work runs in a thread
so one image's disk I/O does not stall the other optimisations on the event loop.
Routers are plain functions of the state returning the next node's name.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Optional, Sequence

import numpy as np
from langgraph.graph import END

from actors.image_checks import check_rgb_uint8
from actors.object_refs import ImageRefs
from actors.roles import Roles
from agents import chat_steps
from agents.config import AgentConfig, JobConfig
from agents.images import load_rgb, save_png
from agents.prompt_parts import Fragment, PromptParts
from agents.ranked_prompts import image_score
from agents.browser.results import atomic_write_bytes
from agents.selection import NOT_STYLE, candidate_outcomes, checked_scores, greedy_select, token_budget
from agents.state import (STOP_MAX_STEPS, STOP_NO_CANDIDATES, STOP_NO_IMPROVEMENT, STOP_PATIENCE,
                          STOP_TOKEN_LIMIT, ArpoState)
from agents.training_caption import caption_token_counter

#: Pixel limit for images the nodes read (the job's default decompression-bomb limit).
DEFAULT_MAX_IMAGE_PIXELS: int = JobConfig.model_fields["max_image_pixels"].default


@dataclass(frozen=True)
class NodeDeps:
    """What every node may use besides the state: the roles and the settings."""

    roles: Roles
    cfg: AgentConfig
    token_budget: int  # most tokens (without special tokens) a rendered prompt may have
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    base_dir: Optional[Path] = None  # relative paths in the state are relative to this folder
    negative_prompt: Optional[str] = None  # t2i.negative_prompt: the role puts it before the agent's own negatives
    #: images by object-store reference (actors.object_refs), when every image-taking role is a Ray client: None
    #: hands the roles pixel arrays (in-process roles, tests' doubles)
    refs: Optional[ImageRefs] = None

    def path(self, stored: str) -> Path:
        """A path from the state as a file to open or write."""
        p = Path(stored)
        return self.base_dir / p if self.base_dir is not None and not p.is_absolute() else p


# --------------------------------------------------------------------------- helpers

async def load_image(path: str, deps: NodeDeps) -> np.ndarray:
    """An image named by the state (reference or generated), read on a worker thread under the pixel limit."""
    return await asyncio.to_thread(load_rgb, deps.path(path), deps.max_image_pixels)


def takes_object_refs(roles: Roles) -> bool:
    """Whether every role that gets images takes them as object references (actors.role_client.RoleClient)."""
    return all(getattr(getattr(roles, name), "takes_object_refs", False) for name in ("t2i", "vlm", "captioner", "clip"))


async def reference_input(state: ArpoState, deps: NodeDeps, path: str) -> object:
    """A reference image (the image's own, or a set member's) as a role argument: with object references, put
    into the store once per optimisation and handed out again by reference; else its pixels. Either way it is
    read under the pixel limit the first time (an unreadable image fails here, naming the file)."""
    if deps.refs is None:
        return await load_image(path, deps)
    owner, name = state["image_id"], f"reference:{path}"
    ref = deps.refs.get(owner, name)
    if ref is None:
        ref = await asyncio.to_thread(lambda: deps.refs.put(owner, name, load_rgb(deps.path(path), deps.max_image_pixels)))
    return ref


async def generated_input(state: ArpoState, deps: NodeDeps, path: str) -> object:
    """A generated image as a role argument: the T2I role's own object in the store while it is the latest
    generation of this optimisation in flight; else (a resumed run, an older image) the file's pixels."""
    if deps.refs is not None:
        ref = deps.refs.generated(state["image_id"], path)
        if ref is not None:
            return ref
    return await load_image(path, deps)


#: zlib level of the generated images' PNGs. The driver writes one per seed per generation, thousands per job:
#: for a 512×512 photograph level 1 took 0.32× the time of level 6 (Pillow's default) for a 10% larger file
#: (python -m benchmarks.png_levels; docs/benchmarks/png_levels.txt).
GENERATED_PNG_LEVEL = 1


def write_png(image: np.ndarray, path: Path) -> None:
    """Write a generated image atomically (a crash leaves the old file or the new one, never half of one)."""
    atomic_write_bytes(path, save_png(image, compress_level=GENERATED_PNG_LEVEL))


def _parts(state: ArpoState) -> PromptParts:
    return PromptParts.from_lists(state["content"], state["style"])


def _with_last(history: list, **changes) -> list:
    """A copy of ``history`` whose last record has ``changes`` applied."""
    return [*history[:-1], {**history[-1], **changes}]


def scoring_references(state: ArpoState) -> list[tuple[str, str]]:
    """(cache key, path) of every image the CLIP scores compare against: the set's members (``--group-by
    folder``), else the reference itself."""
    members = state.get("members")
    if members:
        return [(m["id"], m["path"]) for m in members]
    return [(state["image_id"], state["reference_path"])]


async def _mean_over_references(state: ArpoState, deps: NodeDeps, n: int, what: str, call) -> list[float]:
    """``call(reference, key)``'s n scores, averaged over the scoring references (one reference: unchanged).

    For a set of n_m members with unit CLIP embeddings ê_j this is (1/n_m) Σ_j cos(x, ê_j) = |m|·cos(x, m̂)
    with m the members' mean unit embedding: the ranking against the mean embedding, scaled by the set's
    constant |m| ≤ 1, so Algorithm 8's "keep what raises the score" decides as with the mean embedding."""
    refs = scoring_references(state)
    loaded = await asyncio.gather(*(reference_input(state, deps, path) for _, path in refs))
    results = await asyncio.gather(*(call(image, key) for (key, _), image in zip(refs, loaded)))
    per_ref = [checked_scores(scores, n, what) for scores in results]
    return [sum(column) / len(column) for column in zip(*per_ref)]


async def clip_i_scores(state: ArpoState, deps: NodeDeps, images: Sequence[object], what: str) -> list[float]:
    """CLIP image-image similarity of each image to the reference (a set: the mean over its members).
    ``images``: arrays, or what stands for them in the object store (:func:`generate_and_score`)."""
    return await _mean_over_references(state, deps, len(images), what, lambda ref, key: deps.roles.clip.image_image_scores(
        list(images), ref, reference_key=key))


async def style_scores(state: ArpoState, deps: NodeDeps, images: Sequence[object], what: str) -> list[float]:
    """The style similarity of each image to the reference (a set: the mean over its members): agent.style_only's
    image score (actors.clip_scorer.ClipServer.style_scores)."""
    return await _mean_over_references(state, deps, len(images), what, lambda ref, key: deps.roles.clip.style_scores(
        list(images), ref, reference_key=key))


async def clip_t_scores(state: ArpoState, deps: NodeDeps, texts: Sequence[str], what: str) -> list[float]:
    """CLIP text-image similarity of each text to the reference (a set: the mean over its members)."""
    return await _mean_over_references(state, deps, len(texts), what, lambda ref, key: deps.roles.clip.text_image_scores(
        list(texts), ref, image_key=key))


def _record_of(history: list, iteration: int) -> dict:
    return next(r for r in history if r.get("iteration") == iteration)


def _generated_path(state: ArpoState) -> str:
    """The image the VLM looks at: the first seed's image of the current iteration."""
    return state["history"][-1]["image_paths"][0]


# --------------------------------------------------------------------------- nodes

async def init(state: ArpoState, deps: NodeDeps) -> dict:
    """P^0: the user's prompt if given, else the captioner's caption of the reference (eq. 4.1)."""
    reference = await reference_input(state, deps, state["reference_path"])  # also refuses an unreadable image early
    deps.path(state["work_dir"]).mkdir(parents=True, exist_ok=True)
    if state.get("user_prompt"):
        parts = PromptParts.from_text(state["user_prompt"])
    else:
        caption = await deps.roles.captioner.caption(reference)
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"the captioner returned no caption for {state['reference_path']} (got {caption!r})")
        # style_only: the caption's fragments sorted into content and style (agents.prompt_parts), so its style
        # words are kept; otherwise the whole caption is P^0's content (eq. 4.1)
        parts = PromptParts.from_text(caption) if deps.cfg.style_only else PromptParts.from_caption(caption)
    if deps.cfg.style_only:
        parts = PromptParts.from_lists((), parts.style)  # possibly empty: the loop adds style fragments
    return {
        "initial_prompt": parts.render(), "content": list(parts.content), "style": list(parts.style),
        "added": [], "iteration": 0, "history": [], "candidates": [],
        "reference_description": None, "generated_description": None, "differences": None,
        "best_iteration": None, "best_clip_i": None, "stop_reason": None, "negative": None,
    }


@dataclass(frozen=True)
class Scored:
    """One prompt's generated images and their scores (:func:`generate_and_score`)."""

    clip_i: list[float]  # per seed
    paths: list[str]
    also: list  # the results of the extra calls
    style_i: Optional[list[float]] = None  # per seed, under agent.style_only
    items: Optional[list] = None  # per seed, the image as a role argument (an object reference, or the pixels)


async def generate_and_score(state: ArpoState, deps: NodeDeps, prompt: str, folder: Path, *,
                             negative_prompt: Optional[str] = None,
                             also: Sequence[Callable[[], Awaitable]] = ()) -> Scored:
    """``prompt``'s images for the run's seeds (with its own ``negative_prompt`` when given), saved under ``folder``
    as ``NN_seedS.png`` and scored by CLIP-I against the reference (:func:`clip_i_scores`) — and by the style
    similarity under agent.style_only; ``also``: more calls, run alongside the scoring."""
    seeds = list(deps.cfg.seeds)
    with_negative = "" if negative_prompt is None else " with a negative prompt"
    own = {} if negative_prompt is None else {"negative_prompt": negative_prompt}
    if deps.refs is not None:  # the images stay in the store: CLIP (and later the VLM) get T2I's own objects
        images, items = await deps.roles.t2i.call_keeping_refs("generate", len(seeds), prompt, seeds, **own)
    else:
        images = list(await deps.roles.t2i.generate(prompt, seeds, **own))
        items = images
    if len(images) != len(seeds):
        raise ValueError(f"the T2I role returned {len(images)} images for {len(seeds)} seeds")
    for seed, image in zip(seeds, images):
        check_rgb_uint8(image, f"T2I image for seed {seed}{with_negative}")
    paths = [folder / f"{i:02d}_seed{seed}.png" for i, seed in enumerate(seeds)]
    styled = [lambda: style_scores(state, deps, items, f"style scores{with_negative}")] if deps.cfg.style_only else []
    per_seed, *rest = await asyncio.gather(
        clip_i_scores(state, deps, items, f"CLIP image-image scores{with_negative}"),
        *(call() for call in (*styled, *also)),
        *(asyncio.to_thread(write_png, image, deps.path(str(path))) for image, path in zip(images, paths)),
    )
    style = rest.pop(0) if styled else None
    return Scored(clip_i=per_seed, paths=[p.as_posix() for p in paths], also=rest[:len(also)], style_i=style,
                  items=list(items))


async def generate(state: ArpoState, deps: NodeDeps) -> dict:
    """Generate P^t's images (same seeds every iteration), save them, score CLIP-I and CLIP-T; apply the score stop rules."""
    t = state["iteration"]
    rendered = _parts(state).render()
    scored = await generate_and_score(
        state, deps, rendered, Path(state["work_dir"]) / f"iter_{t:02d}",
        also=[lambda: clip_t_scores(state, deps, [rendered], "CLIP text-image score")])
    if deps.refs is not None:  # describe / diff hand the VLM this generation's image by reference
        deps.refs.set_generation(state["image_id"], dict(zip(scored.paths, scored.items)))
    per_seed = scored.clip_i
    clip_t = scored.also[0][0]
    clip_i = sum(per_seed) / len(per_seed)
    record = {
        "iteration": t, "content": list(state["content"]), "style": list(state["style"]), "rendered": rendered,
        "added": list(state.get("added") or []), "candidates": [], "too_long": [],
        "clip_t": clip_t, "clip_i": clip_i, "clip_i_per_seed": per_seed, "image_paths": scored.paths,
    }
    if scored.style_i is not None:
        record.update(style_i=sum(scored.style_i) / len(scored.style_i), style_i_per_seed=scored.style_i)
    best_it, best_i = state.get("best_iteration"), state.get("best_clip_i")
    if best_it is None or image_score(record) > image_score(_record_of(state["history"], best_it)):
        best_it, best_i = t, clip_i  # ties keep the earlier, shorter prompt; best_clip_i: CLIP-I of the best
    stop = None
    if t >= deps.cfg.max_steps:
        stop = STOP_MAX_STEPS
    elif deps.cfg.patience is not None and t - best_it >= deps.cfg.patience:
        stop = STOP_PATIENCE
    return {"history": [*state["history"], record], "best_iteration": best_it, "best_clip_i": best_i, "stop_reason": stop}


async def describe(state: ArpoState, deps: NodeDeps) -> dict:
    """Enhanced framework: content and style descriptions of the generated image, and of the reference once per image."""
    vlm = deps.roles.vlm
    generated = await generated_input(state, deps, _generated_path(state))
    ref_desc = state.get("reference_description")
    if ref_desc is None:
        reference = await reference_input(state, deps, state["reference_path"])
        ref_desc, gen_desc = await asyncio.gather(chat_steps.describe_image(vlm, reference),
                                                  chat_steps.describe_image(vlm, generated))
    else:
        gen_desc = await chat_steps.describe_image(vlm, generated)
    return {"reference_description": ref_desc, "generated_description": gen_desc}


async def diff(state: ArpoState, deps: NodeDeps) -> dict:
    """The differences between reference and generated image.

    Enhanced: the LLM compares the content descriptions and the style descriptions (B.8).
    Vanilla: the VLM compares the two images directly (B.1).
    """
    if deps.cfg.framework == "enhanced":
        diffs = await chat_steps.list_differences(deps.roles.llm, state["reference_description"], state["generated_description"])
    else:
        reference, generated = await asyncio.gather(reference_input(state, deps, state["reference_path"]),
                                                    generated_input(state, deps, _generated_path(state)))
        diffs = await chat_steps.compare_images(deps.roles.vlm, reference, generated)
    # recorded in this iteration's record too, for the report (the state keys are cleared each iteration)
    history = _with_last(state["history"], description=state.get("generated_description"), differences=diffs)
    return {"differences": diffs, "history": history}


async def propose(state: ArpoState, deps: NodeDeps) -> dict:
    """The LLM turns the differences into candidate fragments (B.3), recorded in this iteration's record."""
    cands = await chat_steps.propose_fragments(deps.roles.llm, state["differences"], _parts(state),
                                               max_reasks=deps.cfg.max_reasks, max_candidates=deps.cfg.max_candidates)
    as_dicts = [c.to_dict() for c in cands]
    return {"candidates": as_dicts, "history": _with_last(state["history"], candidates=as_dicts)}


async def select(state: ArpoState, deps: NodeDeps) -> dict:
    """Algorithm 8 picks ΔP; P^{t+1} = P^t + ΔP, or stop when ΔP is empty."""
    parts = _parts(state)
    proposed = [Fragment.from_dict(d) for d in state.get("candidates") or []]
    # style_only: content candidates never enter Algorithm 8; they are recorded as not_style
    cands = [c for c in proposed if c.part == "style"] if deps.cfg.style_only else proposed
    record = state["history"][-1]

    async def score(texts: Sequence[str]) -> Sequence[float]:
        return await clip_t_scores(state, deps, texts, "CLIP text-image scores")

    fits = token_budget(caption_token_counter(deps.roles.t2i.count_tokens, deps.cfg.caption_prefix), deps.token_budget)
    sel = await greedy_select(parts, cands, score, base_score=record["clip_t"], fits=fits)
    outcomes = candidate_outcomes(cands, sel)
    if len(cands) != len(proposed):
        outcomes += [{"text": c.text, "part": c.part, "outcome": NOT_STYLE, "clip_t": None, "needed": None, "round": None}
                     for c in proposed if c.part != "style"]
    history = _with_last(state["history"], too_long=[c.text for c in sel.too_long], selection=outcomes)
    if not sel.added:
        if not cands:
            reason = STOP_NO_CANDIDATES
        elif len(sel.too_long) == len(cands):
            reason = STOP_TOKEN_LIMIT
        else:
            reason = STOP_NO_IMPROVEMENT
        return {"history": history, "stop_reason": reason}
    nxt = parts.plus(sel.added)
    return {
        "history": history, "content": list(nxt.content), "style": list(nxt.style),
        "added": [f.to_dict() for f in sel.added], "iteration": state["iteration"] + 1,
        "candidates": [], "generated_description": None, "differences": None,
    }


# --------------------------------------------------------------------------- routers

def after_generate(state: ArpoState, framework: str) -> str:
    if state.get("stop_reason"):
        return END
    return "describe" if framework == "enhanced" else "diff"


def after_select(state: ArpoState) -> str:
    return END if state.get("stop_reason") else "generate"
