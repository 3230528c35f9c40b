"""The graph state of one image's optimisation (checkpointed after every node).

It holds references and small values only — ids, file paths, prompt fragments, scores,
short texts — never pixel arrays or embeddings: generated images are PNG files in the
image's work folder, and the reference image's CLIP embedding lives in the scorer's
cache under the image id. Everything here is plain JSON-like data, so the checkpointer
serialises it without custom types.

Iteration t evaluates prompt P^t: ``generate`` appends record t to ``history``;
``propose`` fills that record's candidates; ``select`` computes P^{t+1} and bumps
``iteration``. ``added`` holds the fragments that turned P^{t-1} into P^t until
``generate`` files them in record t.
"""
from __future__ import annotations

from typing import Optional, TypedDict


class FragmentDict(TypedDict):
    text: str
    part: str  # "content" | "style"


class IterationRecord(TypedDict, total=False):
    """What happened at one iteration (also the per-iteration record of the result)."""

    iteration: int
    content: list[str]
    style: list[str]
    rendered: str
    added: list[FragmentDict]  # fragments that made this prompt from the previous one
    candidates: list[FragmentDict]  # fragments proposed at this iteration for the next prompt
    too_long: list[str]  # candidates dropped by the token limit
    clip_t: float  # CLIP text-image similarity of the rendered prompt and the reference
    clip_i: float  # mean over seeds of CLIP image-image similarity to the reference
    clip_i_per_seed: list[float]
    image_paths: list[str]
    description: Optional[dict]  # enhanced: the VLM's {"content", "style"} of this iteration's image
    differences: Optional[dict]  # what the diff node found (see ArpoState.differences)
    selection: list[dict]  # every candidate's score and outcome (agents.selection.candidate_outcomes)


class ArpoState(TypedDict, total=False):
    # identity and files (set by the caller, never changed)
    image_id: str
    reference_path: str
    work_dir: str
    user_prompt: Optional[str]
    members: Optional[list[dict]]  # a set (--group-by folder): [{"id", "path"}] of its members' references
    # the prompt P^t, content and style kept apart
    initial_prompt: str
    content: list[str]
    style: list[str]
    added: list[FragmentDict]
    iteration: int
    # texts passed between the describe / diff / propose nodes of one iteration
    reference_description: Optional[dict]  # {"content", "style"}: computed once per image
    generated_description: Optional[dict]  # {"content", "style"} of the current generated image
    differences: Optional[dict]  # vanilla: {"overall"}; enhanced: {"content", "style"}
    candidates: list[FragmentDict]
    # bookkeeping
    history: list[IterationRecord]
    best_iteration: Optional[int]
    best_clip_i: Optional[float]
    stop_reason: Optional[str]
    negative: Optional[dict]  # agent.negative: the search after the loop (agents.negative_nodes)
    elapsed_s: float  # time spent inside nodes, summed over runs and resumes


#: Why an optimisation stopped.
STOP_NO_CANDIDATES = "no_candidates"  # the LLM proposed nothing new (ΔP = ∅)
STOP_NO_IMPROVEMENT = "no_improvement"  # no candidate kept the CLIP score (ΔP = ∅)
STOP_TOKEN_LIMIT = "token_limit"  # every candidate would exceed the token limit (ΔP = ∅)
STOP_MAX_STEPS = "max_steps"
STOP_PATIENCE = "patience"  # CLIP-I did not improve for `patience` iterations


def initial_state(image_id: str, reference_path: str, work_dir: str, user_prompt: Optional[str] = None,
                  members: Optional[list[dict]] = None) -> ArpoState:
    """The input of a fresh thread (``members``: a set's images, each ``{"id", "path"}``)."""
    state = ArpoState(image_id=image_id, reference_path=str(reference_path), work_dir=str(work_dir),
                      user_prompt=user_prompt, elapsed_s=0.0)
    if members:
        state["members"] = list(members)
    return state
