"""The outcome of reversing one image: the best prompt, its scores and every iteration."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

from agents.prompt_parts import PromptParts
from agents.ranked_prompts import ranked_prompts
from agents.training_caption import with_caption_prefix


class FragmentOut(BaseModel):
    text: str = Field(description="The fragment as added to the prompt.")
    part: Literal["content", "style"] = Field(description="Which part of the prompt it belongs to.")


class PromptOut(BaseModel):
    content: list[str] = Field(description="Content fragments (objects, characters, background, actions).")
    style: list[str] = Field(description="Style fragments (medium, art style, lighting, colours).")
    rendered: str = Field(description="The text given to the T2I model: content then style, comma-joined.")

    @classmethod
    def of(cls, parts: PromptParts) -> "PromptOut":
        return cls(content=list(parts.content), style=list(parts.style), rendered=parts.render())


class CandidateOut(BaseModel):
    text: str = Field(description="The proposed fragment.")
    part: Literal["content", "style"] = Field(description="Which part of the prompt it would join.")
    outcome: Literal["kept", "no_gain", "too_long", "duplicate", "not_style"] = Field(
        description="kept: added to the next prompt; no_gain: its score was below the best so far; too_long: the "
                    "prompt would exceed the token limit (not scored); duplicate: same text as an earlier candidate; "
                    "not_style: a content fragment under agent.style_only (not scored).")
    clip_t: Optional[float] = Field(None, description="CLIP-T of the prompt with it added, in the round it was chosen.")
    needed: Optional[float] = Field(None, description="The best score so far that it had to reach to be kept.")
    round: Optional[int] = Field(None, description="The selection round (0-based) that chose it.")


class RankedPromptOut(BaseModel):
    rank: int = Field(description="1 is the best (the result's `prompt`); ranked by CLIP-I, ties to the earlier iteration.")
    iteration: int = Field(description="The iteration that generated and scored this prompt.")
    content: list[str] = Field(description="Content fragments.")
    style: list[str] = Field(description="Style fragments.")
    rendered: str = Field(description="The prompt as the T2I model saw it.")
    caption: str = Field(description="Its training caption: `rendered` with agent.caption_prefix (agents.training_caption).")
    clip_i: float = Field(description="Mean over seeds of the CLIP similarity of its generated images and the reference.")
    clip_t: float = Field(description="CLIP similarity of the prompt and the reference image.")
    clip_i_per_seed: list[float] = Field(default_factory=list, description="CLIP-I of each seed's image.")
    style_i: Optional[float] = Field(None, description="agent.style_only: the style similarity (the ranking's score then).")


class NegativeTryOut(BaseModel):
    fragments: list[str] = Field(description="The negative fragments this try generated with (after t2i.negative_prompt).")
    clip_i: float = Field(description="Mean over seeds of CLIP-I of the best prompt's images with them.")
    clip_i_per_seed: list[float] = Field(default_factory=list, description="CLIP-I of each seed's image.")
    image_paths: list[str] = Field(default_factory=list, description="The images, one PNG per seed.")


class NegativeOutcomeOut(BaseModel):
    text: str = Field(description="A candidate negative fragment.")
    outcome: Literal["kept", "no_gain", "too_long", "limit"] = Field(
        description="kept: in the negative prompt; no_gain: CLIP-I did not rise with it; too_long: the negative text "
                    "would exceed the token budget; limit: agent.negative.max_fragments were kept already.")
    clip_i_alone: Optional[float] = Field(None, description="CLIP-I with it as the only negative fragment (None: not tried).")


class NegativeOut(BaseModel):
    extras: str = Field(description="What the VLM said the best prompt's image shows that the reference lacks.")
    candidates: list[str] = Field(default_factory=list, description="The LLM's candidate negative fragments, in its order.")
    base_iteration: int = Field(description="The iteration whose prompt the negatives were searched for (the best).")
    base_clip_i: float = Field(description="That prompt's CLIP-I without them.")
    fragments: list[str] = Field(default_factory=list, description="The fragments kept, in the order added.")
    prompt: Optional[str] = Field(None, description="The recovered negative prompt (the fragments comma-joined); None when none helped.")
    clip_i: float = Field(description="CLIP-I with the recovered negative prompt (base_clip_i when none helped).")
    tries: list[NegativeTryOut] = Field(default_factory=list, description="Every generation of the search: each candidate alone, then each greedy addition.")
    outcomes: list[NegativeOutcomeOut] = Field(default_factory=list, description="What happened to each candidate.")
    searched: bool = Field(False, description="False between the two steps (candidates proposed, not yet tried): the fields above are then not final.")


class IterationOut(BaseModel):
    iteration: int = Field(description="0 is the initial prompt.")
    content: list[str] = Field(description="Content fragments of this iteration's prompt.")
    style: list[str] = Field(description="Style fragments of this iteration's prompt.")
    rendered: str = Field(description="This iteration's prompt as the T2I model saw it.")
    added: list[FragmentOut] = Field(default_factory=list, description="Fragments added to the previous prompt to make this one.")
    candidates: list[FragmentOut] = Field(default_factory=list, description="Fragments proposed at this iteration for the next prompt.")
    too_long: list[str] = Field(default_factory=list, description="Candidates not added because the prompt would exceed the token limit.")
    clip_t: float = Field(description="CLIP similarity of the prompt and the reference image.")
    clip_i: float = Field(description="Mean over seeds of the CLIP similarity of the generated image and the reference.")
    clip_i_per_seed: list[float] = Field(default_factory=list, description="CLIP-I of each seed's image.")
    style_i: Optional[float] = Field(None, description="agent.style_only: mean over seeds of the style similarity to the reference (actors.clip_scorer), the score the loop maximised.")
    style_i_per_seed: Optional[list[float]] = Field(None, description="agent.style_only: the style similarity of each seed's image.")
    image_paths: list[str] = Field(default_factory=list, description="The generated images, one PNG per seed.")
    description: Optional[dict[str, str]] = Field(None, description="Enhanced framework: the VLM's content and style description of this iteration's (first seed's) image.")
    differences: Optional[dict[str, str]] = Field(None, description="The differences to the reference: the LLM's content and style lists (enhanced) or the VLM's comparison, key overall (vanilla).")
    selection: list[CandidateOut] = Field(default_factory=list, description="Every candidate with its score and what Algorithm 8 did with it (agents.selection.candidate_outcomes).")


class ReverseResult(BaseModel):
    """JSON-serialisable (``model_dump_json``)."""

    image_id: str = Field(description="Content hash of the reference image (the checkpoint thread id).")
    source: str = Field(description="Where the reference image came from (its path).")
    status: Literal["done", "error"] = Field(description="done: the loop stopped by a stop rule; error: a node failed (rerun to resume).")
    error: Optional[str] = Field(None, description="What failed, when status is error.")
    initial_prompt: Optional[str] = Field(None, description="The captioner's caption or the user's prompt.")
    reference_description: Optional[dict[str, str]] = Field(None, description="Enhanced framework: the VLM's content and style description of the reference (made once).")
    prompt: Optional[PromptOut] = Field(None, description="The result: the prompt whose generated image scored best on CLIP-I (on the style similarity under agent.style_only).")
    style_only: bool = Field(False, description="agent.style_only: the prompt holds style fragments only and the loop maximised the style similarity (style_i).")
    best_iteration: Optional[int] = Field(None, description="The iteration that produced `prompt`.")
    best_clip_i: Optional[float] = Field(None, description="CLIP-I of the best iteration.")
    best_clip_t: Optional[float] = Field(None, description="CLIP-T of the best iteration.")
    negative_prompt: Optional[str] = Field(None, description="agent.negative: the recovered negative prompt to use with `prompt` (None: off, not reached, or nothing helped).")
    negative: Optional[NegativeOut] = Field(None, description="agent.negative: the search, every try and outcome (agents.negative_nodes).")
    caption: Optional[str] = Field(None, description="The training caption: the best prompt with agent.caption_prefix (agents.training_caption); what captions.jsonl and metadata.jsonl hold.")
    prompts: list[RankedPromptOut] = Field(default_factory=list, description="The agent.prompts_per_image best distinct prompts met, best first (agents.ranked_prompts); the first is `prompt`.")
    prompts_per_image: int = Field(1, description="How many prompts were asked for (agent.prompts_per_image); `prompts` holds fewer when fewer distinct ones were met.")
    iterations: list[IterationOut] = Field(default_factory=list, description="Every evaluated iteration, in order.")
    stop_reason: Optional[str] = Field(None, description="no_candidates, no_improvement, token_limit, max_steps or patience.")
    elapsed_s: float = Field(0.0, description="Seconds spent in graph nodes, over all runs of this image.")


def captioned_ranking(history: list, prompts_per_image: int, caption_prefix: Optional[str]) -> list[dict]:
    """The ranked prompts of ``history`` (agents.ranked_prompts), each with its training caption."""
    return [{**p, "caption": with_caption_prefix(p["rendered"], caption_prefix)}
            for p in ranked_prompts(history, prompts_per_image)]


def result_from_state(values: dict, source: str, error: Optional[str] = None, *,
                      prompts_per_image: int = 1, caption_prefix: Optional[str] = None) -> ReverseResult:
    """Build the result from a thread's state values (finished, or partial when ``error`` is set).

    ``prompts_per_image`` and ``caption_prefix``: the agent settings of that name (AgentConfig)."""
    history = values.get("history") or []
    best = values.get("best_iteration")
    best_rec = history[best] if best is not None and best < len(history) else None
    return ReverseResult(
        image_id=values["image_id"],
        source=source,
        status="error" if error else "done",
        error=error,
        initial_prompt=values.get("initial_prompt"),
        reference_description=values.get("reference_description"),
        prompt=PromptOut.of(PromptParts.from_lists(best_rec["content"], best_rec["style"])) if best_rec else None,
        best_iteration=best,
        best_clip_i=best_rec["clip_i"] if best_rec else None,
        best_clip_t=best_rec["clip_t"] if best_rec else None,
        style_only=any(rec.get("style_i") is not None for rec in history),
        negative_prompt=(values.get("negative") or {}).get("prompt"),
        negative=values.get("negative"),
        caption=with_caption_prefix(best_rec["rendered"], caption_prefix) if best_rec else None,
        prompts=[RankedPromptOut(**p) for p in captioned_ranking(history, prompts_per_image, caption_prefix)],
        prompts_per_image=prompts_per_image,
        iterations=[IterationOut.model_validate(rec) for rec in history],
        stop_reason=values.get("stop_reason"),
        elapsed_s=float(values.get("elapsed_s") or 0.0),
    )
